"""Which fine-tuning jobs a config asks for, with which settings: one job per (checkpoint,
protocol), the final checkpoints of the runs that ``finetune.runs`` selects."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping

from clipscale import config as config_mod
from clipscale import grid, paths
from clipscale.config import ConfigError, parse_count

log = logging.getLogger("clipscale.finetune")

#: classification_in12k: the classification protocol after an intermediate fine-tuning step
#: (finetune.intermediate: the paper's ImageNet-12k step of Table 11); ..._hires: at the model's
#: larger image size (finetune.classification.high_res: Table 9's 336/384 px rows); each its own
#: metric, the published Table 9's name (imagenet_ft_acc1[_<size>px][_in12k])
PROTOCOLS = ("classification", "classification_in12k", "classification_hires", "classification_in12k_hires",
             "patching")
CLASSIFICATION_METRIC = "imagenet_ft_acc1"


def with_intermediate(protocol: str) -> bool:
    return protocol.startswith("classification_in12k")


def image_size(config: Mapping, protocol: str, model: str) -> int | None:
    """The image size a classification protocol fine-tunes a model at: its
    finetune.classification.high_res entry for the ..._hires protocols, else None (the
    checkpoint's)."""
    if not protocol.endswith("_hires"):
        return None
    sizes = section(config)["classification"]["high_res"]
    if model not in sizes:
        raise ConfigError(f"finetune.classification.high_res: no image size for {model} ({protocol})")
    return int(sizes[model])


def classification_metric(config: Mapping, protocol: str, model: str) -> str:
    """The metric of a classification protocol's rows: imagenet_ft_acc1, then _<size>px at a
    larger image size, then _in12k after the intermediate step (the published names)."""
    size = image_size(config, protocol, model)
    return CLASSIFICATION_METRIC + (f"_{size}px" if size else "") + ("_in12k" if with_intermediate(protocol) else "")


@dataclass(frozen=True)
class Recipe:
    """One fine-tuning recipe (config finetune.recipe, with the model's and protocol's overrides)."""

    lr: float
    batch_size: int
    epochs: float
    warmup_epochs: float
    layer_decay: float
    ema: float
    ema_warmup_epochs: float
    weight_decay: float
    label_smoothing: float
    drop_path: float
    clip_grad: float
    rand_augment: str
    random_erase: float
    crop_scale: tuple
    hflip: float
    train_head: bool

    @classmethod
    def of(cls, settings: Mapping) -> "Recipe":
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in settings.items() if k in names}
        values["crop_scale"] = tuple(values["crop_scale"])
        return cls(**values)

    def steps(self, n_train: int) -> int:
        """Update steps of ``epochs`` passes over ``n_train`` samples (at least one)."""
        return max(1, math.ceil(self.epochs * n_train / self.batch_size))

    def warmup_steps(self, n_train: int) -> int:
        return min(self.steps(n_train) - 1, math.ceil(self.warmup_epochs * n_train / self.batch_size))

    def ema_warmup_steps(self, n_train: int) -> int:
        """Update steps of the EMA decay's warm-up (0: the stated decay from the first step), at
        most the run's: the decay reaches ``ema`` within the recipe."""
        if self.ema_warmup_epochs <= 0:
            return 0
        return min(self.steps(n_train), math.ceil(self.ema_warmup_epochs * n_train / self.batch_size))


RECIPE_KEYS = frozenset(Recipe.__dataclass_fields__)
# finetune.models.<model> keys that are not the recipe's: how the job runs it (not in the
# recipe, the state's fingerprint or the job's shaping: a change reruns nothing)
MODEL_EXECUTION_KEYS = frozenset({"micro_batch_size"})


def section(config: Mapping) -> dict:
    return config_mod.section(dict(config), "finetune")


def enabled(config: Mapping) -> bool:
    return bool(section(config)["enabled"])


def recipe_settings(config: Mapping, protocol: str, model: str) -> dict:
    """The recipe of a (protocol, model): finetune.recipe, then finetune.models.<model>, then (for
    patching) finetune.patching.recipe on top."""
    ft = section(config)
    out = dict(ft["recipe"])
    out.update({k: v for k, v in ft["models"].get(model, {}).items() if k not in MODEL_EXECUTION_KEYS})
    if protocol == "patching":
        out.update(ft["patching"]["recipe"])
    return out


def intermediate_settings(config: Mapping, model: str) -> dict:
    """The recipe of classification_in12k's intermediate step (the paper's Table 11):
    finetune.recipe, then finetune.intermediate.recipe, then finetune.intermediate.models.<model>
    (Table 11's columns, not Table 10's: finetune.models does not apply)."""
    inter = section(config)["intermediate"]
    out = dict(section(config)["recipe"])
    out.update(inter["recipe"])
    out.update(inter["models"].get(model, {}))
    return out


