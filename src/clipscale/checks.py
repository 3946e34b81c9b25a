"""Every check of a config, composed: the one validator of the Snakefile (before any job is
scheduled) and of ``clipscale check-config``.

The layers: ``clipscale.config`` at the bottom reads a config and checks it against the JSON schema
(filling defaults); each domain checks its own settings next to the code that uses them
(``grid.problems``, ``world.problems``, ``table.problems``, ``reference.problems``,
``released.problems``, ``models.problems``, ``dedup.problems``, ``finetune.plan.problems``), and the
folders a config points at (``inputs``, ``released`` and ``finetune.plan``'s ``path_problems``);
this module, above them all, runs them in one pass and refuses the config with every problem
listed, each naming its dotted key. A new check goes into its domain's ``problems``; only a new
domain adds a line here.
"""

from __future__ import annotations

from pathlib import Path

from clipscale import config as config_mod
from clipscale import dedup, grid, inputs, models, reference, released, table, world
from clipscale.config import ConfigError
from clipscale.finetune import plan as finetune_plan

__all__ = ["ConfigError", "load", "path_problems", "problems", "validate"]


def problems(config: dict) -> list[str]:
    """Every domain's problems with a config that the schema accepted (defaults filled); the
    filesystem is not read."""
    out = (grid.problems(config) + dedup.problems(config) + world.problems(config) + table.problems(config)
           + reference.problems(config) + released.problems(config) + models.problems(config))
    if not out:  # per run: needs names, counts and overrides that resolve
        out += grid.run_problems(config)
    return out + finetune_plan.problems(config)


def path_problems(config: dict) -> list[str]:
    """Every configured path, checked cheaply: pool.source and the downstream sets' folders,
    finetune.sets' folders, evaluate.released."""
    return inputs.path_problems(config) + finetune_plan.path_problems(config) + released.path_problems(config)


def validate(config: dict, source: str = "config", *, check_paths: bool = False) -> dict:
    """Validate ``config`` in place: the schema (``config.validate``, which fills defaults), then
    every domain's checks and, with ``check_paths``, that every configured path exists with the
    layout clipscale reads (relative paths from the working directory).

    Returns the config. Raises ConfigError naming ``source``, the dotted key and the problem.
    """
    config_mod.validate(config, source)
    found = problems(config)
    if check_paths:
        found += path_problems(config)
    config_mod.refuse(found, source)
    return config


def load(path: str | Path, overrides: dict | None = None, *, check_paths: bool = False) -> dict:
    """Read a YAML config file, apply overrides (nested dict merge), validate it whole."""
    config = config_mod.load(path, overrides)
    found = problems(config) + (path_problems(config) if check_paths else [])
    config_mod.refuse(found, str(path))
    return config
