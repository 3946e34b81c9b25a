# Functions of workflow/rules/finetune.smk (kept apart: a rule file holds rules only).
from clipscale.finetune import plan as cs_finetune


def finetune_targets():
    """Every fine-tuning result of the config (none unless finetune.enabled)."""
    return cs_finetune.target_paths(config)


def finetune_table_targets():
    """The fine-tuning table and its log (none unless finetune.enabled)."""
    if not cs_finetune.enabled(config):
        return []
    return [paths.FINETUNE_TABLE, paths.FINETUNE_CSV, paths.FINETUNE_LOG]


def finetune_inputs(wildcards):
    """The run's record (its final checkpoint) and the world when it makes a set of the job."""
    return cs_finetune.job_inputs(
        config, wildcards.model, wildcards.scale, wildcards.samples
    )
