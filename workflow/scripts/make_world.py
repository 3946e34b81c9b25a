"""Adapter: rule make_world -> clipscale.world.generate (settings from params.world)."""
from clipscale.logs import job_logging
from clipscale.world import WorldSpec, generate

with job_logging(snakemake.log[0]):  # noqa: F821 (snakemake injects it)
    spec = WorldSpec(**snakemake.params.world)  # noqa: F821
    generate(spec, snakemake.output.done.rsplit("/", 1)[0], workers=snakemake.threads)  # noqa: F821
