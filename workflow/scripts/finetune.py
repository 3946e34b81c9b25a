"""Adapter: rule finetune -> clipscale.finetune.finetune_checkpoint (one final checkpoint, one
protocol: classification or patching)."""
import contextlib

from clipscale import finetune
from clipscale.logs import exit_now, job_logging

sm = snakemake  # noqa: F821 (snakemake injects it)
with job_logging(sm.log[0]), open(sm.log[0], "a") as sink:
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        w = sm.wildcards
        finetune.finetune_checkpoint(sm.config, w.model, w.scale, w.samples, w.protocol, sm.output[0],
                                     run_record=sm.input.run, threads=sm.threads)
exit_now()  # its files are written and closed: skip tearing down torch (about 2 s a job)
