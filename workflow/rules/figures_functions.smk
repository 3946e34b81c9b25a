# Functions of workflow/rules/figures.smk (kept apart: a rule file holds rules only).

import re

from clipscale import figures as _figures
from clipscale import grid, paths, shaping
from clipscale import reference as _reference

FIGURES = {spec.name: spec for spec in _figures.figure_specs(config)}


def figure_path(ext):
    return paths.fill(paths.FIGURE, figure="{figure}", ext=ext)


def figure_names_of(kind):
    """Wildcard constraint: the configured figures of a kind (a never-matching regex if none)."""
    names = [re.escape(name) for name, spec in FIGURES.items() if spec.kind == kind]
    return "|".join(names) if names else "(?!x)x"


def figure_targets():
    """Every configured figure, PDF and PNG (for the top-level target), and the curves."""
    return (
        expand(paths.FIGURE, figure=list(FIGURES), ext=["pdf", "png"]) + curve_targets()
    )


def run_records():
    """Every run's run.json (training curves: losses.csv beside it)."""
    return [paths.fill(paths.RUN_DONE, **run.wildcards) for run in grid.runs(config)]


def curve_targets():
    """Our runs' training curves; with evaluate.all_checkpoints, their learning curves."""
    patterns = [paths.TRAINING_CURVES_FIGURE]
    if (
        config["evaluate"]["all_checkpoints"]
        and shaping.learning_curves(config)["dataset"]
    ):
        patterns.append(paths.LEARNING_CURVES_FIGURE)
    return [paths.fill(p, ext=ext) for p in patterns for ext in ("pdf", "png")]


def published_figure_targets():
    """The paper's figures, drawn from its published numbers without any training."""
    names = [name for name, spec in FIGURES.items() if spec.inputs == ["published"]]
    return expand(paths.FIGURE, figure=names, ext=["pdf", "png"])


def figure_inputs(wildcards):
    """Tables a figure reads: published and/or ours (and the fine-tuning table for fine-tuning
    metrics), and the overlap CSV of overlap figures."""
    spec = FIGURES[wildcards.figure]
    if spec.kind == "overlap":
        if spec.inputs == ["published"]:
            return {"overlap": str(_reference.REFERENCE_DIR / _reference.OVERLAP)}
        return {"overlap": paths.OVERLAP_TABLE}
    tables = {"published": paths.PUBLISHED_TABLE, "ours": paths.RESULTS_TABLE}
    out = {name: tables[name] for name in spec.inputs}
    if _figures.reads_finetune(spec) and cs_finetune.enabled(config):
        out["finetune"] = paths.FINETUNE_TABLE
    if spec.kind == "compute" and spec.fit:  # the fit step's laws, drawn as they are
        for name in spec.inputs:
            out[f"{name}_coefficients"] = paths.fill(
                paths.FIT_INPUT_COEFFICIENTS, input=name
            )
            out[f"{name}_draws"] = paths.fill(paths.FIT_INPUT_DRAWS, input=name)
    return out


def figure_settings(wildcards):
    """What shapes the figure (clipscale.shaping.figure): a change redraws it."""
    return shaping.figure(config, FIGURES[wildcards.figure])


def figure_params(wildcards):
    spec = FIGURES[wildcards.figure]
    return {
        "caption": spec.caption(),
        "title": spec.title or spec.name,
        "inputs": spec.inputs,
    }
