# Config validation (before any job) and the helpers every rule file uses.
import os
from pathlib import Path

from clipscale import config as cs_config
from clipscale import grid, paths, shaping, stopping
from clipscale.world import WorldSpec

# A bad config stops here, before any job is scheduled. One validator, the one `clipscale
# check-config` calls: the JSON schema (src/clipscale/schemas/config.schema.yaml, defaults filled
# in), the cross-references a schema cannot express, and every configured path (relative to the
# working directory); every problem as a dotted key, naming the config files.
_CONFIG_SOURCE = (
    " + ".join(
        [str(f) for f in workflow.configfiles]
        + (["--config"] if workflow.config_settings.config else [])
    )
    or "config"
)
try:
    cs_config.validate(config, source=_CONFIG_SOURCE, check_paths=True)
except cs_config.ConfigError as error:
    raise WorkflowError(str(error)) from None

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


onstart:
    # a SIGINT/SIGTERM to snakemake stops running training within seconds (Snakemake's local
    # executor would wait for it): clipscale.stopping
    stopping.forward_to_launchers(
        os.path.join(".snakemake", "clipscale", "launchers")
    )
