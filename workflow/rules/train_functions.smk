# Functions of workflow/rules/train.smk (kept apart: a rule file holds rules only).


def train_targets():
    return [paths.fill(paths.RUN_DONE, **run.wildcards) for run in RUNS]


def train_manifest(wildcards):
    pattern = (
        paths.SUBSET_DEDUP_MANIFEST
        if config["dedup"]["remove_duplicates"]
        else paths.SUBSET_MANIFEST
    )
    return paths.fill(pattern, scale=wildcards.scale)


def model_profile(wildcards):
    if cs_models.profile_needed(config, wildcards.model):
        return paths.fill(paths.MODEL_PROFILE, model=wildcards.model)
    return []


def previous_segment(wildcards):
    """The record of the job before this one: the run's previous segment (train.segments > 1),
    else, for a const-cooldown branch, its trunk's job that writes the checkpoint it starts
    from; or nothing."""
    try:  # a run of the grid, its samples written as its paths write them ("1.2k", not "1200")
        run = grid.find_run(config, wildcards.model, wildcards.scale, wildcards.samples)
    except KeyError as e:
        raise WorkflowError(e.args[0]) from None
    ends = grid.segment_ends(config, run)
    if "epoch" in wildcards.keys():  # train_segment
        if int(wildcards.epoch) not in ends:
            raise WorkflowError(
                f"{run.name}: no job of the run ends at epoch {wildcards.epoch} "
                f"(train.segments: its jobs end at epochs {ends} and the last)"
            )
        ends = [e for e in ends if e < int(wildcards.epoch)]
    if ends:
        return [paths.fill(paths.RUN_SEGMENT, **run.wildcards, epoch=ends[-1])]
    branch = grid.trunk_of(config, run)
    if branch is not None:  # the trunk's job that writes the checkpoint it starts from
        trunk, epoch = branch
        end = grid.segment_of(config, trunk, epoch)
        if end is None:  # train.branch_jobs false: the trunk's one job
            return [paths.fill(paths.RUN_DONE, **trunk.wildcards)]
        return [paths.fill(paths.RUN_SEGMENT, **trunk.wildcards, epoch=end)]
    return []
