"""Adapter: rule dedup_gather -> clipscale.dedup.gather (+ the report of every hash job)."""
import json

from clipscale import dedup
from clipscale.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    dedup.gather(list(sm.input.pool), sm.output.hashes)
    report = dedup.hash_report(sm.output.hashes, list(sm.input.downstream))
    with open(sm.output.report, "w") as f:
        json.dump(report, f, indent=1)
