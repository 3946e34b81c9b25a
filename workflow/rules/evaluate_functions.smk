# Functions of workflow/rules/evaluate.smk (kept apart: a rule file holds rules only).
from clipscale import evaluate as cs_eval
from clipscale import paths

EVAL_TARGETS = cs_eval.target_paths(config)
EVAL_CONFIG = config["evaluate"]


def evaluate_targets():
    """Final outputs of the evaluation: the results table (parquet, CSV) and its log."""
    return [paths.RESULTS_TABLE, paths.RESULTS_CSV, paths.RESULTS_LOG]


def evaluate_inputs(wildcards):
    """run.json of one of our runs, or a released checkpoint file; the world when it makes
    the downstream set."""
    return cs_eval.job_inputs(
        config,
        wildcards.source,
        wildcards.model,
        wildcards.scale,
        wildcards.samples,
        wildcards.epoch,
        wildcards.dataset,
    )


def evaluate_log(kind):
    """Log or benchmark path of one evaluate job."""
    parts = (
        "{source}",
        "{model}",
        "{scale}",
        "{samples}",
        "epoch_{epoch}",
        "{dataset}",
        "{task}",
    )
    return (log_path if kind == "log" else bench_path)("evaluate", *parts)
