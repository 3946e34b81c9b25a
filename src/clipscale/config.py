"""The configuration: one JSON schema, loading, validation with defaults, and clear errors.

The same function (``validate(..., check_paths=True)``) checks the config in the Snakefile (before
any job is scheduled) and in ``clipscale check-config``: a wrong key, value or path names the file,
the dotted key and what is wrong.
"""

from __future__ import annotations

import copy
import os
import re
import tarfile
from functools import lru_cache
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(str(resources.files("clipscale") / "schemas" / "config.schema.yaml"))

_SUFFIX = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9}


class ConfigError(ValueError):
    """A config that does not describe a runnable study."""


def load_schema() -> dict:
    """The config schema (a copy: callers may change it)."""
    return copy.deepcopy(_parsed_schema())


@lru_cache(maxsize=None)
def _parsed_schema() -> dict:
    # parsed once per process: a DAG build asked for it 11 times, 0.3 s each
    return yaml.safe_load(SCHEMA_PATH.read_text())


def section(config: dict, name: str) -> dict:
    """A config section with the schema's defaults under any key it lacks (a validated config
    has them all; a partial one, for use outside the pipeline, gets them here, not from defaults
    repeated in the code)."""
    return _merged(copy.deepcopy(_section_defaults(name)), config.get(name) or {})


@lru_cache(maxsize=None)
def _section_defaults(name: str) -> dict:
    """The schema's defaults of a section, nested objects too (e.g. train.cooldown): what the
    validator that fills defaults makes of an empty section (its errors are not this one's
    business: required keys have no default)."""
    out: dict = {}
    for _ in _DefaultFillingValidator(load_schema()["properties"][name]).iter_errors(out):
        pass
    return out


def _merged(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``, nested objects key by key (values are not copied)."""
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = _merged(base[key], value)
        else:
            base[key] = value
    return base


def schema_default(section: str, key: str):
    """The schema's default of ``section.key`` (command lines take their defaults from here, so
    that each default is written once)."""
    return copy.deepcopy(load_schema()["properties"][section]["properties"][key]["default"])


def parse_count(value: int | str) -> int:
    """'24k' -> 24000, '3B' -> 3_000_000_000, '12.8B' -> 12_800_000_000, 500 -> 500."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([kKMBG]?)", str(value).strip())
    if not m:
        raise ConfigError(f"not a count: {value!r} (write e.g. 8000, 24k, 3B or 12.8B)")
    return int(round(float(m.group(1)) * _SUFFIX[m.group(2)]))


def format_count(n: int) -> str:
    """Short label of a count: 24000 -> '24k', 3e9 -> '3B', 12.8e9 -> '12.8B'."""
    for suffix, scale in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= scale:
            value = n / scale
            text = f"{value:.1f}".rstrip("0").rstrip(".") if value < 100 else f"{value:.0f}"
            if parse_count(text + suffix) == n:
                return text + suffix
    return str(n)


class _DefaultFillingValidator:
    """jsonschema validator that fills in "default" values of object properties."""

    def __new__(cls, schema):
        base = jsonschema.Draft202012Validator

        def set_defaults(validator, properties, instance, schema):
            if isinstance(instance, dict):
                for name, sub in properties.items():
                    if isinstance(sub, dict) and "default" in sub and name not in instance:
                        instance[name] = copy.deepcopy(sub["default"])
            yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

        extended = jsonschema.validators.extend(base, {"properties": set_defaults})
        return extended(schema)


