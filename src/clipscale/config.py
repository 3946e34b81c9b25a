"""The configuration, the package's bottom layer: one JSON schema, loading (YAML, duplicate keys,
overrides), validation against the schema with its defaults filled (per section too), counts
("24k", "3B") and clear errors. It imports no other clipscale module.

The checks that the schema cannot express belong to the domain that uses the settings
(``grid.problems``, ``world.problems``, ``dedup.settings.problems``...); ``clipscale.checks``
composes them with this module's ``validate`` for the Snakefile (before any job is scheduled) and
``clipscale check-config``: a wrong key, value or path names the file, the dotted key and what is
wrong.
"""

from __future__ import annotations

import copy
import re
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


def dotted(error: jsonschema.ValidationError) -> str:
    """The dotted key of a schema error ("train.lr"; "(top level)")."""
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def validate(config: dict, source: str = "config") -> dict:
    """Validate ``config`` in place against the schema and fill its defaults: the schema's checks
    only (types, names of keys, ranges). The checks that relate settings to each other and to the
    filesystem are each domain's (``problems(config)`` next to the code that uses the settings);
    ``clipscale.checks.validate`` runs them all after this one, for the Snakefile and
    ``clipscale check-config``.

    Returns the config. Raises ConfigError naming ``source``, the dotted key and the problem.
    """
    validator = _DefaultFillingValidator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  - {dotted(e)}: {e.message}" for e in errors[:20]]
        raise ConfigError(f"invalid config {source}:\n" + "\n".join(lines))
    return config


def refuse(problems: list[str], source: str = "config") -> None:
    """Raise the ConfigError listing ``problems`` (each a sentence starting with its dotted key),
    if there is any."""
    if problems:
        raise ConfigError(f"invalid config {source}:\n" + "\n".join(f"  - {p}" for p in problems))


def checked_count(value, key: str, problems: list[str]) -> int | None:
    """parse_count of a configured count, or None with the problem (naming ``key``) appended."""
    try:
        n = parse_count(value)
    except ConfigError as e:
        problems.append(f"{key}: {e}")
        return None
    if n < 1:
        problems.append(f"{key}: {value!r} is {n} samples")
        return None
    return n


def load(path: str | Path, overrides: dict | None = None) -> dict:
    """Read a YAML config file, apply overrides (nested dict merge), validate against the schema
    and fill defaults (``clipscale.checks.load`` adds every domain's checks)."""
    path = Path(path)
    config = read_yaml(path)
    if not isinstance(config, dict):
        raise ConfigError(f"config file {path} must hold a mapping, found {type(config).__name__}")
    if overrides:
        config = merge(config, overrides)
    return validate(config, source=str(path))


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

