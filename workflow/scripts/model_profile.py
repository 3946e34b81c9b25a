"""Adapter: rule model_profile -> clipscale.models.measure_gmac (GMAC per sample, params)."""
import json

from clipscale import models
from clipscale.logs import exit_now, job_logging

with job_logging(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    models.register(sm.params.settings)  # the model's definition only (clipscale.shaping.model)
    profile = models.measure_gmac(sm.wildcards.model)
    with open(sm.output[0], "w") as f:
        json.dump(profile, f, indent=1)
exit_now()  # its files are written and closed: skip tearing down torch (about 2 s a job)
