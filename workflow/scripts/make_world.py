"""Adapter: rule make_world -> clipscale.world.generate."""
from clipscale.logs import job_logging
from clipscale.world import WorldSpec, generate

with job_logging(snakemake.log[0]):  # noqa: F821 (snakemake injects it)
    spec = WorldSpec.from_config(snakemake.config)  # noqa: F821
    generate(spec, snakemake.output.done.rsplit("/", 1)[0])  # noqa: F821
