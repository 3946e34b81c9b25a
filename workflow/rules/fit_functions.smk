# Functions of workflow/rules/fit.smk (kept apart: a rule file holds rules only).
from clipscale import paths


def fit_inputs():
    """Inputs fitted: ours always, the paper's numbers when published.enabled."""
    inputs = ["ours"]
    if config.get("published", {}).get("enabled", True):
        inputs.insert(0, "published")
    return inputs


def fit_table_path(name, ext):
    return paths.fill(paths.TABLE, table=name, ext=ext)


def published_fit_targets():
    """Fit tables of the paper's numbers alone."""
    if "published" not in fit_inputs():
        return []
    return [
        paths.fill(paths.FIT_INPUT_COEFFICIENTS, input="published"),
        paths.fill(paths.FIT_INPUT_PREDICTIONS, input="published"),
        fit_table_path("coefficients_published", "md"),
        fit_table_path("predictions_published", "md"),
    ]


def fit_targets():
    """Final fit outputs (for the top-level target): coefficients and predictions of all inputs."""
    return [
        paths.FIT_COEFFICIENTS,
        paths.FIT_PREDICTIONS,
        fit_table_path("coefficients", "md"),
        fit_table_path("predictions", "md"),
    ]


def fit_table_input(wildcards):
    if wildcards.input == "published":
        return paths.PUBLISHED_TABLE
    return paths.RESULTS_TABLE
