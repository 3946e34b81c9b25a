"""Adapter: rule aggregate_finetune -> clipscale.finetune.results.aggregate (the fine-tuning
table + a log of the jobs that are not in it)."""
from clipscale.finetune import results
from clipscale.logs import job_logging

sm = snakemake  # noqa: F821 (snakemake injects it)
with job_logging(sm.log[0]):
    # settings: the downstream sets' tasks and groups only (clipscale.shaping.aggregate)
    results.aggregate(sm.params.settings, list(sm.input), sm.output.table, sm.output.csv, sm.output.results_log)
