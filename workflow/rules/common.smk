# Config validation (before any job) and the helpers every rule file uses.
import os

from clipscale import checks as cs_checks
from clipscale import config as cs_config
from clipscale import dedup as cs_dedup
from clipscale import models as cs_models
from clipscale import grid, paths, shaping, stopping
from clipscale import resources as cs_resources
from clipscale.world import WorldSpec

# A bad config stops here, before any job is scheduled. One validator, the one `clipscale
# check-config` calls (clipscale.checks): the JSON schema (src/clipscale/schemas/config.schema.yaml,
# defaults filled in), every domain's checks of its settings, and every configured path (relative
# to the working directory); every problem as a dotted key, naming the config files. Each config file
# is read again by clipscale's loader too, which refuses a key given twice (Snakemake's keeps the
# last one silently).
_CONFIG_SOURCE = (
    " + ".join(
        [str(f) for f in workflow.configfiles]
        + (["--config"] if workflow.config_settings.config else [])
    )
    or "config"
)
try:
    for _file in workflow.configfiles:
        cs_config.read_yaml(_file)
    cs_checks.validate(config, source=_CONFIG_SOURCE, check_paths=True)
except cs_config.ConfigError as error:
    raise WorkflowError(str(error)) from None

RUNS = grid.runs(config)

# A site's slurm_extra for the training rules (a profile's set-resources) replaces the
# pipeline's: refused here, naming what it lacks, unless it keeps the walltime warning, the
# requeue and the appended log (clipscale.resources.site_slurm_extra_problems).
_site_problems = cs_resources.site_slurm_extra_problems(
    workflow.resource_settings.overwrite_resources or {}, config
)
if _site_problems:
    raise WorkflowError("\n".join(_site_problems))

# In a Slurm job the walltime warning (SIGUSR1, sbatch --signal) reaches this process too: it
# is for the training processes, which save their place and stop (clipscale.stopping).
stopping.ignore_walltime_warning()


USE_WORLD = config["pool"]["source"] == "world"


wildcard_constraints:
    model="[^/]+",
    scale="[^/]+",
    samples="[0-9.]+[kMBG]?(-cooldown)?(-seed[1-9][0-9]*)?",
    dataset="[^/]+",
    epoch="[0-9]+",
    group="[0-9]+",


_POOL_SHARDS = []
_POOL_STATS = {}  # shard -> (size, mtime_ns), stat-ed once per parse


def pool_shards():
    """The pool's tar shards: made by the world generator, or found in the user's directory
    (listed once per parse: one directory read, no stat per shard)."""
    if not _POOL_SHARDS:
        if USE_WORLD:
            spec = WorldSpec.from_config(config)
            shards = [f"{paths.WORLD_POOL}/{i:05d}.tar" for i in range(spec.n_shards)]
        else:
            shards = cs_dedup.list_shards(config["pool"]["source"])
        if not shards:
            raise WorkflowError(
                f"pool.source {config['pool']['source']}: no .tar shards found"
            )
        _POOL_SHARDS.extend(shards)
    return _POOL_SHARDS


def pool_dir():
    return paths.WORLD_POOL if USE_WORLD else config["pool"]["source"]


def pool_input(shards):
    """What a job reading these pool shards lists as input files: the embedded world's shards
    (make_world's outputs); nothing for a user's pool, which is external data followed by
    pool_stamp: 10^5 shards as input files would cost Snakemake minutes per DAG."""
    return list(shards) if USE_WORLD else []


def pool_stamp(shards):
    """A param that changes when one of these shards of a user's pool is added, removed or
    rewritten (its path, size, mtime), so that Snakemake reruns the job (params trigger); ""
    for the world, whose shards are input files."""
    return "" if USE_WORLD else cs_dedup.shards_stamp(shards, cache=_POOL_STATS)


def downstream_dir(dataset):
    return paths.downstream_dir(config, dataset)


def downstream_input(dataset):
    """What a job reading a downstream set waits for (the world, or nothing for user sets)."""
    return [paths.WORLD_DONE] if "path" not in config["downstream"][dataset] else []


def log_path(rule_name, *parts):
    return paths.log_file(rule_name, *parts)


def bench_path(rule_name, *parts):
    return paths.benchmark_file(rule_name, *parts)


onstart:
    # a SIGINT/SIGTERM to snakemake stops running training within seconds (Snakemake's local
    # executor would wait for it): clipscale.stopping
    stopping.forward_to_launchers(
        os.path.join(".snakemake", "clipscale", "launchers")
    )
    # on a cluster (the executor is known only now, not while the rules are parsed), a training
    # job may be resubmitted as many times as a run of the grid is expected to need walltime
    # windows, for a site where a job cannot requeue itself (clipscale.resources.train_retries)
    if workflow.non_local_exec:
        for _name in ("train", "train_segment"):
            _rule = workflow.get_rule(_name)
            _rule.restart_times = max(
                _rule.restart_times or 0, cs_resources.train_retries(config)
            )
