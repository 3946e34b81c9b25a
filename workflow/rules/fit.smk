# 5. fit: scaling laws E = beta C^alpha (clipscale.fit) for the published input (the paper's
# numbers: no data, no training needed) and ours (results/results/results.parquet, made by the
# evaluation's aggregate_results rule).
from clipscale import resources as cs_resources
from clipscale import paths, shaping
from clipscale import reference as _reference


include: "fit_functions.smk"


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
    priority: cs_resources.priority(config, "published_table")
    threads: cs_resources.threads(config, "published_table")
    resources:
        **cs_resources.resources(config, "published_table"),
    script:
        "../scripts/fit_published_table.py"


rule fit_input:
    input:
        table=fit_table_input,
    output:
        coefficients=paths.FIT_INPUT_COEFFICIENTS,
        predictions=paths.FIT_INPUT_PREDICTIONS,
        points=paths.FIT_INPUT_POINTS,
        draws=paths.FIT_INPUT_DRAWS,
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
    log:
        f"{paths.LOGS}/fit/{{input}}.log",
    benchmark:
        f"{paths.BENCHMARKS}/fit/{{input}}.tsv"
    wildcard_constraints:
        input="published|ours",
    priority: cs_resources.priority(config, "fit_input")
    threads: cs_resources.threads(config, "fit_input")
    resources:
        **cs_resources.resources(config, "fit_input"),
    params:
        settings=lambda wc: shaping.fit(config, wc.input),
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
        coefficients_md=fit_table_path("coefficients", "md"),
        predictions_md=fit_table_path("predictions", "md"),
    log:
        f"{paths.LOGS}/fit/collect.log",
    benchmark:
        f"{paths.BENCHMARKS}/fit/collect.tsv"
    priority: cs_resources.priority(config, "fit_collect")
    threads: cs_resources.threads(config, "fit_collect")
    resources:
        **cs_resources.resources(config, "fit_collect"),
    script:
        "../scripts/fit_collect.py"


rule fit_extrapolation:
    """Fit each law below a compute cut, predict the held-out runs (clipscale.analysis)."""
    input:
        table=fit_table_input,
    output:
        runs=paths.FIT_INPUT_EXTRAPOLATION,
        summary=paths.FIT_INPUT_EXTRAPOLATION_SUMMARY,
        md=report(
            paths.EXTRAPOLATION_TABLE,
            caption="../report/extrapolation.rst",
            category="Tables",
            subcategory="{input}",
        ),
        pdf=paths.fill(paths.EXTRAPOLATION_FIGURE, input="{input}", ext="pdf"),
        png=report(
            paths.fill(paths.EXTRAPOLATION_FIGURE, input="{input}", ext="png"),
            caption="../report/extrapolation.rst",
            category="Figures",
            subcategory="Extrapolation and comparison",
        ),
    log:
        f"{paths.LOGS}/fit/extrapolation_{{input}}.log",
    benchmark:
        f"{paths.BENCHMARKS}/fit/extrapolation_{{input}}.tsv"
    wildcard_constraints:
        input="published|ours",
    priority: cs_resources.priority(config, "fit_extrapolation")
    threads: cs_resources.threads(config, "fit_extrapolation")
    resources:
        **cs_resources.resources(config, "fit_extrapolation"),
    params:
        settings=lambda wc: shaping.extrapolation(config, wc.input),
    script:
        "../scripts/fit_extrapolation.py"


rule fit_comparison:
    """Compare pairs of laws: exponent ratio, predicted error gap, crossing (clipscale.analysis)."""
    input:
        table=fit_table_input,
    output:
        csv=paths.FIT_INPUT_COMPARISON,
        md=report(
            paths.COMPARISON_TABLE,
            caption="../report/comparison.rst",
            category="Tables",
            subcategory="{input}",
        ),
        pdf=paths.fill(paths.COMPARISON_FIGURE, input="{input}", ext="pdf"),
        png=report(
            paths.fill(paths.COMPARISON_FIGURE, input="{input}", ext="png"),
            caption="../report/comparison.rst",
            category="Figures",
            subcategory="Extrapolation and comparison",
        ),
    log:
        f"{paths.LOGS}/fit/comparison_{{input}}.log",
    benchmark:
        f"{paths.BENCHMARKS}/fit/comparison_{{input}}.tsv"
    wildcard_constraints:
        input="published|ours",
    priority: cs_resources.priority(config, "fit_comparison")
    threads: cs_resources.threads(config, "fit_comparison")
    resources:
        **cs_resources.resources(config, "fit_comparison"),
    params:
        settings=lambda wc: shaping.comparison(config, wc.input),
    script:
        "../scripts/fit_comparison.py"


rule fit_bin_winners:
    """The best run per compute bin (clipscale.analysis)."""
    input:
        table=fit_table_input,
    output:
        csv=paths.FIT_INPUT_BIN_WINNERS,
        md=report(
            paths.BIN_WINNERS_TABLE,
            caption="../report/bin_winners.rst",
            category="Tables",
            subcategory="{input}",
        ),
    log:
        f"{paths.LOGS}/fit/bin_winners_{{input}}.log",
    benchmark:
        f"{paths.BENCHMARKS}/fit/bin_winners_{{input}}.tsv"
    wildcard_constraints:
        input="published|ours",
    priority: cs_resources.priority(config, "fit_bin_winners")
    threads: cs_resources.threads(config, "fit_bin_winners")
    resources:
        **cs_resources.resources(config, "fit_bin_winners"),
    params:
        settings=lambda wc: shaping.bin_winners(config, wc.input),
    script:
        "../scripts/fit_bin_winners.py"


rule fit_compute_optimal:
    """Joint law in model size and samples seen, optimum per budget (clipscale.compute_optimal)."""
    input:
        table=fit_table_input,
    output:
        laws=paths.FIT_INPUT_COMPUTE_OPTIMAL_LAWS,
        optima=paths.FIT_INPUT_COMPUTE_OPTIMAL,
        runs=paths.FIT_INPUT_COMPUTE_OPTIMAL_RUNS,
        md=report(
            paths.COMPUTE_OPTIMAL_TABLE,
            caption="../report/compute_optimal.rst",
            category="Tables",
            subcategory="{input}",
        ),
    log:
        f"{paths.LOGS}/fit/compute_optimal_{{input}}.log",
    benchmark:
        f"{paths.BENCHMARKS}/fit/compute_optimal_{{input}}.tsv"
    wildcard_constraints:
        input="published|ours",
    priority: cs_resources.priority(config, "fit_compute_optimal")
    threads: cs_resources.threads(config, "fit_compute_optimal")
    resources:
        **cs_resources.resources(config, "fit_compute_optimal"),
    params:
        settings=lambda wc: shaping.compute_optimal(config, wc.input),
    script:
        "../scripts/fit_compute_optimal.py"
