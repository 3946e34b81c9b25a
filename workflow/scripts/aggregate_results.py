"""Adapter: rule aggregate_results -> clipscale.evaluate.aggregate (table + log of what is not in it)."""
from clipscale import evaluate
from clipscale.logs import job_logging

sm = snakemake  # noqa: F821 (snakemake injects it)
with job_logging(sm.log[0]):
    # settings: the downstream sets' tasks and groups only (clipscale.shaping.aggregate)
    evaluate.aggregate(sm.params.settings, list(sm.input.evals), sm.output.table, sm.output.csv,
                       sm.output.results_log, run_records=list(sm.input.runs), pool_index=sm.input.pool_index)
