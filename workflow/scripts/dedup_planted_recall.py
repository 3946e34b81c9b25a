"""Adapter: rule dedup_planted_recall -> clipscale.dedup.planted_recall (embedded world only)."""
import json
import logging

from clipscale import dedup
from clipscale.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    planted = dedup.read_planted(sm.input.planted)
    planted_keys = set(planted["pool_key"])
    report = dedup.planted_recall(
        dedup.read_matches(sm.input.matches), planted,
        sm.params.radius, dedup.read_pool_hashes(sm.input.pool, keys=planted_keys),
        dedup.load_test_hashes(list(sm.input.tests)), list(sm.params.modes))
    with open(sm.output[0], "w") as f:
        json.dump(report, f, indent=1, default=str)
    logging.info("planted duplicates: recall %s, precision %s at radius %d", report["recall"],
                 report["precision"], sm.params.radius)
