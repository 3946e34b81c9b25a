# Functions of workflow/rules/evaluate.smk (kept apart: a rule file holds rules only).
from clipscale import evaluate as cs_eval
from clipscale import paths
from snakemake.logging import logger

EVAL_TARGETS = cs_eval.target_paths(config)
EVAL_OUTPUTS = cs_eval.output_patterns(config)

# A checkpoint to evaluate deleted after its training job finished: Snakemake cannot see it
# (checkpoints are outputs of no rule), so the record of that job is moved aside (".stale"):
# the job runs again (it writes the checkpoint anew), then what reads it. In the main process
# only: a cluster job's own snakemake runs just its job.
if workflow.is_main_process:
    for _line in cs_eval.set_aside_stale_records(config):
        logger.warning(_line)


def evaluate_targets():
    """Final outputs of the evaluation: the results table (parquet, CSV) and its log, and
    each result file: a deleted one is computed again (Snakemake does not remake a missing file
    whose consumers are up to date unless it is a target)."""
    return [paths.RESULTS_TABLE, paths.RESULTS_CSV, paths.RESULTS_LOG, *EVAL_TARGETS]


def evaluate_inputs(wildcards):
    """run.json of one of our runs, or a released checkpoint file; the world when it makes
    a downstream set."""
    return cs_eval.job_inputs(
        config,
        wildcards.source,
        wildcards.model,
        wildcards.scale,
        wildcards.samples,
        wildcards.epoch,
    )


def evaluation_shaping(wildcards):
    """clipscale.shaping.evaluate of every (set, task) of the job, keyed "set/task" (sorted)."""
    return shaping.evaluations(
        config, wildcards.source, wildcards.model, wildcards.scale
    )


def evaluate_log(kind):
    """Log or benchmark path of one evaluate job (one checkpoint)."""
    parts = ("{source}", "{model}", "{scale}", "{samples}", "epoch_{epoch}")
    return (log_path if kind == "log" else bench_path)("evaluate", *parts)
