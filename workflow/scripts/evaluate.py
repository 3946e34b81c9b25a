"""Adapter: rule evaluate -> clipscale.evaluate.evaluate (clip_benchmark in this process)."""
import contextlib

from clipscale import evaluate
from clipscale.logs import job_logging

sm = snakemake  # noqa: F821 (snakemake injects it)
with job_logging(sm.log[0]), open(sm.log[0], "a") as sink:
    # clip_benchmark prints its progress and reports: into the job's log
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        target = evaluate.Target(**{k: getattr(sm.wildcards, k) for k in
                                    ("source", "model", "scale", "samples", "epoch", "dataset", "task")})
        evaluate.evaluate(sm.config, target, sm.output[0], run_record=sm.input.get("run"),
                          threads=sm.threads)