def _where(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def validate(config: dict, source: str = "config", *, check_paths: bool = False) -> dict:
    """Validate ``config`` in place against the schema, fill defaults, check cross-references and,
    with ``check_paths``, that every configured path exists with the layout clipscale reads
    (relative paths from the working directory). The one validator: ``clipscale check-config``
    and the Snakefile both call it with ``check_paths=True``.

    Returns the config. Raises ConfigError naming ``source``, the dotted key and the problem.
    """
    validator = _DefaultFillingValidator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  - {_where(e)}: {e.message}" for e in errors[:20]]
        raise ConfigError(f"invalid config {source}:\n" + "\n".join(lines))
    problems = cross_check(config)
    if check_paths:
        problems += path_problems(config)
    if problems:
        raise ConfigError(
            f"invalid config {source}:\n" + "\n".join(f"  - {p}" for p in problems)
        )
    return config


def _embedding_problems(config: dict) -> list[str]:
    """Mode embedding: an encoder there is, and no loop (subsets filtered by our own runs'
    features, on which those runs train)."""
    from clipscale.dedup import DedupError
    from clipscale.dedup.embedding import encoder

    try:
        enc = encoder(config)
    except DedupError as e:
        return [str(e)]
    remove = config["dedup"]["remove_duplicates"]
    if "run" in enc and (remove is True or (isinstance(remove, list) and "embedding" in remove)):
        return [f"dedup.remove_duplicates: removing mode embedding's matches with the features of our "
                f"run {enc['run'].name} would train it on subsets that need it first; give "
                f"dedup.embedding.checkpoint (a model trained elsewhere) or leave embedding out"]
    return []


def _count(value, key: str, problems: list[str]) -> int | None:
    """parse_count of a configured count, or None with the problem appended."""
    try:
        n = parse_count(value)
    except ConfigError as e:
        problems.append(f"{key}: {e}")
        return None
    if n < 1:
        problems.append(f"{key}: {value!r} is {n} samples")
        return None
    return n


def unmade_set_problem(config: dict, name: str) -> str | None:
    """Why a downstream set without a path of its own cannot be made, or None: the embedded
    world makes its sets; with another pool every set needs a path."""
    if config["pool"]["source"] != "world":
        return "needs a path (pool.source is not 'world')"
    from clipscale.world import DOWNSTREAM_SETS

    if name not in DOWNSTREAM_SETS:
        return f"the world makes no set of that name (it makes {sorted(DOWNSTREAM_SETS)})"
    return None


def cross_check(config: dict) -> list[str]:
    """Checks that a JSON schema cannot express: names that must refer to each other, counts,
    and runs that open_clip_train could not run. The filesystem is not read."""
    from clipscale import released

    problems = []
    grid = config["grid"]
    models, scales = config["models"], config["scales"]
    for model in grid["models"]:
        if model not in models:
            problems.append(f"grid.models: {model!r} is not defined under models")
    for scale in grid["scales"]:
        if scale not in scales:
            problems.append(f"grid.scales: {scale!r} is not defined under scales")
    counts: dict[int, object] = {}
    for value in grid["samples_seen"]:
        n = _count(value, "grid.samples_seen", problems)
        if n in counts:
            problems.append(f"grid.samples_seen: {counts[n]!r} and {value!r} name the same count "
                            f"({format_count(n)}), so the same runs")
        elif n is not None:
            counts[n] = value
    for i, entry in enumerate(grid.get("exclude", [])):
        if "model" in entry and entry["model"] not in models:
            problems.append(f"grid.exclude[{i}].model: {entry['model']!r} is not defined under models")
        if "scale" in entry and entry["scale"] not in scales:
            problems.append(f"grid.exclude[{i}].scale: {entry['scale']!r} is not defined under scales")
        if "samples_seen" in entry:
            _count(entry["samples_seen"], f"grid.exclude[{i}].samples_seen", problems)
    if not problems:
        from clipscale.grid import exclude_problems

        problems += exclude_problems(config)
    problems += _name_problems(config)
    remove = config["dedup"].get("remove_duplicates")
    if isinstance(remove, list):
        missing = [m for m in remove if m not in config["dedup"]["modes"]]
        if missing:
            problems.append(f"dedup.remove_duplicates: modes {missing} are not in dedup.modes "
                            f"{config['dedup']['modes']} (they would match nothing)")
    if "embedding" in config["dedup"]["modes"]:
        problems += _embedding_problems(config)
    train_keys = dict(load_schema()["properties"]["train"]["properties"])
    del train_keys["overrides"]
    settings = jsonschema.Draft202012Validator({"type": "object", "properties": train_keys})
    for i, over in enumerate(config["train"].get("overrides", [])):
        unknown = set(over) - set(train_keys) - {"model", "scale", "samples_seen", "schedule"}
        if unknown:
            problems.append(f"train.overrides[{i}]: unknown keys {sorted(unknown)}")
        for e in settings.iter_errors(over):
            problems.append(f"train.overrides[{i}].{_where(e)}: {e.message}")
        if "model" in over and over["model"] not in models:
            problems.append(f"train.overrides[{i}].model: {over['model']!r} is not a model")
        if "scale" in over and over["scale"] not in scales:
            problems.append(f"train.overrides[{i}].scale: {over['scale']!r} is not a scale")
        if "samples_seen" in over:
            _count(over["samples_seen"], f"train.overrides[{i}].samples_seen", problems)
    for name, spec in config["downstream"].items():
        if "path" not in spec:
            problem = unmade_set_problem(config, name)
            if problem:
                problems.append(f"downstream.{name}: no path given: {problem}")
    from clipscale.table import main_set_problems, set_groups

    problems += main_set_problems(config)
    for name, spec in config["downstream"].items():
        for g in set_groups(spec):
            if g in config["downstream"]:
                problems.append(f"downstream.{name}.group: {g!r} is also a downstream set's name "
                                f"(the results table would hold the set, not the group's mean)")
    if config["pool"]["source"] == "world":
        pool_size = config["world"]["pool_size"]  # filled from the schema's default
        for name, size in scales.items():
            if size > pool_size:
                problems.append(f"scales.{name}: {size} samples > world.pool_size {pool_size}")
        world = config["world"]
        if world["caption_noise"] + world["short_captions"] > 1:
            problems.append(f"world: caption_noise {world['caption_noise']} + short_captions "
                            f"{world['short_captions']} > 1 (they are shares of the captions)")
    predictions = config["fit"].get("predictions", [])
    if predictions:
        from clipscale.reference import gmac_lookup

        known = set(models) | {m["label"] for m in models.values() if m.get("label")} | set(gmac_lookup())
        for i, pred in enumerate(predictions):
            _count(pred["samples_seen"], f"fit.predictions[{i}].samples_seen", problems)
            if pred["model"] not in known:
                problems.append(
                    f"fit.predictions[{i}].model: {pred['model']!r} is neither a model of the config nor "
                    f"of the paper's Table 25 (its GMAC per sample is unknown: the fit would skip it)")
    problems += _comparison_problems(config)
    problems += _report_problems(config)
    problems += released.problems(config)
    from clipscale.models import problems as model_problems

    problems += model_problems(config)
    if not problems:
        problems += _run_problems(config)
    from clipscale.finetune.plan import problems as finetune_problems

    return problems + finetune_problems(config)


def _report_problems(config: dict) -> list[str]:
    """train.report_to (or an override's) naming wandb where the wandb package is missing: every
    training job would fail at its start."""
    import importlib.util

    train = config.get("train", {})
    wanted = [("train.report_to", train.get("report_to") or [])] + [
        (f"train.overrides[{i}].report_to", o.get("report_to") or [])
        for i, o in enumerate(train.get("overrides") or [])]
    return [f"{key}: wandb needs the wandb package (pip install wandb), which is not installed"
            for key, names in wanted if "wandb" in names and importlib.util.find_spec("wandb") is None]


def _name_problems(config: dict) -> list[str]:
    """Names that would collide: a model, scale or set name of dots only ("." or "..": a folder
    of results/ would be its parent's or another run's), two models with one label (one line
    and one row in the figures and the results table), two scales of one size (one subset)."""
    problems = []
    for kind in ("models", "scales", "downstream"):
        for name in config[kind]:
            if not name.strip("."):
                problems.append(f"{kind}: {name!r} cannot name a folder (results/.../{name}/ is another "
                                f"folder); give it a name with a letter or digit")
    shown: dict[str, str] = {}
    for name, spec in config["models"].items():
        label = spec.get("label") or name
        if label in shown:
            problems.append(f"models.{name}.label: {label!r} is also models.{shown[label]}'s label (or "
                            f"name): figures and the results table would merge the two models")
        else:
            shown[label] = name
    sizes: dict[int, str] = {}
    for name, size in config["scales"].items():
        if size in sizes:
            problems.append(f"scales.{name}: {size} samples, as scales.{sizes[size]}: the same subset "
                            f"twice (give each scale its own size)")
        else:
            sizes[size] = name
    return problems


def _comparison_problems(config: dict) -> list[str]:
    """A side of fit.comparisons naming runs of a schedule the grid does not run (e.g. source
    ours, the cosine runs, with grid.schedules [const-cooldown]): it would compare nothing."""
    from clipscale import grid

    made = grid.sources(config)
    problems = []
    for i, spec in enumerate(config["fit"].get("comparisons") or []):
        for side in ("a", "b"):
            source = spec[side]["source"]
            if source in grid.SCHEDULE_OF_SOURCE and source not in made:
                problems.append(
                    f"fit.comparisons[{i}].{side}.source: {source!r} are the "
                    f"{grid.SCHEDULE_OF_SOURCE[source]} runs, and grid.schedules {list(config['grid']['schedules'])} makes none (its runs: "
                    f"{', '.join(repr(s) for s in made)})")
    return problems


MAX_COOLDOWN_EPOCHS = 10_000  # a const-cooldown family's virtual epochs (open_clip logs and saves per epoch)


def _run_problems(config: dict) -> list[str]:
    """Per run (overrides applied): fewer samples per checkpoint than one global batch
    (open_clip_train cannot run it; clipscale.train.open_clip_args refuses it), and a walltime
    warning that would not come inside the walltime (reported once)."""
    from clipscale import grid

    labels = {parse_count(v): v for v in config["grid"]["samples_seen"]}
    train = config["train"]
    problems, walltime = [], None
    for run in grid.runs(config):
        try:
            hp = grid.hparams(config, run)
        except ConfigError as e:
            problems.append(f"grid.schedules: {e}")
            continue
        if run.schedule == grid.CONST_COOLDOWN:
            if hp["train_num_samples"] < hp["global_batch_size"] or hp["epochs"] > MAX_COOLDOWN_EPOCHS:
                problems.append(
                    f"grid.schedules: const-cooldown: {run.name}'s runs share virtual epochs of "
                    f"{hp['train_num_samples']} samples (the greatest common divisor of every branch "
                    f"point and cooldown length, train.cooldown.fraction {hp['cooldown']['fraction']}), "
                    f"{hp['epochs']} of them; it needs at least one global batch "
                    f"({hp['global_batch_size']}) and at most {MAX_COOLDOWN_EPOCHS} epochs: choose "
                    f"samples_seen and a fraction with a larger common divisor (e.g. 10k, 30k, 90k and 0.2)")
            continue
        if walltime is None and hp["signal_lead_s"] >= hp["runtime"] * 60:
            walltime = (f"train.signal_lead_s: {hp['signal_lead_s']} s is not less than {run.name}'s walltime "
                        f"train.runtime {hp['runtime']} min: the job would stop before training")
        if hp["train_num_samples"] >= hp["global_batch_size"]:
            continue
        keys = ("checkpoints", "batch_size", "nproc", "nodes", "accum_freq")
        overridden = " after train.overrides" if any(hp[k] != train[k] for k in keys) else ""
        problems.append(
            f"grid.samples_seen: {labels[run.samples_seen]}: {run.name} has {hp['train_num_samples']} "
            f"samples per checkpoint ({run.samples_seen} / train.checkpoints {hp['checkpoints']}), less "
            f"than one global batch of {hp['global_batch_size']} (train.batch_size {hp['batch_size']} x "
            f"train.nproc {hp['nproc']} x train.nodes {hp['nodes']} x train.accum_freq {hp['accum_freq']}){overridden}; "
            f"raise samples_seen or "
            f"lower train.checkpoints or the batch")
    return problems + ([walltime] if walltime else [])


def path_problems(config: dict) -> list[str]:
    """Every configured path, checked cheaply (existence, a few named files, a directory scan that
    stops at the first .tar): pool.source, the downstream sets' folders, finetune.sets' folders,
    evaluate.released."""
    from clipscale import released

    problems = []
    source = config["pool"]["source"]
    if source != "world":
        problem = _folder_problem(Path(source)) or (
            None if _has_tar(Path(source)) else " has no .tar shards (img2dataset's NNNNN.tar)")
        if problem:
            problems.append(f"pool.source: {source}{problem}")
    for name, spec in config["downstream"].items():
        if "path" in spec:
            problems += [f"downstream.{name}.path: {spec['path']}{p}" for p in downstream_problems(spec)]
    from clipscale.finetune import plan as finetune_plan

    return problems + finetune_plan.path_problems(config) + released.path_problems(config)


def _folder_problem(path: Path) -> str | None:
    if not path.exists():
        return " does not exist"
    if not path.is_dir():
        return " is not a directory"
    return None


def _has_tar(folder: Path) -> bool:
    """Whether a folder holds a .tar file; stops at the first one (a pool may hold 10^5 shards)."""
    with os.scandir(folder) as entries:
        return any(e.name.endswith(".tar") for e in entries)


def downstream_problems(spec: dict) -> list[str]:
    """What a downstream set's folder (``spec["path"]``) lacks for its tasks, each as the end of a
    sentence about the folder: clip_benchmark's webdataset layout (``wds/...`` sets, written by
    clipscale.world) is test/ (and train/ for linear_probe) with nshards.txt and {0..n-1}.tar,
    classnames.txt and zeroshot_classification_templates.txt for zero-shot classification,
    dataset_type.txt saying retrieval for retrieval; dedup hashes the test/ split's .tar shards."""
    root = Path(spec["path"])
    problem = _folder_problem(root)
    if problem:
        return [problem]
    tasks = spec["tasks"]
    wds = spec.get("benchmark_name", "wds/").startswith("wds/")
    splits = {}
    if wds or spec.get("dedup", True):
        splits["test"] = ""
    if wds and "linear_probe" in tasks:
        splits["train"] = " (linear_probe needs it)"
    out = []
    for split, why in splits.items():
        folder = root / split
        if not folder.is_dir() or not _has_tar(folder):
            out.append(f" has no {split}/ split with .tar shards{why}")
        elif wds and (nshards := _nshards_problems(folder, split)):
            out += nshards
        elif _empty_split(folder):
            out.append(f" has an empty {split}/ split (its .tar shards hold no sample){why}")
    if not wds:
        return out
    kind_file = root / "dataset_type.txt"
    kind = kind_file.read_text().strip().lower() if kind_file.is_file() else "classification"
    if "zeroshot_retrieval" in tasks and kind != "retrieval":
        out.append(" is not a retrieval set (zeroshot_retrieval needs dataset_type.txt saying retrieval)")
    for task in ("zeroshot_classification", "linear_probe"):
        if task in tasks and kind == "retrieval":
            out.append(f" is a retrieval set (dataset_type.txt): no {task}")
    if "zeroshot_classification" in tasks:
        for name in ("classnames.txt", "zeroshot_classification_templates.txt"):
            if not (root / name).is_file():
                out.append(f" has no {name} (zeroshot_classification needs it)")
    return out


def _empty_split(folder: Path) -> bool:
    """Whether no .tar shard of a split holds a file (each shard read up to its first member: one
    header when the split is not empty; an unreadable shard counts as not empty, the jobs that
    read it name it)."""
    for tar in sorted(folder.glob("*.tar")):
        if tar.stat().st_size == 0:
            continue
        try:
            with tarfile.open(tar) as t:
                if t.next() is not None:
                    return False
        except (tarfile.TarError, OSError):
            return False
    return True


def _nshards_problems(folder: Path, split: str) -> list[str]:
    """clip_benchmark reads {split}/nshards.txt and then {split}/{0..n-1}.tar; the first and the
    last shard are checked (evaluate checks them all when it runs)."""
    nshards = folder / "nshards.txt"
    if not nshards.is_file():
        return [f" has no {split}/nshards.txt (clip_benchmark's webdataset layout)"]
    try:
        n = int(nshards.read_text().strip())
    except ValueError:
        return [f": {split}/nshards.txt does not hold a number of shards"]
    if n < 1:
        return [f": {split}/nshards.txt says {n} shards"]
    for i in sorted({0, n - 1}):
        if not (folder / f"{i}.tar").is_file():
            return [f": {split}/nshards.txt says {n} shards, {split}/{i}.tar is missing"]
    return []


def load(path: str | Path, overrides: dict | None = None, *, check_paths: bool = False) -> dict:
    """Read a YAML config file, apply overrides (nested dict merge), validate."""
    path = Path(path)
    config = read_yaml(path)
    if not isinstance(config, dict):
        raise ConfigError(f"config file {path} must hold a mapping, found {type(config).__name__}")
    if overrides:
        config = merge(config, overrides)
    return validate(config, source=str(path), check_paths=check_paths)


def read_yaml(path: str | Path):
    """A YAML config file's content; a key given twice in one mapping is refused (YAML loaders
    keep the last one silently). The Snakefile reads every --configfile through it too: Snakemake
    loads them with its own loader."""
    path = Path(path)
    try:
        text = path.read_text()
        content = yaml.safe_load(text)
        twice = duplicate_keys(text)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if twice:
        raise ConfigError(f"invalid config {path}:\n" + "\n".join(f"  - {d}" for d in twice))
    return content


def duplicate_keys(text: str) -> list[str]:
    """Each key given twice in one mapping of a YAML text, as its dotted key and lines."""
    out: list[str] = []
    seen: set[int] = set()

    def walk(node, where: str) -> None:
        if id(node) in seen:  # an alias: its anchor was walked
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            lines: dict = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                if name is not None and name != "<<":
                    if name in lines:
                        out.append(f"{where}{name}: given twice (lines {lines[name]} and "
                                   f"{key.start_mark.line + 1}; YAML would keep the last silently)")
                    lines.setdefault(name, key.start_mark.line + 1)
                walk(value, f"{where}{name}.")
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{where.rstrip('.')}[{i}].")

    for document in yaml.compose_all(text, Loader=yaml.SafeLoader):
        walk(document, "")
    return out


def merge(base: dict, extra: dict) -> dict:
    """Recursive dict merge; ``extra`` wins; lists are replaced, not appended."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out

