"""Adapter: rule dedup_filter_subset -> clipscale.dedup.filter_subset."""
from pathlib import Path

from clipscale import dedup
from clipscale.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    # dedup.remove_duplicates: the pairs of these modes
    matches = dedup.select_modes(dedup.read_matches(sm.input.matches), list(sm.params.modes))
    dedup.filter_subset(sm.input.manifest, matches, Path(sm.output[0]).parent)
