"""What shapes each artifact: the settings every rule receives as ``params:``.

Snakemake reruns a job when its ``params`` change (its default ``params`` rerun trigger compares
the ``repr`` of each parameter with the one recorded when the output was made). So each rule gets
exactly the slice of the config its outputs depend on, and nothing else:

* a changed setting reruns the jobs it shapes, and (through their outputs) what follows them;
* a setting that only says *how* a job runs (threads, loader workers, processes, memory,
  walltime, device) is left out, so changing it never reruns anything;
* every slice is canonical (mapping keys sorted at every level), so reordering keys in a config
  file changes nothing.

A slice has the shape of the config itself (``{"fit": {...}, "seed": 0}``), so the package's
functions that take a config take a slice too: the fit, figure, aggregation, world and model
profile steps receive *only* their slice, so they cannot read a setting that would not rerun
them. Training and evaluation also need how-to-run settings (processes, threads, device): their
scripts pass the whole config, and their params are the shaping part of what they read
(the run's resolved hyper-parameters; the evaluation's model, set, pool name and settings).

Which keys only say how a job runs is declared in the schema: a property with
``x-execution: true`` (``execution_keys``).
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from functools import lru_cache
from typing import Any, Mapping

from clipscale import config as config_mod
from clipscale import grid


def canonical(value: Any) -> Any:
    """A deep copy with every mapping's keys sorted (so its repr does not depend on key order);
    tuples become lists (YAML and JSON know only lists)."""
    if isinstance(value, Mapping):
        return {str(k): canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return copy.deepcopy(value)


@lru_cache(maxsize=None)  # read once per process: the DAG asks for every job's params
def execution_keys(section: str) -> frozenset[str]:
    """Keys of a config section marked ``x-execution: true`` in the schema: how a job runs
    (threads, workers, processes, memory, walltime, device), not what it makes."""
    props = config_mod.load_schema()["properties"][section]["properties"]
    return frozenset(k for k, v in props.items() if isinstance(v, dict) and v.get("x-execution"))


def _without(mapping: Mapping, keys) -> dict:
    return {k: v for k, v in mapping.items() if k not in keys}


# ---------------------------------------------------------------------------------------------
# one function per rule (or family of rules)


def world(config: Mapping) -> dict:
    """make_world: the world's generator settings (world.* and the seed)."""
    from clipscale.world import WorldSpec

    return canonical(asdict(WorldSpec.from_config(config)))


# what a model's name is in figures and tables, not what is built or trained
_DISPLAY = ("label",)


def model(config: Mapping, name: str) -> dict:
    """model_profile: the model's definition (its open_clip config), not its label."""
    return canonical({"models": {name: _without(config["models"][name], _DISPLAY)}})


# derived by grid.hparams from execution settings, but kept: they do shape the run
_DERIVED_SHAPING = ("global_batch_size", "samples_seen_exact", "train_num_samples", "epochs")


def train(config: Mapping, run: grid.Run) -> dict:
    """train: the run's resolved hyper-parameters (train.* with its overrides, the derived
    schedule), the model's definition (not its label) and the seed. Not: threads, workers, nproc, nodes, GPUs,
    memory, walltime, device. (The number of processes and the loader workers change what a run
    does only through the global batch size and the samples seen, which are kept.)"""
    hp = grid.hparams(dict(config), run)
    # the schedule is in the run's path (its samples wildcard), samples_trained_exact follows
    # from the rest: a cosine run's params are what they were before schedules existed
    drop = (execution_keys("train") | {"world_size", "schedule", "samples_trained_exact"}) - set(_DERIVED_SHAPING)
    return canonical({
        "seed": grid.open_clip_seed(dict(config), run),  # config seed + the run's seed index
        "model": _without(config["models"][run.model], _DISPLAY),
        "hparams": _without(hp, drop),
    })


# evaluation settings that concern one task only (the others shape every task)
_TASK_SETTINGS = {
    "linear_probe": ("linear_probe_k", "linear_probe_epochs", "linear_probe_lr", "batch_size"),
    "zeroshot_retrieval": ("recall_k",),
}


