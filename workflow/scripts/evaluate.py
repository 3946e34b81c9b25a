"""Adapter: rule evaluate -> clipscale.evaluate.evaluate_checkpoint (one checkpoint, every
configured downstream set and task, clip_benchmark in this process)."""
import contextlib

from clipscale import evaluate
from clipscale.evaluate import imports
from clipscale.logs import exit_now, job_logging

sm = snakemake  # noqa: F821 (snakemake injects it)
with job_logging(sm.log[0]), open(sm.log[0], "a") as sink:
    # clip_benchmark prints its progress and reports: into the job's log
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        checkpoint = {k: getattr(sm.wildcards, k) for k in ("source", "model", "scale", "samples", "epoch")}
        outputs = {key: path for key, path in evaluate.outputs_of(sm.config, checkpoint).items()}
        assert sorted(outputs.values()) == sorted(sm.output), "outputs of the rule and of the plan differ"
        # this process is one evaluation job: the optional packages its model and sets never use
        # (wandb, and timm/transformers where no tower or set needs them) stay unimported
        imports.keep_out(evaluate.unused_imports(sm.config, checkpoint, sm.input.get("run")))
        evaluate.evaluate_checkpoint(sm.config, checkpoint, outputs, run_record=sm.input.get("run"),
                                     threads=sm.threads, profile=sm.input.get("profile"))
exit_now()  # its files are written and closed: skip tearing down torch (about 2 s a job)
