"""Adapter: rule finetune -> clipscale.finetune.run_job (one final checkpoint, one protocol:
classification or patching; in this process, or the job's processes launched and waited for)."""
import contextlib

from clipscale import finetune
from clipscale.logs import exit_now, job_logging

sm = snakemake  # noqa: F821 (snakemake injects it)
with job_logging(sm.log[0]), open(sm.log[0], "a") as sink:
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        w = sm.wildcards
        finetune.run_job(sm.config, w.model, w.scale, w.samples, w.protocol, sm.output[0],
                         run_record=sm.input.run, threads=sm.threads, log_file=sm.log[0])
exit_now()  # its files are written and closed: skip tearing down torch (about 2 s a job)
