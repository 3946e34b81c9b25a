"""The evaluation's subcommands of ``clipscale``: evaluate, aggregate-results, eval-targets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from clipscale import config as config_mod
from clipscale import grid, paths, table
from clipscale.config import ConfigError
from clipscale.evaluate.aggregate import aggregate
from clipscale.evaluate.benchmark import EvaluationError, UpstreamChanged
from clipscale.evaluate import imports
from clipscale.evaluate.job import evaluate_checkpoint, unused_imports
from clipscale.evaluate.plan import FINAL, SOURCES, TASKS, dataset_tasks, target_paths


def _load_config(a) -> dict:
    if a.config_json:
        return config_mod.validate(json.loads(Path(a.config_json).read_text()), a.config_json)
    from clipscale import checks  # every domain's checks, as check-config

    return checks.load(a.config)


def _add_config(p) -> None:
    p.add_argument("--config", default="config/config.yaml", help="config YAML (validated)")
    p.add_argument("--config-json", help="the resolved config as JSON (instead of --config)")


def _reported(func):
    """A command that prints a clear error (no traceback) and exits 1 on a known failure."""
    def wrapper(a) -> int:
        try:
            return func(a)
        except (ConfigError, EvaluationError, UpstreamChanged, table.TableError, KeyError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return wrapper


@_reported
def _cmd_run(a) -> int:
    cfg = _load_config(a)
    if a.epoch is None:
        a.epoch = FINAL if a.source == "released" else str(
            grid.hparams(cfg, grid.find_run(cfg, a.model, a.scale, a.samples))["epochs"])
    if a.dataset or a.task:  # one set (and task) only: a config with just that
        cfg = {**cfg, "downstream": {name: {**spec, "tasks": [t for t in spec["tasks"] if not a.task or t == a.task]}
                                     for name, spec in cfg["downstream"].items() if not a.dataset or name == a.dataset}}
        if not dataset_tasks(cfg):
            raise ConfigError(f"no downstream set {a.dataset or ''} with task {a.task or ''} in the config")
    checkpoint = {"source": a.source, "model": a.model, "scale": a.scale, "samples": a.samples, "epoch": str(a.epoch)}
    # this process is one evaluation: the optional packages its model and sets never use stay out
    imports.keep_out(unused_imports(cfg, checkpoint, a.run_record))
    results = evaluate_checkpoint(cfg, checkpoint, run_record=a.run_record, threads=a.threads, device=a.device)
    print(json.dumps({f"{d} {t}": {"status": r["status"], "metrics": r["metrics"], "failures": r["failures"]}
                      for (d, t), r in results.items()}, indent=1))
    return 0


@_reported
def _cmd_aggregate(a) -> int:
    cfg = _load_config(a)
    files = a.files or target_paths(cfg)
    aggregate(cfg, files, a.table, a.csv, a.log)
    return 0


@_reported
def _cmd_targets(a) -> int:
    for path in target_paths(_load_config(a)):
        print(path)
    return 0


_NAMES = {"run": "evaluate", "aggregate": "aggregate-results", "targets": "eval-targets"}


def add_commands(subparsers) -> None:
    """Subcommands of ``clipscale``: evaluate, aggregate-results, eval-targets."""
    name = _NAMES.__getitem__
    p = subparsers.add_parser(name("run"), help="evaluate one checkpoint on the configured downstream sets")
    _add_config(p)
    p.add_argument("--source", choices=SOURCES, default="ours")
    p.add_argument("--model", required=True)
    p.add_argument("--scale", required=True, help="our scale, or a released checkpoint's Data (2B)")
    p.add_argument("--samples", required=True, help="samples seen label, e.g. 16k or 34B")
    p.add_argument("--epoch", default=None, help="checkpoint epoch (ours; default: the last), "
                                                  f"{FINAL!r} for released checkpoints")
    p.add_argument("--dataset", help="only this downstream set (default: all of the config)")
    p.add_argument("--task", choices=TASKS, help="only this task (default: all of each set)")
    p.add_argument("--run-record", help="run.json of the run (default: its place under results/)")
    p.add_argument("--threads", type=int)
    p.add_argument("--device", choices=["cpu", "cuda"])
    p.set_defaults(func=_cmd_run)

    p = subparsers.add_parser(name("aggregate"), help="collect evaluation results into the tidy results table")
    _add_config(p)
    p.add_argument("files", nargs="*", help="result files (default: every evaluation of the config)")
    p.add_argument("--table", default=paths.RESULTS_TABLE)
    p.add_argument("--csv", default=paths.RESULTS_CSV)
    p.add_argument("--log", default=paths.RESULTS_LOG)
    p.set_defaults(func=_cmd_aggregate)

    p = subparsers.add_parser(name("targets"), help="list the result files of every evaluation of the config")
    _add_config(p)
    p.set_defaults(func=_cmd_targets)