def evaluate(config: Mapping, source: str, model: str, scale: str, dataset: str, task: str) -> dict:
    """evaluate: what one evaluation depends on besides its checkpoint (an input file): the
    downstream set's definition, the settings of its task, the model's definition and label, the
    pool's name and the scale's size (both in its table row), the seed (linear probes).
    Not: threads, workers, memory, walltime, GPUs, device, which checkpoints are evaluated, the
    set's group (the aggregation's business), another task's settings (the linear probe's shots
    do not rerun zero-shot classification), nor the batch size of zero-shot tasks (it changes
    how many images go through the model at once, not their features)."""
    others = {k for t, keys in _TASK_SETTINGS.items() if t != task for k in keys}
    others -= set(_TASK_SETTINGS.get(task, ()))
    ev = _without(config["evaluate"], execution_keys("evaluate") | {"released"} | others)
    if source == "released":
        ev["released"] = config["evaluate"].get("released", {})
    return canonical({
        "seed": config["seed"],
        "pool": {"name": config["pool"].get("name")},
        "scales": {scale: config["scales"][scale]} if scale in config["scales"] else {},
        "models": {model: config["models"][model]} if model in config["models"] else {},
        "downstream": {dataset: _without(config["downstream"][dataset], ("group", "dedup", "tasks"))},
        "evaluate": ev,
    })


def evaluations(config: Mapping, source: str, model: str, scale: str) -> dict:
    """evaluate (one job, every set and task of a checkpoint): ``evaluate`` of each (set, task),
    keyed "set/task" in sorted order, so that reordering config.downstream reruns no evaluation."""
    from clipscale.evaluate.plan import dataset_tasks  # not the package (its jobs import this)

    return canonical({f"{dataset}/{task}": evaluate(config, source, model, scale, dataset, task)
                      for dataset, task in dataset_tasks(config)})


def finetune(config: Mapping, protocol: str, model: str, scale: str) -> dict:
    """finetune: what one fine-tuning job depends on besides its checkpoint: the protocol's
    settings, the model's recipe, its sets (their folders and definitions), the model's
    definition and label, the pool's name and the scale's size (the table row), the seed. Not:
    threads, device, GPUs, memory, walltime, how often it saves its place, which runs are
    fine-tuned, other protocols' settings or other models' recipes."""
    from clipscale.finetune import plan

    ft = config_mod.section(dict(config), "finetune")
    sets = plan.datasets(config, protocol)
    downstream = config.get("downstream", {})
    return canonical({
        "seed": config["seed"],
        "pool": {"name": config["pool"].get("name")},
        "scales": {scale: config["scales"][scale]} if scale in config["scales"] else {},
        "models": {model: config["models"][model]} if model in config["models"] else {},
        "finetune": {"protocol": protocol, **_finetune_protocol(ft, protocol),
                     "recipe": plan.recipe_settings(config, protocol, model),
                     **({"intermediate": {"dataset": ft["intermediate"]["dataset"],
                                          "recipe": plan.intermediate_settings(config, model)}}
                        if plan.with_intermediate(protocol) else {}),
                     **({"image_size": plan.image_size(config, protocol, model)}
                        if protocol.endswith("_hires") else {})},
        "downstream": {d: {"dir": plan.dataset_dir(config, d),
                           **_without(downstream.get(d, {}), ("group", "dedup", "tasks"))} for d in sets},
    })


def _finetune_protocol(ft: Mapping, protocol: str) -> dict:
    """A fine-tuning protocol's own settings (every classification protocol: classification's,
    less the image sizes of the others: its own is the job's image_size)."""
    if protocol.startswith("classification"):
        return {"classification": _without(ft["classification"], ("recipe", "high_res"))}
    return {protocol: _without(ft[protocol], ("recipe",))}


def downstream_groups(config: Mapping) -> dict:
    """The downstream sets' tasks and groups (group means of the results table)."""
    return {name: {k: spec[k] for k in ("tasks", "group") if k in spec}
            for name, spec in config["downstream"].items()}


def aggregate(config: Mapping) -> dict:
    """aggregate_results: the downstream sets' tasks and groups."""
    return canonical({"downstream": downstream_groups(config)})


def _model_gmac(config: Mapping) -> dict:
    return {name: {k: spec[k] for k in ("label", "gmac_per_sample") if k in spec}
            for name, spec in config["models"].items()}


# fit.* keys that only the analyses read (clipscale.analysis), not the coefficient tables
_ANALYSIS_KEYS = ("extrapolation", "comparisons", "comparison_figure_within", "compute_optimal")