def world_size(config: Mapping) -> int:
    """Processes of a fine-tuning job: finetune.nproc per node x finetune.nodes."""
    ft = section(config)
    return ft["nproc"] * ft["nodes"]


def micro_batch_size(config: Mapping, model: str) -> int | None:
    """The most samples a process runs through the model at once (finetune.models.<model>.
    micro_batch_size, else finetune.micro_batch_size); None: its whole share of the batch."""
    ft = section(config)
    return ft["models"].get(model, {}).get("micro_batch_size", ft.get("micro_batch_size")) or None


def bf16(config: Mapping, device: str) -> bool:
    """Whether the job runs its forward passes under bf16 autocast (finetune.precision; auto: on
    GPUs)."""
    precision = section(config)["precision"]
    return precision == "bf16" or (precision == "auto" and device.startswith("cuda"))


def datasets(config: Mapping, protocol: str) -> list[str]:
    """The sets a protocol trains or evaluates on: the main set and its robustness sets
    (classification; then the intermediate step's set, classification_in12k); the joint tasks
    and the control (patching)."""
    ft = section(config)
    if protocol == "classification":
        return [ft["classification"]["dataset"], *ft["classification"]["robustness"]]
    if protocol.startswith("classification_"):
        return [*datasets(config, "classification"), *([ft["intermediate"]["dataset"]]
                                                       if with_intermediate(protocol) else [])]
    return [*ft["patching"]["tasks"], ft["patching"]["control"]]


def dataset_dir(config: Mapping, name: str) -> str:
    """A set's webdataset folder: finetune.sets' (sets only fine-tuning reads: ImageNet-12k,
    ImageNet-ReaL), else its downstream entry's, else the world's set of that name (the world
    makes sets the default does not evaluate zero-shot, e.g. positions and digits)."""
    own = section(config)["sets"]
    if name in own:
        return own[name]["path"]
    if name in config["downstream"]:
        return paths.downstream_dir(dict(config), name)
    if config["pool"]["source"] == "world":
        return paths.fill(paths.WORLD_DOWNSTREAM, dataset=name)
    raise ConfigError(f"finetune: downstream set {name!r} is not under downstream (give it a path there)")


def runs(config: Mapping) -> list[grid.Run]:
    """The runs whose final checkpoints are fine-tuned: the grid's, limited by finetune.runs
    (models, scales, samples_seen; each empty or absent: all)."""
    sel = section(config)["runs"]
    samples = {parse_count(s) for s in sel.get("samples_seen", [])}
    return [r for r in grid.runs(dict(config))
            if (not sel.get("models") or r.model in sel["models"])
            and (not sel.get("scales") or r.scale in sel["scales"])
            and (not samples or r.samples_seen in samples)]


def result_path(run: grid.Run, protocol: str) -> str:
    return paths.fill(paths.FINETUNE_RESULT, **run.wildcards, protocol=protocol)


def target_paths(config: Mapping) -> list[str]:
    """Every fine-tuning result of the config (none unless finetune.enabled; a warning when
    finetune.runs selects none of the grid's runs, e.g. after the grid changed)."""
    if not enabled(config):
        return []
    selected = runs(config)
    if not selected:
        log.warning("finetune.runs %s selects none of the grid's runs: nothing is fine-tuned",
                    section(config)["runs"])
    return [result_path(r, p) for r in selected for p in section(config)["protocols"]]


def job_inputs(config: Mapping, model: str, scale: str, samples: str) -> dict[str, str]:
    """The run's record (its final checkpoint) and the world when it makes a set of the job."""
    run = grid.find_run(dict(config), model, scale, samples)
    out = {"run": paths.fill(paths.RUN_DONE, **run.wildcards)}
    if config["pool"]["source"] == "world":
        out["world"] = paths.WORLD_DONE
    return out


