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
    spec = config["models"][wildcards.model]
    if "open_clip" in spec and not spec.get("gmac_per_sample"):
        return paths.fill(paths.MODEL_PROFILE, model=wildcards.model)
    return []
