# Functions and constants of workflow/rules/data.smk (kept apart: a rule file holds rules only).


def data_targets():
    return expand(paths.SUBSET_MANIFEST, scale=config["grid"]["scales"])
