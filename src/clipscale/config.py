"""The configuration: one JSON schema, loading, validation with defaults, and clear errors.

The same code validates the config in the Snakefile (before any job is scheduled) and in
``clipscale check-config``: a wrong key or value names the file, the key and what is wrong.
"""

from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(str(resources.files("clipscale") / "schemas" / "config.schema.yaml"))

_SUFFIX = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9}


class ConfigError(ValueError):
    """A config that does not describe a runnable study."""


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


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


def validate(config: dict, source: str = "config") -> dict:
    """Validate ``config`` in place against the schema, fill defaults, check cross-references.

    Returns the config. Raises ConfigError naming ``source``, the key and the problem.
    """
    validator = _DefaultFillingValidator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  - {_where(e)}: {e.message}" for e in errors[:20]]
        raise ConfigError(f"invalid config {source}:\n" + "\n".join(lines))
    problems = cross_check(config)
    if problems:
        raise ConfigError(
            f"invalid config {source}:\n" + "\n".join(f"  - {p}" for p in problems)
        )
    return config


def cross_check(config: dict) -> list[str]:
    """Checks that a JSON schema cannot express: names that must refer to each other."""
    problems = []
    grid = config["grid"]
    for model in grid["models"]:
        if model not in config["models"]:
            problems.append(f"grid.models: {model!r} is not defined under models")
    for scale in grid["scales"]:
        if scale not in config["scales"]:
            problems.append(f"grid.scales: {scale!r} is not defined under scales")
    for value in grid["samples_seen"]:
        try:
            parse_count(value)
        except ConfigError as e:
            problems.append(f"grid.samples_seen: {e}")
    train_keys = set(load_schema()["properties"]["train"]["properties"]) - {"overrides"}
    for i, over in enumerate(config["train"].get("overrides", [])):
        unknown = set(over) - train_keys - {"model", "scale", "samples_seen"}
        if unknown:
            problems.append(f"train.overrides[{i}]: unknown keys {sorted(unknown)}")
        if "model" in over and over["model"] not in config["models"]:
            problems.append(f"train.overrides[{i}].model: {over['model']!r} is not a model")
        if "scale" in over and over["scale"] not in config["scales"]:
            problems.append(f"train.overrides[{i}].scale: {over['scale']!r} is not a scale")
    if config["pool"]["source"] == "world":
        from clipscale.world import DOWNSTREAM_SETS

        for name, spec in config["downstream"].items():
            if "path" not in spec and name not in DOWNSTREAM_SETS:
                problems.append(
                    f"downstream.{name}: no path given and the world makes no set of that name "
                    f"(it makes {sorted(DOWNSTREAM_SETS)})"
                )
    else:
        for name, spec in config["downstream"].items():
            if "path" not in spec:
                problems.append(f"downstream.{name}: needs a path (pool.source is not 'world')")
    sizes = config["scales"]
    if config["pool"]["source"] == "world":
        pool_size = config["world"]["pool_size"]  # filled from the schema's default
        for name, size in sizes.items():
            if size > pool_size:
                problems.append(f"scales.{name}: {size} samples > world.pool_size {pool_size}")
    for i, pred in enumerate(config["fit"].get("predictions", [])):
        try:
            parse_count(pred["samples_seen"])
        except ConfigError as e:
            problems.append(f"fit.predictions[{i}].samples_seen: {e}")
    return problems


def load(path: str | Path, overrides: dict | None = None) -> dict:
    """Read a YAML config file, apply overrides (nested dict merge), validate."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"config file {path} must hold a mapping, found {type(config).__name__}")
    if overrides:
        config = merge(config, overrides)
    return validate(config, source=str(path))


def merge(base: dict, extra: dict) -> dict:
    """Recursive dict merge; ``extra`` wins; lists are replaced, not appended."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out

