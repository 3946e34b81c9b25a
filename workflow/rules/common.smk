# Config validation (before any job) and the helpers every rule file uses.
import os
from pathlib import Path

from snakemake.utils import validate

from clipscale import config as cs_config
from clipscale import grid, paths
from clipscale.world import WorldSpec

# A bad config stops here, before any job is scheduled: clipscale's validation against the one
# schema (every error, as dotted keys, naming the config files) with its cross-reference checks,
# then Snakemake's own validation against the same schema (the convention; fills defaults too).
_CONFIG_SOURCE = (
    " + ".join(
        [str(f) for f in workflow.configfiles]
        + (["--config"] if workflow.config_settings.config else [])
    )
    or "config"
)
try:
    cs_config.validate(config, source=_CONFIG_SOURCE)
except cs_config.ConfigError as error:
    raise WorkflowError(str(error)) from None
validate(config, str(cs_config.SCHEMA_PATH))

RUNS = grid.runs(config)
USE_WORLD = config["pool"]["source"] == "world"


wildcard_constraints:
    model="[^/]+",
    scale="[^/]+",
    samples="[0-9.]+[kMBG]?",
    dataset="[^/]+",
    epoch="[0-9]+",
    group="[0-9]+",


def pool_shards():
    """The pool's tar shards: made by the world generator, or found in the user's directory."""
    if USE_WORLD:
        spec = WorldSpec.from_config(config)
        return [f"{paths.WORLD_POOL}/{i:05d}.tar" for i in range(spec.n_shards)]
    folder = Path(config["pool"]["source"])
    shards = sorted(str(p) for p in folder.glob("*.tar"))
    if not shards:
        raise WorkflowError(f"pool.source {folder}: no .tar shards found")
    return shards


def downstream_dir(dataset):
    return paths.downstream_dir(config, dataset)


def downstream_input(dataset):
    """What a job reading a downstream set waits for (the world, or nothing for user sets)."""
    return [paths.WORLD_DONE] if "path" not in config["downstream"][dataset] else []


def log_path(rule_name, *parts):
    return os.path.join(paths.LOGS, rule_name, *parts) + ".log"


def bench_path(rule_name, *parts):
    return os.path.join(paths.BENCHMARKS, rule_name, *parts) + ".tsv"
