"""Adapter: rule dedup_contact_sheet -> clipscale.dedup.contact_sheet."""
from clipscale import dedup
from clipscale.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    dedup.contact_sheet(dedup.read_matches(sm.input.matches), sm.output[0], sm.params.pairs,
                        sm.params.seed)
