# Functions of workflow/rules/evaluate.smk (kept apart: a rule file holds rules only).
from clipscale import evaluate as cs_eval
from clipscale import paths

EVAL_TARGETS = cs_eval.target_paths(config)
EVAL_OUTPUTS = cs_eval.output_patterns(config)


def evaluate_targets():
    """Final outputs of the evaluation: the results table (parquet, CSV) and its log."""
    return [paths.RESULTS_TABLE, paths.RESULTS_CSV, paths.RESULTS_LOG]


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
    return shaping.evaluations(config, wildcards.source, wildcards.model, wildcards.scale)


def evaluate_log(kind):
    """Log or benchmark path of one evaluate job (one checkpoint)."""
    parts = ("{source}", "{model}", "{scale}", "{samples}", "epoch_{epoch}")
    return (log_path if kind == "log" else bench_path)("evaluate", *parts)
