# Scaling-law fits (clipscale.fit): the published input (the paper's numbers, no training needed)
# and ours (results/results/results.parquet of the evaluation's aggregate_results rule).

from clipscale import paths
from clipscale import reference as _reference


def fit_inputs():
    """Inputs fitted: ours always, the paper's numbers when published.enabled."""
    inputs = ["ours"]
    if config.get("published", {}).get("enabled", True):
        inputs.insert(0, "published")
    return inputs


def _table_path(name, ext):
    return paths.fill(paths.TABLE, table=name, ext=ext)


def published_fit_targets():
    """Fit tables of the paper's numbers alone."""
    if "published" not in fit_inputs():
        return []
    return [
        paths.fill(paths.FIT_INPUT_COEFFICIENTS, input="published"),
        paths.fill(paths.FIT_INPUT_PREDICTIONS, input="published"),
        _table_path("coefficients_published", "md"),
        _table_path("predictions_published", "md"),
    ]


def fit_targets():
    """Final fit outputs for rule all: per-input and combined coefficients and predictions."""
    return [
        paths.FIT_COEFFICIENTS,
        paths.FIT_PREDICTIONS,
        _table_path("coefficients", "md"),
        _table_path("predictions", "md"),
    ]


def _fit_table_input(wildcards):
    if wildcards.input == "published":
        return paths.PUBLISHED_TABLE
    return paths.RESULTS_TABLE


rule published_table:
    input:
        reference=[
            _reference.REFERENCE_DIR / name
            for name in (
                _reference.ZEROSHOT,
                _reference.OPENAI,
                _reference.LINEAR_PROBE,
                _reference.ARCHITECTURES,
                _reference.HPARAMS,
            )
        ],
    output:
        table=paths.PUBLISHED_TABLE,
    log:
        f"{paths.LOGS}/fit/published_table.log",
    benchmark:
        f"{paths.BENCHMARKS}/fit/published_table.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m clipscale.reference "
        "--out {output.table} > {log} 2>&1"


rule fit_input:
    input:
        table=_fit_table_input,
    output:
        coefficients=paths.FIT_INPUT_COEFFICIENTS,
        predictions=paths.FIT_INPUT_PREDICTIONS,
        points=paths.FIT_INPUT_POINTS,
        coefficients_md=report(
            paths.fill(paths.TABLE, table="coefficients_{input}", ext="md"),
            caption="../report/coefficients.rst",
            category="Tables",
            subcategory="{input}",
        ),
        predictions_md=report(
            paths.fill(paths.TABLE, table="predictions_{input}", ext="md"),
            caption="../report/predictions.rst",
            category="Tables",
            subcategory="{input}",
        ),
    wildcard_constraints:
        input="published|ours",
    log:
        f"{paths.LOGS}/fit/{{input}}.log",
    benchmark:
        f"{paths.BENCHMARKS}/fit/{{input}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/fit_table.py"


rule fit_collect:
    input:
        coefficients=expand(paths.FIT_INPUT_COEFFICIENTS, input=fit_inputs()),
        predictions=expand(paths.FIT_INPUT_PREDICTIONS, input=fit_inputs()),
    output:
        coefficients=report(
            paths.FIT_COEFFICIENTS,
            caption="../report/coefficients.rst",
            category="Tables",
            subcategory="all inputs",
        ),
        predictions=report(
            paths.FIT_PREDICTIONS,
            caption="../report/predictions.rst",
            category="Tables",
            subcategory="all inputs",
        ),
        coefficients_md=_table_path("coefficients", "md"),
        predictions_md=_table_path("predictions", "md"),
    log:
        f"{paths.LOGS}/fit/collect.log",
    benchmark:
        f"{paths.BENCHMARKS}/fit/collect.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/fit_collect.py"