def fit(config: Mapping, input_name: str) -> dict:
    """fit_input: fit.* (but the analyses' settings), the seed (bootstrap), the models' stated
    GMAC and labels (predictions) and, for our runs, the downstream groups (fitted group means)."""
    out = {"seed": config["seed"], "fit": _without(config["fit"], _ANALYSIS_KEYS), "models": _model_gmac(config)}
    return _with_groups(out, config, input_name)


def _with_groups(out: dict, config: Mapping, input_name: str) -> dict:
    """``out`` with, for our runs, the downstream groups (fitted group means); canonical."""
    if input_name == "ours":
        out["downstream"] = downstream_groups(config)
    return canonical(out)


def extrapolation(config: Mapping, input_name: str) -> dict:
    """fit_extrapolation: the fit settings it refits with (bins, bootstrap, ci, saturating) and
    fit.extrapolation, the seed and, for our runs, the downstream groups."""
    fit_cfg = _without(config["fit"], ("predictions", "methods", "comparisons", "comparison_figure_within",
                                         "compute_optimal"))
    ex = dict(fit_cfg.get("extrapolation", {}))
    ex["cut_gmac"] = {k: v for k, v in ex.get("cut_gmac", {}).items() if k == input_name}
    fit_cfg["extrapolation"] = ex
    return _with_groups({"seed": config["seed"], "fit": fit_cfg}, config, input_name)


def comparison(config: Mapping, input_name: str) -> dict:
    """fit_comparison: bins, bin_pad, bootstrap, ci, the comparisons of this input (None: the
    built-in pairs), the figure's range of gaps, the seed and, for our runs, the downstream groups."""
    fit_cfg = {k: config["fit"][k] for k in ("bins", "bin_pad", "bootstrap", "ci", "comparison_figure_within",
                                             "min_bootstrap_computes")
               if k in config["fit"]}
    pairs = config["fit"].get("comparisons")
    fit_cfg["comparisons"] = None if pairs is None else [p for p in pairs if p["input"] == input_name]
    return _with_groups({"seed": config["seed"], "fit": fit_cfg}, config, input_name)


def bin_winners(config: Mapping, input_name: str) -> dict:
    """fit_bin_winners: the bins (fit.bins, fit.bin_pad) and, for our runs, the downstream groups."""
    fit_cfg = {k: config["fit"][k] for k in ("bins", "bin_pad") if k in config["fit"]}
    return _with_groups({"fit": fit_cfg}, config, input_name)


def compute_optimal(config: Mapping, input_name: str) -> dict:
    """fit_compute_optimal: fit.compute_optimal (its budgets of this input only), fit.ci, the seed
    (bootstrap) and, for our runs, the data scales' sizes (unique samples) and the downstream groups."""
    co = dict(config["fit"].get("compute_optimal") or {})
    co["budgets_gmac"] = {k: v for k, v in (co.get("budgets_gmac") or {}).items() if k == input_name}
    out = {"seed": config["seed"], "fit": {"ci": config["fit"].get("ci", 0.95), "compute_optimal": co}}
    if input_name == "ours":
        out["scales"] = dict(config.get("scales", {}))
    return _with_groups(out, config, input_name)


def figure(config: Mapping, spec) -> dict:
    """figure_*: the figure's spec, and what drawing it reads: the data scales' sizes (colours
    and order), the downstream groups (group means of our runs). The fitted lines of compute
    figures are the fit step's outputs (input files): a fit setting redraws through them; a
    figure of fine-tuning metrics fits those itself (the fit settings and the seed here)."""
    from clipscale.figures import reads_finetune

    out = {"spec": asdict(spec), "scales": config["scales"],
           "downstream": downstream_groups(config) if "ours" in spec.inputs else {}}
    if reads_finetune(spec):  # it fits the fine-tuning metrics' laws itself, as the fit step fits
        out.update(seed=config["seed"], fit=_without(config["fit"], _ANALYSIS_KEYS))
    return canonical(out)


def training_curves(config: Mapping) -> dict:
    """figure_training_curves: the models' labels and the data scales' sizes (colours, order);
    the runs are its inputs (their run.json, losses.csv beside it)."""
    from clipscale.config import parse_count

    return canonical({"labels": {m: spec.get("label", m) for m, spec in config["models"].items()},
                      "scales": {s: parse_count(n) for s, n in config["scales"].items()}})


def learning_curves(config: Mapping) -> dict:
    """figure_learning_curves: the main set (table.main_set) and the grid's sources."""
    from clipscale.table import main_set

    return canonical({"dataset": main_set(config), "metric": "acc1", "sources": grid.sources(config)})
