"""Adapter: rules train and train_segment -> clipscale.train.launch (python, torchrun or srun)."""
from clipscale import grid
from clipscale.logs import job_logging
from clipscale.train import launch

with job_logging(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    run = grid.find_run(sm.config, sm.wildcards.model, sm.wildcards.scale, sm.wildcards.samples)
    until = int(sm.wildcards.epoch) if "epoch" in sm.wildcards.keys() else None  # train_segment
    profile = sm.input.profile or None  # [] when the model's GMAC is given (config, Table 25)
    launch(sm.config, run, sm.input.manifest, sm.output[0], log_file=sm.log[0], until=until,
           profile=profile, attempt=sm.resources.get("attempt", 1))
