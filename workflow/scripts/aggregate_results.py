"""Adapter: rule aggregate_results -> clipscale.evaluate.aggregate (table + log of what is not in it)."""
from clipscale import evaluate
from clipscale.logs import job_logging

sm = snakemake  # noqa: F821 (snakemake injects it)
with job_logging(sm.log[0]):
    evaluate.aggregate(sm.config, list(sm.input), sm.output.table, sm.output.csv, sm.output.results_log)
