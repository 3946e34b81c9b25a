# 6. figures (clipscale.figures): one target per figure, results/figures/{figure}.pdf and .png.
# The paper's figures (*_published) need only the published table; ours need the results table.
from clipscale import resources as cs_resources
from clipscale import paths


include: "figures_functions.smk"


rule published:
    """Redraw the paper's figures and refit its numbers: no data, no training."""
    input:
        published_figure_targets(),
        published_fit_targets(),
    localrule: True


rule figure_compute:
    input:
        unpack(figure_inputs),
    output:
        pdf=figure_path("pdf"),
        png=report(
            figure_path("png"),
            caption="../report/figure_compute.rst",
            category="Figures",
            subcategory="Scaling with compute",
            labels={"figure": "{figure}"},
        ),
    log:
        f"{paths.LOGS}/figures/{{figure}}.log",
    benchmark:
        f"{paths.BENCHMARKS}/figures/{{figure}}.tsv"
    wildcard_constraints:
        figure=figure_names_of("compute"),
    priority: cs_resources.priority(config, "figure_compute", figures=FIGURES)
    threads: cs_resources.threads(config, "figure_compute")
    resources:
        **cs_resources.resources(config, "figure_compute"),
    params:
        spec=figure_params,
        settings=figure_settings,
    script:
        "../scripts/figure_draw.py"


rule figure_data_bottleneck:
    input:
        unpack(figure_inputs),
    output:
        pdf=figure_path("pdf"),
        png=report(
            figure_path("png"),
            caption="../report/figure_data_bottleneck.rst",
            category="Figures",
            subcategory="Bottlenecks",
            labels={"figure": "{figure}"},
        ),
    log:
        f"{paths.LOGS}/figures/{{figure}}.log",
    benchmark:
        f"{paths.BENCHMARKS}/figures/{{figure}}.tsv"
    wildcard_constraints:
        figure=figure_names_of("data_bottleneck"),
    priority: cs_resources.priority(config, "figure_data_bottleneck", figures=FIGURES)
    threads: cs_resources.threads(config, "figure_data_bottleneck")
    resources:
        **cs_resources.resources(config, "figure_data_bottleneck"),
    params:
        spec=figure_params,
        settings=figure_settings,
    script:
        "../scripts/figure_draw.py"


rule figure_samples_bottleneck:
    input:
        unpack(figure_inputs),
    output:
        pdf=figure_path("pdf"),
        png=report(
            figure_path("png"),
            caption="../report/figure_samples_bottleneck.rst",
            category="Figures",
            subcategory="Bottlenecks",
            labels={"figure": "{figure}"},
        ),
    log:
        f"{paths.LOGS}/figures/{{figure}}.log",
    benchmark:
        f"{paths.BENCHMARKS}/figures/{{figure}}.tsv"
    wildcard_constraints:
        figure=figure_names_of("samples_bottleneck"),
    priority: cs_resources.priority(config, "figure_samples_bottleneck", figures=FIGURES)
    threads: cs_resources.threads(config, "figure_samples_bottleneck")
    resources:
        **cs_resources.resources(config, "figure_samples_bottleneck"),
    params:
        spec=figure_params,
        settings=figure_settings,
    script:
        "../scripts/figure_draw.py"


rule figure_overlap:
    input:
        unpack(figure_inputs),
    output:
        pdf=figure_path("pdf"),
        png=report(
            figure_path("png"),
            caption="../report/figure_overlap.rst",
            category="Figures",
            subcategory="Train-test overlap",
            labels={"figure": "{figure}"},
        ),
    log:
        f"{paths.LOGS}/figures/{{figure}}.log",
    benchmark:
        f"{paths.BENCHMARKS}/figures/{{figure}}.tsv"
    wildcard_constraints:
        figure=figure_names_of("overlap"),
    priority: cs_resources.priority(config, "figure_overlap", figures=FIGURES)
    threads: cs_resources.threads(config, "figure_overlap")
    resources:
        **cs_resources.resources(config, "figure_overlap"),
    params:
        spec=figure_params,
        settings=figure_settings,
    script:
        "../scripts/figure_draw.py"


rule figure_training_curves:
    """Training loss against samples seen, every run of the grid (losses.csv beside run.json)."""
    input:
        runs=run_records(),
    output:
        pdf=paths.fill(paths.TRAINING_CURVES_FIGURE, ext="pdf"),
        png=report(
            paths.fill(paths.TRAINING_CURVES_FIGURE, ext="png"),
            caption="../report/training_curves.rst",
            category="Figures",
            subcategory="Training and learning curves",
        ),
    log:
        f"{paths.LOGS}/figures/training_curves.log",
    benchmark:
        f"{paths.BENCHMARKS}/figures/training_curves.tsv"
    priority: cs_resources.priority(config, "figure_training_curves")
    threads: cs_resources.threads(config, "figure_training_curves")
    resources:
        **cs_resources.resources(config, "figure_training_curves"),
    params:
        settings=shaping.training_curves(config),
    script:
        "../scripts/figure_curves.py"


rule figure_learning_curves:
    """The main set's error at every checkpoint of each run (evaluate.all_checkpoints)."""
    input:
        table=paths.RESULTS_TABLE,
    output:
        pdf=paths.fill(paths.LEARNING_CURVES_FIGURE, ext="pdf"),
        png=report(
            paths.fill(paths.LEARNING_CURVES_FIGURE, ext="png"),
            caption="../report/learning_curves.rst",
            category="Figures",
            subcategory="Training and learning curves",
        ),
    log:
        f"{paths.LOGS}/figures/learning_curves.log",
    benchmark:
        f"{paths.BENCHMARKS}/figures/learning_curves.tsv"
    priority: cs_resources.priority(config, "figure_learning_curves")
    threads: cs_resources.threads(config, "figure_learning_curves")
    resources:
        **cs_resources.resources(config, "figure_learning_curves"),
    params:
        settings=shaping.learning_curves(config),
    script:
        "../scripts/figure_curves.py"