def problems(config: Mapping) -> list[str]:
    """Config problems a schema cannot see: override keys that are no recipe's, sets that do not
    exist, a control that is also a joint task, runs that select nothing."""
    import jsonschema

    from clipscale.world import unmade_set_problem  # here: PIL and pandas, for the checks only

    ft = section(config)
    out = []
    schema = config_mod.load_schema()["properties"]["finetune"]["properties"]["recipe"]
    values = jsonschema.Draft202012Validator({"type": "object", "properties": schema["properties"]})
    inter = ft["intermediate"]
    for where, over in [(f"finetune.models.{m}", o) for m, o in ft["models"].items()] + [
            ("finetune.patching.recipe", ft["patching"]["recipe"]),
            ("finetune.intermediate.recipe", inter["recipe"])] + [
            (f"finetune.intermediate.models.{m}", o) for m, o in inter["models"].items()]:
        allowed = RECIPE_KEYS | (MODEL_EXECUTION_KEYS if where.startswith("finetune.models.") else set())
        unknown = sorted(set(over) - allowed)
        if unknown:
            out.append(f"{where}: {unknown} are not recipe keys (expected some of {sorted(allowed)})")
        micro = over.get("micro_batch_size")
        if "micro_batch_size" in over and (not isinstance(micro, int) or isinstance(micro, bool) or micro < 1):
            out.append(f"{where}.micro_batch_size: {micro!r} is not a positive integer")
        for e in values.iter_errors(over):
            out.append(f"{where}.{'.'.join(str(x) for x in e.absolute_path)}: {e.message}")
    for where, names in (("finetune.models", ft["models"]),
                         ("finetune.intermediate.models", inter["models"])):
        out += [f"{where}: {m!r} is not defined under models" for m in names if m not in config["models"]]
    world = world_size(config)
    for protocol in ft["protocols"]:
        for m in config["models"]:
            recipes = [(protocol, recipe_settings(config, protocol, m))]
            if with_intermediate(protocol):
                recipes.append(("its intermediate step", intermediate_settings(config, m)))
            for what, settings in recipes:
                if settings["ema"] > 0 and settings["ema_warmup_epochs"] > settings["epochs"]:
                    out.append(f"finetune.recipe.ema_warmup_epochs: {settings['ema_warmup_epochs']} for {m} ({what}, "
                               f"with its overrides) is longer than its {settings['epochs']} epochs: the EMA would "
                               f"never reach its decay {settings['ema']}")
                batch = settings["batch_size"]
                if batch < world:
                    out.append(f"finetune.recipe.batch_size: {batch} for {m} ({what}, with its overrides) is "
                               f"smaller than the job's {world} processes (finetune.nproc x finetune.nodes): each "
                               f"process needs a share of every batch")
    if not ft["enabled"]:
        return out
    hires = [p for p in ft["protocols"] if p.endswith("_hires")]
    if hires:
        lacking = sorted({r.model for r in runs(config)} - set(ft["classification"]["high_res"]))
        if lacking:
            out.append(f"finetune.classification.high_res: no image size for {lacking} (protocols {hires} "
                       f"fine-tune them at it)")
    own = ft["sets"]
    for protocol in ft["protocols"]:
        for name in datasets(config, protocol):
            known = name in config["downstream"] or name in own
            problem = None if known else unmade_set_problem(config, name)
            if problem:
                out.append(f"finetune.{protocol}: {name!r} is not under downstream and {problem}")
    if ft["patching"]["control"] in ft["patching"]["tasks"]:
        out.append(f"finetune.patching: the control {ft['patching']['control']!r} is also a joint task")
    return out + _selection_problems(config, ft["runs"])


def _selection_problems(config: Mapping, sel: Mapping) -> list[str]:
    """finetune.runs naming a model, scale or samples seen the grid does not run, or selecting no
    run at all (after grid.exclude): it would fine-tune nothing, without a word."""
    g, out = config["grid"], []
    for key in ("models", "scales"):
        out += [f"finetune.runs.{key}: {v!r} is not in grid.{key} {list(g[key])}: it selects no run"
                for v in sel.get(key) or [] if v not in g[key]]
    try:
        counts = {parse_count(n) for n in g["samples_seen"]}
        for v in sel.get("samples_seen") or []:
            if parse_count(v) not in counts:
                out.append(f"finetune.runs.samples_seen: {v!r} is not in grid.samples_seen "
                           f"{list(g['samples_seen'])}: it selects no run")
        if not out and not runs(config):
            out.append(f"finetune.runs: {dict(sel)} selects none of the grid's runs (grid.exclude leaves "
                       f"them out): nothing would be fine-tuned")
    except ConfigError as e:
        out.append(f"finetune.runs.samples_seen: {e}")
    return out


def path_problems(config: Mapping) -> list[str]:
    """finetune.sets' folders that a protocol of the config reads (when fine-tuning is on):
    missing, or without the class names and templates its head is made of."""
    ft = section(config)
    if not ft["enabled"]:
        return []
    used = {name for protocol in ft["protocols"] for name in datasets(config, protocol)}
    out = []
    for name, spec in ft["sets"].items():
        if name not in used:
            continue
        root = Path(spec["path"])
        if not root.is_dir():
            out.append(f"finetune.sets.{name}.path: {root} does not exist")
            continue
        out += [f"finetune.sets.{name}.path: {root} has no {f}" for f in
                ("classnames.txt", "zeroshot_classification_templates.txt") if not (root / f).is_file()]
    return out
