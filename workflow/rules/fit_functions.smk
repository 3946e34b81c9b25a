# Functions of workflow/rules/fit.smk (kept apart: a rule file holds rules only).
from clipscale import paths


def fit_inputs():
    """Inputs fitted: ours always, the paper's numbers when published.enabled."""
    inputs = ["ours"]
    if config["published"]["enabled"]:  # validated: the schema fills it
        inputs.insert(0, "published")
    return inputs


def fit_table_path(name, ext):
    return paths.fill(paths.TABLE, table=name, ext=ext)


def analysis_targets(input_name):
    """The analyses of one input (clipscale.analysis): extrapolation check, comparison of laws,
    best run per compute bin, compute-optimal allocation; tables and figures."""
    return [
        paths.fill(pattern, input=input_name)
        for pattern in (
            paths.FIT_INPUT_EXTRAPOLATION,
            paths.FIT_INPUT_EXTRAPOLATION_SUMMARY,
            paths.EXTRAPOLATION_TABLE,
            paths.FIT_INPUT_COMPARISON,
            paths.COMPARISON_TABLE,
            paths.FIT_INPUT_BIN_WINNERS,
            paths.BIN_WINNERS_TABLE,
            paths.FIT_INPUT_COMPUTE_OPTIMAL_LAWS,
            paths.FIT_INPUT_COMPUTE_OPTIMAL,
            paths.FIT_INPUT_COMPUTE_OPTIMAL_RUNS,
            paths.COMPUTE_OPTIMAL_TABLE,
        )
    ] + [
        paths.fill(pattern, input=input_name, ext=ext)
        for pattern in (paths.EXTRAPOLATION_FIGURE, paths.COMPARISON_FIGURE)
        for ext in ("pdf", "png")
    ]


def published_fit_targets():
    """Fit tables and analyses of the paper's numbers alone."""
    if "published" not in fit_inputs():
        return []
    return [
        paths.fill(paths.FIT_INPUT_COEFFICIENTS, input="published"),
        paths.fill(paths.FIT_INPUT_PREDICTIONS, input="published"),
        fit_table_path("coefficients_published", "md"),
        fit_table_path("predictions_published", "md"),
    ] + analysis_targets("published")


def fit_targets():
    """Final fit outputs (for the top-level target): coefficients and predictions of all inputs,
    and the analyses of each input."""
    return [
        paths.FIT_COEFFICIENTS,
        paths.FIT_PREDICTIONS,
        fit_table_path("coefficients", "md"),
        fit_table_path("predictions", "md"),
    ] + [path for name in fit_inputs() for path in analysis_targets(name)]


def fit_table_input(wildcards):
    if wildcards.input == "published":
        return paths.PUBLISHED_TABLE
    return paths.RESULTS_TABLE
