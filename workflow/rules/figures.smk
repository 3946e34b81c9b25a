# Figures (clipscale.figures): one target per figure, results/figures/{figure}.pdf and .png.
# The paper's figures (*_published) need only the published table; ours need the results table.

import re

from clipscale import figures as _figures
from clipscale import paths
from clipscale import reference as _reference

FIGURES = {spec.name: spec for spec in _figures.figure_specs(config)}


def _figure_path(ext):
    return paths.fill(paths.FIGURE, figure="{figure}", ext=ext)


def _names_of(kind):
    """Wildcard constraint: the configured figures of a kind (a never-matching regex if none)."""
    names = [re.escape(name) for name, spec in FIGURES.items() if spec.kind == kind]
    return "|".join(names) if names else "(?!x)x"


def figure_targets():
    """Every configured figure, PDF and PNG, for rule all."""
    return expand(paths.FIGURE, figure=list(FIGURES), ext=["pdf", "png"])


def published_figure_targets():
    """The paper's figures, drawn from its published numbers without any training."""
    names = [name for name, spec in FIGURES.items() if spec.inputs == ["published"]]
    return expand(paths.FIGURE, figure=names, ext=["pdf", "png"])


def figure_inputs(wildcards):
    """Tables a figure reads: published and/or ours, and the overlap CSV of overlap figures."""
    spec = FIGURES[wildcards.figure]
    if spec.kind == "overlap":
        if spec.inputs == ["published"]:
            return {"overlap": str(_reference.REFERENCE_DIR / _reference.OVERLAP)}
        return {"overlap": paths.OVERLAP_TABLE}
    tables = {"published": paths.PUBLISHED_TABLE, "ours": paths.RESULTS_TABLE}
    return {name: tables[name] for name in spec.inputs}


def figure_params(wildcards):
    spec = FIGURES[wildcards.figure]
    return {"caption": spec.caption(), "title": spec.title or spec.name, "inputs": spec.inputs}


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
        pdf=_figure_path("pdf"),
        png=report(
            _figure_path("png"),
            caption="../report/figure_compute.rst",
            category="Figures",
            subcategory="Scaling with compute",
            labels={"figure": "{figure}"},
        ),
    params:
        spec=figure_params,
    wildcard_constraints:
        figure=_names_of("compute"),
    log:
        f"{paths.LOGS}/figures/{{figure}}.log",
    benchmark:
        f"{paths.BENCHMARKS}/figures/{{figure}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    script:
        "../scripts/figure_draw.py"


rule figure_data_bottleneck:
    input:
        unpack(figure_inputs),
    output:
        pdf=_figure_path("pdf"),
        png=report(
            _figure_path("png"),
            caption="../report/figure_data_bottleneck.rst",
            category="Figures",
            subcategory="Bottlenecks",
            labels={"figure": "{figure}"},
        ),
    params:
        spec=figure_params,
    wildcard_constraints:
        figure=_names_of("data_bottleneck"),
    log:
        f"{paths.LOGS}/figures/{{figure}}.log",
    benchmark:
        f"{paths.BENCHMARKS}/figures/{{figure}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/figure_draw.py"


rule figure_samples_bottleneck:
    input:
        unpack(figure_inputs),
    output:
        pdf=_figure_path("pdf"),
        png=report(
            _figure_path("png"),
            caption="../report/figure_samples_bottleneck.rst",
            category="Figures",
            subcategory="Bottlenecks",
            labels={"figure": "{figure}"},
        ),
    params:
        spec=figure_params,
    wildcard_constraints:
        figure=_names_of("samples_bottleneck"),
    log:
        f"{paths.LOGS}/figures/{{figure}}.log",
    benchmark:
        f"{paths.BENCHMARKS}/figures/{{figure}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/figure_draw.py"


rule figure_overlap:
    input:
        unpack(figure_inputs),
    output:
        pdf=_figure_path("pdf"),
        png=report(
            _figure_path("png"),
            caption="../report/figure_overlap.rst",
            category="Figures",
            subcategory="Train-test overlap",
            labels={"figure": "{figure}"},
        ),
    params:
        spec=figure_params,
    wildcard_constraints:
        figure=_names_of("overlap"),
    log:
        f"{paths.LOGS}/figures/{{figure}}.log",
    benchmark:
        f"{paths.BENCHMARKS}/figures/{{figure}}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/figure_draw.py"
