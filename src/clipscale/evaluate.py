"""Evaluation of checkpoints with clip_benchmark, and the tidy results table.

One evaluation = one checkpoint x one downstream set x one task (zeroshot_classification,
zeroshot_retrieval, linear_probe), written to ``paths.EVAL`` as JSON. It runs clip_benchmark's
own command line code (``clip_benchmark.cli.main_eval``, parsed by its own argument parser) in this
process, after the config's custom model configs are registered with open_clip: its metrics, its
dataset loaders, its linear probe. A linear-probe job runs every ``evaluate.linear_probe_k``
(``full`` = every training sample) on features cached under ``paths.EVAL_FEATURES``.

Checkpoints: our runs' final checkpoints (every epoch with ``evaluate.all_checkpoints``), and
checkpoints released with the paper (``evaluate.released``, see ``clipscale.released``).

CPU: clip_benchmark's linear probe asserts CUDA and calls ``.cuda()``. On CPU this module runs a
copy of that code with exactly those lines changed (see ``CPU_LINEAR_PROBE_PATCHES``), built at run
time from the installed file; nothing installed is edited, and if upstream's lines change the
patch fails with ``UpstreamChanged`` instead of running something else.

Failures: an evaluation that cannot give a number (a checkpoint missing or unreadable, too few
training samples for a k-shot probe) is written to its result file with the reason, and the
aggregation lists it in ``paths.RESULTS_LOG``; a missing or unreadable result file is listed
there too, and never stops the aggregation. Anything else (a bug, a broken downstream set, an
upstream change) fails the job.

Command line::

    python -m clipscale.evaluate run --config config/config.yaml --source ours --model vit-s \\
        --scale 12k --samples 16k --epoch 4 --dataset shapes --task zeroshot_classification
    python -m clipscale.evaluate aggregate --config config/config.yaml
    python -m clipscale.evaluate targets --config config/config.yaml
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import math
import shutil
import sys
import tempfile
import time
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator
from unittest import mock

import pandas as pd

from clipscale import config as config_mod
from clipscale import grid, models, paths, released, table
from clipscale.config import ConfigError, format_count

log = logging.getLogger("clipscale.evaluate")

TASKS = table.TASKS
SOURCES = ("ours", "released")
FINAL = "final"  # the {epoch} of a released checkpoint (its epoch is read from the file)
RESULT_FORMAT = 1


class EvaluationError(RuntimeError):
    """An evaluation that cannot give a result; recorded in its result file and the results log."""


class UpstreamChanged(RuntimeError):
    """clip_benchmark no longer has the code that clipscale calls or patches."""


# -------------------------------------------------------------------------------------------------
# what to evaluate


@dataclass(frozen=True, order=True)
class Target:
    """One evaluation: the wildcards of ``paths.EVAL``."""

    source: str
    model: str
    scale: str
    samples: str
    epoch: str
    dataset: str
    task: str

    @property
    def path(self) -> str:
        return paths.fill(paths.EVAL, **asdict(self))

    @property
    def run_name(self) -> str:
        return f"{self.source} {self.model}/{self.scale}/{self.samples} epoch {self.epoch}"

    def describe(self) -> str:
        return f"{self.run_name} {self.dataset} {self.task}"


def dataset_tasks(config: dict) -> list[tuple[str, str]]:
    """(downstream set, task) pairs of the config, in config order."""
    return [(name, task) for name, spec in config["downstream"].items() for task in spec["tasks"]]


def dataset_dir(config: dict, dataset: str) -> str:
    """The clip_benchmark webdataset directory of a downstream set."""
    return paths.downstream_dir(config, dataset)


def benchmark_name(config: dict, dataset: str) -> str:
    """clip_benchmark's name of a downstream set: downstream.<name>.benchmark_name, else
    ``wds/<name>`` (a webdataset folder: the world's sets, or the set's path)."""
    return config["downstream"][dataset].get("benchmark_name") or f"wds/{dataset}"


def our_epochs(config: dict, run: grid.Run) -> list[int]:
    """Epochs of a run to evaluate: the last, or all with evaluate.all_checkpoints. From the
    schedule (grid.hparams), as the checkpoints exist only once the run is done."""
    epochs = grid.hparams(config, run)["epochs"]
    if config.get("evaluate", {}).get("all_checkpoints", False):
        return list(range(1, epochs + 1))
    return [epochs]


def checkpoint_wildcards(config: dict) -> list[dict]:
    """source, model, scale, samples, epoch of every checkpoint to evaluate."""
    out = []
    for run in grid.runs(config):
        for epoch in our_epochs(config, run):
            out.append({"source": "ours", **run.wildcards, "epoch": str(epoch)})
    for ckpt in released.checkpoints(config):
        out.append(ckpt.wildcards)
    return out


def targets(config: dict) -> list[Target]:
    """Every evaluation of the config: checkpoints x (downstream set, task)."""
    pairs = dataset_tasks(config)
    return [Target(**w, dataset=d, task=t) for w in checkpoint_wildcards(config) for d, t in pairs]


def target_paths(config: dict) -> list[str]:
    return [t.path for t in targets(config)]


def job_inputs(config: dict, source: str, model: str, scale: str, samples: str, epoch: str,
               dataset: str) -> dict[str, str]:
    """Files an evaluation job waits for: the run's run.json (ours) or the checkpoint file
    (released), and the world when it generates the downstream set (a user's set, with a path,
    is checked when the job starts)."""
    out: dict[str, str] = {}
    if source == "ours":
        run = grid.find_run(config, model, scale, samples)
        if epoch not in [str(e) for e in our_epochs(config, run)]:
            raise ConfigError(f"{run.name}: epoch {epoch} is not evaluated (epochs: "
                              f"{our_epochs(config, run)}; see evaluate.all_checkpoints)")
        out["run"] = paths.fill(paths.RUN_DONE, **run.wildcards)
    elif source == "released":
        if epoch != FINAL:
            raise ConfigError(f"released checkpoints are evaluated as epoch_{FINAL}, not {epoch}")
        out["checkpoint"] = released.find(config, model, scale, samples).path
    else:
        raise ConfigError(f"unknown source {source!r} (expected one of {list(SOURCES)})")
    if dataset not in config["downstream"]:
        raise ConfigError(f"{dataset!r} is not a downstream set of the config")
    if "path" not in config["downstream"][dataset]:
        out["world"] = paths.WORLD_DONE
    return out


# -------------------------------------------------------------------------------------------------
# the checkpoint behind an evaluation and its row metadata


@dataclass
class CheckpointInfo:
    """A checkpoint and what the results table says about it."""

    source: str
    model: str             # open_clip model name (registered custom model or built-in architecture)
    label: str             # model as shown in figures
    arch_id: str
    data: str
    samples_seen: int      # exact samples seen at this checkpoint
    samples_seen_label: str
    gmac_per_sample: float
    epoch: int | None
    final: bool
    path: str              # the file to load
    checkpoint: str        # the table's checkpoint column
    data_size: int | None
    extra: dict = field(default_factory=dict)

    @property
    def total_gmac(self) -> float:
        return self.gmac_per_sample * self.samples_seen


def _read_json(path: str | Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} not found") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{what} {path} is not valid JSON: {e}") from None


def our_checkpoint(config: dict, model: str, scale: str, samples: str, epoch: int | str,
                   run_record: str | Path | None = None) -> CheckpointInfo:
    """Checkpoint ``epoch`` of one of our runs, described from its run.json."""
    from clipscale.train import checkpoint_dir

    run = grid.find_run(config, model, scale, samples)
    record_path = run_record or paths.fill(paths.RUN_DONE, **run.wildcards)
    record = _read_json(record_path, f"run record of {run.name}")
    missing = [k for k in ("epochs", "train_num_samples", "samples_seen_exact", "gmac_per_sample")
               if k not in record]
    if missing:
        raise ConfigError(f"run record {record_path} lacks {missing}")
    epoch = int(epoch)
    epochs = int(record["epochs"])
    if not 1 <= epoch <= epochs:
        raise ConfigError(f"run {run.name} has epochs 1..{epochs}, not {epoch}")
    final = epoch == epochs
    path = record.get("checkpoints", {}).get(str(epoch))
    if final and record.get("final_checkpoint"):
        path = record["final_checkpoint"]
    path = str(path or checkpoint_dir(run) / f"epoch_{epoch}.pt")
    seen = int(record["samples_seen_exact"]) if final else epoch * int(record["train_num_samples"])
    spec = config["models"][model]
    return CheckpointInfo(
        source="ours", model=model, label=spec.get("label", model), arch_id=model,
        data=f"{config['pool'].get('name', 'pool')}-{scale}", samples_seen=seen,
        samples_seen_label=run.samples_label if final else format_count(seen),
        gmac_per_sample=float(record["gmac_per_sample"]), epoch=epoch, final=final, path=path,
        checkpoint=path, data_size=int(record.get("data_samples") or config["scales"][scale]),
        extra={"run_record": str(record_path), "epochs": epochs},
    )


def released_gmac(config: dict, model: str) -> float:
    """GMAC per sample of a released checkpoint's architecture (config, Table 25, or measured)."""
    if model in config.get("models", {}):
        profile = Path(paths.fill(paths.MODEL_PROFILE, model=model))
        prof = json.loads(profile.read_text()) if profile.exists() else None
        return models.gmac_per_sample(config, model, prof)
    value = models.paper_gmac(model)
    if value is not None:
        return value
    return float(models.measure_gmac(model)["gmac_per_sample"])


def released_checkpoint(config: dict, model: str, scale: str, samples: str) -> CheckpointInfo:
    ckpt = released.find(config, model, scale, samples)
    return CheckpointInfo(
        source="released", model=ckpt.model, label=ckpt.label, arch_id=ckpt.model, data=ckpt.data,
        samples_seen=ckpt.samples_seen, samples_seen_label=ckpt.name.samples_label,
        gmac_per_sample=released_gmac(config, ckpt.model), epoch=None, final=True, path=ckpt.path,
        checkpoint=ckpt.file, data_size=ckpt.name.data_size,
        extra={"lr": ckpt.name.lr, "batch_size": ckpt.batch_size,
               "samples_seen_from": ckpt.samples_seen_source, "in_table18": ckpt.table18},
    )


def checkpoint_info(config: dict, target: Target, run_record: str | Path | None = None) -> CheckpointInfo:
    if target.source == "ours":
        return our_checkpoint(config, target.model, target.scale, target.samples, target.epoch, run_record)
    if target.source == "released":
        return released_checkpoint(config, target.model, target.scale, target.samples)
    raise ConfigError(f"unknown source {target.source!r} (expected one of {list(SOURCES)})")


def table_row(info: CheckpointInfo) -> dict:
    """The results-table columns a checkpoint fixes (all but task, dataset, metric, value, error)."""
    return {"source": info.source, "model": info.label, "arch_id": info.arch_id, "data": info.data,
            "samples_seen": info.samples_seen, "samples_seen_label": info.samples_seen_label,
            "gmac_per_sample": info.gmac_per_sample, "total_gmac": info.total_gmac,
            "epoch": info.epoch, "final": info.final, "checkpoint": info.checkpoint,
            "data_size": info.data_size}


def check_checkpoint(path: str | Path) -> dict:
    """Open a checkpoint (memory-mapped: cheap for big files) to fail early on a missing or
    truncated file; returns its small metadata (epoch, name) when it has any."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"checkpoint {path} does not exist")
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to load means unusable
        raise EvaluationError(f"checkpoint {path} cannot be read: {type(e).__name__}: {e}") from None
    meta = {}
    if isinstance(ckpt, dict):
        for key in ("epoch", "name"):
            if isinstance(ckpt.get(key), (int, str)):
                meta[key] = ckpt[key]
        if "state_dict" not in ckpt and not any(hasattr(v, "shape") for v in ckpt.values()):
            raise EvaluationError(f"checkpoint {path} holds no state_dict nor tensors "
                                  f"(keys: {sorted(ckpt)[:10]})")
    return meta


# -------------------------------------------------------------------------------------------------
# clip_benchmark, in this process


def resolve_device(setting: str = "auto") -> str:
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("evaluate.device is 'cuda' but no CUDA device is visible")
    if setting not in ("cpu", "cuda"):
        raise ConfigError(f"evaluate.device: {setting!r} (expected auto, cpu or cuda)")
    return setting


#: The lines of clip_benchmark/metrics/linear_probe.py that tie it to CUDA, and their CPU
#: replacement: (upstream text, replacement, occurrences). Anything else runs as upstream wrote it.
CPU_LINEAR_PROBE_PATCHES: list[tuple[str, str, int]] = [
    ("    assert device == 'cuda' # need to use cuda for this else too slow\n",
     "    assert device == 'cpu'  # clipscale: the CPU copy of this module\n", 1),
    ("featurizer = Featurizer(model, normalize).cuda()",
     "featurizer = Featurizer(model, normalize).to(device)", 1),
    ("featurizer = torch.nn.DataParallel(featurizer, device_ids=devices)",
     "pass  # clipscale: no DataParallel on CPU", 1),
    ("    model = model.cuda()\n    model = torch.nn.DataParallel(model, device_ids=devices)\n",
     "    model = model.to(device)\n", 1),
    ("x, y = x.cuda(), y.cuda()", "x, y = x.to(device), y.to(device)", 1),
]

_CPU_MODULES: dict[str, types.ModuleType] = {}


def cpu_linear_probe_source(source: str, origin: str = "clip_benchmark/metrics/linear_probe.py") -> str:
    """clip_benchmark's linear probe source with the CPU patches applied; raises UpstreamChanged
    when a patched line is not found exactly as expected, or CUDA calls remain."""
    for old, new, count in CPU_LINEAR_PROBE_PATCHES:
        found = source.count(old)
        if found != count:
            raise UpstreamChanged(
                f"{origin} changed: expected {count} occurrence(s) of {old.strip()!r}, found {found}; "
                f"clipscale's CPU linear probe (clipscale.evaluate.CPU_LINEAR_PROBE_PATCHES) must be "
                f"updated for this clip_benchmark version (tested: 1.6.2), or evaluate on a GPU")
        source = source.replace(old, new)
    if ".cuda(" in source:
        raise UpstreamChanged(f"{origin} changed: it still calls .cuda() after clipscale's CPU "
                              f"patches; update clipscale.evaluate.CPU_LINEAR_PROBE_PATCHES")
    return source


def cpu_linear_probe() -> types.ModuleType:
    """clip_benchmark.metrics.linear_probe, made to run on CPU (a patched copy, built once)."""
    if "module" not in _CPU_MODULES:
        import clip_benchmark.metrics.linear_probe as upstream

        origin = upstream.__file__
        source = cpu_linear_probe_source(Path(origin).read_text(), origin)
        module = types.ModuleType("clip_benchmark.metrics._clipscale_cpu_linear_probe")
        module.__file__ = origin
        module.__package__ = "clip_benchmark.metrics"  # its relative imports resolve as upstream's
        exec(compile(source, f"{origin} (clipscale CPU patch)", "exec"), module.__dict__)
        if not callable(getattr(module, "evaluate", None)):
            raise UpstreamChanged(f"{origin} has no evaluate(): clip_benchmark changed")
        _CPU_MODULES["module"] = module
    return _CPU_MODULES["module"]


def _cli():
    import clip_benchmark.cli as cli

    for name in ("get_parser_args", "main_eval", "linear_probe", "run"):
        if not hasattr(cli, name):
            raise UpstreamChanged(f"clip_benchmark.cli has no {name}: clip_benchmark changed "
                                  f"(tested: 1.6.2); update clipscale.evaluate")
    return cli


@contextlib.contextmanager
def _device_context(cli, device: str) -> Iterator[None]:
    """clip_benchmark picks CUDA whenever it is visible; on CPU hide it and swap in the CPU
    linear probe, for the duration of one call."""
    import torch

    if device == "cuda":
        yield
        return
    with mock.patch.object(torch.cuda, "is_available", lambda: False), \
            mock.patch.object(cli, "linear_probe", cpu_linear_probe()):
        yield


def clip_benchmark_argv(model: str, checkpoint: str, dataset: str, root: str, task: str, output: str,
                        *, batch_size: int, workers: int, recall_k: Iterable[int],
                        fewshot_k: int, fewshot_epochs: int, fewshot_lr: float, feature_root: str,
                        seed: int, amp: bool, verbose: bool = True) -> list[str]:
    """The clip_benchmark command line of one evaluation (``clip_benchmark eval ...``);
    ``dataset`` is clip_benchmark's name of the set (``wds/<name>`` for a webdataset folder)."""
    for value, what in ((checkpoint, "checkpoint"), (output, "output"), (root, "dataset root")):
        if "{" in str(value) or "}" in str(value):
            raise ConfigError(f"{what} path {value!r} contains braces, which clip_benchmark formats")
    argv = [
        "eval", "--dataset", dataset, "--dataset_root", root, "--task", task,
        "--model", model, "--pretrained", checkpoint, "--output", output,
        "--batch_size", str(batch_size), "--num_workers", str(workers),
        "--recall_k", *[str(k) for k in recall_k],
        "--fewshot_k", str(fewshot_k), "--fewshot_epochs", str(fewshot_epochs),
        "--fewshot_lr", str(fewshot_lr), "--feature_root", feature_root, "--seed", str(seed),
    ]
    if not amp:
        argv.append("--no_amp")
    if not verbose:
        argv.append("--quiet")
    return argv


def run_clip_benchmark(argv: list[str], device: str) -> dict:
    """Parse ``argv`` with clip_benchmark's own parser and run its ``main_eval``; return the JSON
    it dumps."""
    cli = _cli()
    with mock.patch.object(sys, "argv", ["clip_benchmark", *argv]):
        _, args = cli.get_parser_args()
    output = Path(args.output)
    output.unlink(missing_ok=True)
    with _device_context(cli, device):
        cli.main_eval(args)
    if not output.exists():
        raise RuntimeError(f"clip_benchmark wrote no result ({output}); argv: {' '.join(argv)}")
    dump = json.loads(output.read_text())
    output.unlink()
    return dump


def check_downstream(root: str | Path, dataset: str, task: str) -> None:
    """Fail with a clear message on a downstream set that clip_benchmark cannot read."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"downstream set {dataset}: directory {root} does not exist")
    splits = ["test"] + (["train"] if task == "linear_probe" else [])
    for split in splits:
        nshards = root / split / "nshards.txt"
        try:
            n = int(nshards.read_text().strip())
        except FileNotFoundError:
            raise ConfigError(f"downstream set {dataset}: {nshards} not found ({task} needs the "
                              f"{split} split in clip_benchmark's webdataset layout)") from None
        except ValueError:
            raise ConfigError(f"downstream set {dataset}: {nshards} does not hold a number") from None
        missing = [str(root / split / f"{i}.tar") for i in range(n) if not (root / split / f"{i}.tar").is_file()]
        if missing:
            raise ConfigError(f"downstream set {dataset}: shards missing: {missing[:5]}")
    kind_file = root / "dataset_type.txt"
    kind = kind_file.read_text().strip().lower() if kind_file.exists() else "classification"
    if task == "zeroshot_retrieval" and kind != "retrieval":
        raise ConfigError(f"downstream set {dataset}: zeroshot_retrieval needs dataset_type.txt = "
                          f"retrieval (found {kind!r} in {root})")
    if task in ("zeroshot_classification", "linear_probe"):
        if kind == "retrieval":
            raise ConfigError(f"downstream set {dataset} is a retrieval set ({kind_file}): no {task}")
        for name in (["classnames.txt", "zeroshot_classification_templates.txt"]
                     if task == "zeroshot_classification" else []):
            if not (root / name).is_file():
                raise ConfigError(f"downstream set {dataset}: {root / name} not found ({task} needs it)")


def prepare_feature_cache(root: Path, checkpoint: str | Path) -> None:
    """Keep clip_benchmark's cached linear-probe features only if they belong to this very
    checkpoint file (size and mtime) and are complete (a killed job leaves targets_train.pt
    without targets_test.pt, which clip_benchmark would trust)."""
    st = Path(checkpoint).stat()
    stamp = {"checkpoint": str(checkpoint), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    stamp_file = root / "checkpoint.json"
    if root.exists():
        try:
            old = json.loads(stamp_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            old = None
        if old != stamp:
            log.info("feature cache %s is not of %s (%s): cleared", root, checkpoint, old)
            shutil.rmtree(root)
    if root.exists():
        for sub in root.iterdir():
            if sub.is_dir() and (sub / "targets_train.pt").exists() and not (sub / "targets_test.pt").exists():
                log.info("feature cache %s is incomplete: cleared", sub)
                shutil.rmtree(sub)
    root.mkdir(parents=True, exist_ok=True)
    stamp_file.write_text(json.dumps(stamp))


def _shot_suffix(k: int | str) -> str:
    return "full" if k == "full" else f"{int(k)}shot"


def _class_counts(feature_root: Path) -> dict[int, int]:
    import torch

    files = sorted(feature_root.glob("*/targets_train.pt"))
    if not files:
        return {}
    targets = torch.load(files[0], map_location="cpu", weights_only=True)
    values, counts = torch.unique(targets, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def _metrics_of(raw: dict, suffix: str = "") -> tuple[dict[str, float], dict[str, str]]:
    """clip_benchmark's metrics (fractions) as percentages; NaN ones are undefined."""
    metrics, undefined = {}, {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        name = f"{key}_{suffix}" if suffix else key
        if math.isfinite(value):
            metrics[name] = 100.0 * float(value)
        else:
            undefined[name] = f"clip_benchmark gives {value}"
    return metrics, undefined


_INFO_KEYS = ("weight_decay", "epochs", "seed", "fewshot_k", "normalized")


def evaluate_checkpoint(config: dict, info: CheckpointInfo, dataset: str, task: str, *,
                        feature_root: str | Path, scratch: str | Path, device: str | None = None) -> dict:
    """Run one task of clip_benchmark on one checkpoint and downstream set.

    Returns {"metrics": {name: percent}, "undefined": {name: why}, "failures": [{metric, error}],
    "clip_benchmark": [its JSON dumps], "device": ...}.
    """
    ev = config.get("evaluate", {})
    device = device or resolve_device(ev.get("device", "auto"))
    root = dataset_dir(config, dataset)
    name = benchmark_name(config, dataset)
    if name.startswith("wds/"):
        check_downstream(root, dataset, task)
    models.register(config)
    common = dict(batch_size=ev.get("batch_size", 256), workers=ev.get("workers", 0),
                  recall_k=ev.get("recall_k", [1, 5, 10]),
                  fewshot_epochs=ev.get("linear_probe_epochs", 10),
                  fewshot_lr=ev.get("linear_probe_lr", 0.1), feature_root=str(feature_root),
                  seed=config.get("seed", 0), amp=bool(ev.get("amp", True)) and device == "cuda")
    output = str(Path(scratch) / f"clip_benchmark_{task}.json")
    out = {"metrics": {}, "undefined": {}, "failures": [], "clip_benchmark": [], "device": device}
    if task == "linear_probe":
        prepare_feature_cache(Path(feature_root), info.path)
        for k in ev.get("linear_probe_k", [10, "full"]):
            suffix = _shot_suffix(k)
            argv = clip_benchmark_argv(info.model, info.path, name, root, task, output,
                                       fewshot_k=-1 if k == "full" else int(k), **common)
            t0 = time.time()
            dump = run_clip_benchmark(argv, device)
            dump["seconds"] = round(time.time() - t0, 3)
            out["clip_benchmark"].append(dump)
            raw = dump.get("metrics")
            if raw is None:  # clip_benchmark's "insufficient data for this eval"
                counts = _class_counts(Path(feature_root))
                short = {c: n for c, n in counts.items() if n < int(k)}
                out["failures"].append({
                    "metric": f"lp_*_{suffix}",
                    "error": f"{k}-shot linear probe needs {k} training samples of every class; "
                             f"{dataset}'s train split has fewer for classes {short or '(unknown)'} "
                             f"(class: count)"})
                continue
            metrics, undefined = _metrics_of(
                {key: v for key, v in raw.items() if key.startswith("lp_")}, suffix)
            out["metrics"].update(metrics)
            out["undefined"].update(undefined)
    else:
        argv = clip_benchmark_argv(info.model, info.path, name, root, task, output,
                                   fewshot_k=-1, **common)
        t0 = time.time()
        dump = run_clip_benchmark(argv, device)
        dump["seconds"] = round(time.time() - t0, 3)
        out["clip_benchmark"].append(dump)
        if dump.get("metrics") is None:
            raise EvaluationError(f"clip_benchmark returned no metrics for {task} on {dataset}")
        out["metrics"], out["undefined"] = _metrics_of(dump["metrics"])
    for name in list(out["undefined"]):
        if name.startswith(("acc5", "lp_acc5")):
            out["undefined"][name] = "top-5 accuracy is not defined for fewer than 5 classes"
    return out


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for dist in ("clip_benchmark", "open_clip_torch", "torch", "webdataset", "clipscale"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)


def evaluate(config: dict, target: Target, out: str | Path | None = None, *,
             run_record: str | Path | None = None, threads: int | None = None,
             device: str | None = None) -> dict:
    """The evaluation job: evaluate ``target`` and write its result file (``target.path`` unless
    ``out``). Failures that leave no number are written there too (status "failed")."""
    import torch

    out = Path(out or target.path)
    ev = config.get("evaluate", {})
    threads = threads or ev.get("threads", 1)
    torch.set_num_threads(threads)
    device = device or resolve_device(ev.get("device", "auto"))
    t0 = time.time()
    info = checkpoint_info(config, target, run_record)
    result: dict = {
        "format": RESULT_FORMAT,
        "target": asdict(target),
        "row": table_row(info),
        "checkpoint_path": info.path,
        "checkpoint_extra": info.extra,
        "status": "ok", "metrics": {}, "undefined": {}, "failures": [], "clip_benchmark": [],
        "device": device, "threads": threads, "versions": _versions(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    log.info("evaluating %s (checkpoint %s) on %s", target.describe(), info.path, device)
    try:
        meta = check_checkpoint(info.path)
        if target.source == "released" and isinstance(meta.get("epoch"), int):
            result["row"]["epoch"] = meta["epoch"]
        feature_root = paths.fill(paths.EVAL_FEATURES, **asdict(target))
        with tempfile.TemporaryDirectory(prefix="clipscale-eval-") as scratch:
            res = evaluate_checkpoint(config, info, target.dataset, target.task,
                                      feature_root=feature_root, scratch=scratch, device=device)
        result.update(res)
    except EvaluationError as e:
        result["failures"].append({"metric": "*", "error": str(e)})
    if result["failures"]:
        result["status"] = "partial" if result["metrics"] else "failed"
        for f in result["failures"]:
            log.error("%s: %s: %s", target.describe(), f["metric"], f["error"])
    result["seconds"] = round(time.time() - t0, 3)
    _write_json(out, result)
    log.info("%s: %s in %.1f s: %s", target.describe(), result["status"], result["seconds"],
             ", ".join(f"{k}={v:.2f}" for k, v in result["metrics"].items()))
    return result


# -------------------------------------------------------------------------------------------------
# aggregation: one tidy table, and a log of everything that is not in it


@dataclass
class Collected:
    rows: list[dict] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("ok", "partial", "failed", "missing", "unreadable"), 0))
    undefined: set = field(default_factory=set)  # (source, checkpoint, dataset, metric)


def _target_of(path: str | Path) -> Target | None:
    """Wildcards from a result path (for the log of a file that cannot be read)."""
    parts = Path(path).with_suffix("").parts
    try:
        i = parts.index("eval")
        source, model, scale, samples, epoch, dataset, task = parts[i + 1:i + 8]
    except ValueError:
        return None
    return Target(source, model, scale, samples, epoch.removeprefix("epoch_"), dataset, task)


def _describe(path: str | Path) -> str:
    t = _target_of(path)
    return t.describe() if t else str(path)


def read_result(path: str | Path) -> dict:
    """A result file, checked for the fields the table needs (ValueError otherwise)."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in ("target", "row", "status", "metrics") if k not in data]
    if missing:
        raise ValueError(f"lacks {missing}")
    return data


def collect(files: Iterable[str | Path]) -> Collected:
    """Rows of the results table from result files; every file that adds nothing, or less than
    it should, is a line of the log."""
    c = Collected()
    for path in files:
        path = Path(path)
        if not path.exists():
            c.counts["missing"] += 1
            c.lines.append(f"MISSING    {_describe(path)}: {path} does not exist (the evaluation "
                           f"was not run or its job failed: see {paths.LOGS}/evaluate/)")
            continue
        try:
            data = read_result(path)
        except (ValueError, OSError) as e:
            c.counts["unreadable"] += 1
            c.lines.append(f"UNREADABLE {_describe(path)}: {path}: {e}")
            continue
        target = Target(**data["target"])
        status = data["status"]
        c.counts[status if status in c.counts else "failed"] += 1
        for f in data.get("failures", []):
            c.lines.append(f"FAILED     {target.describe()} [{f.get('metric', '*')}]: {f.get('error')}"
                           f"  ({path})")
        for metric, why in sorted(data.get("undefined", {}).items()):
            c.lines.append(f"UNDEFINED  {target.describe()} [{metric}]: {why}")
            c.undefined.add((target.source, data["row"].get("checkpoint"), target.dataset, metric))
        row = data["row"]
        for metric, value in data["metrics"].items():
            c.rows.append({**{k: row.get(k) for k in table.RESULTS_COLUMNS if k in row},
                           "data_size": row.get("data_size"), "task": target.task,
                           "dataset": target.dataset, "metric": metric, "value": value})
    return c


def group_coverage(df: pd.DataFrame, config: dict, undefined: set = frozenset()) -> list[str]:
    """Log lines for group means left out because a member lacks a value it should have: not
    for members without that task in the config, nor for metrics a member cannot define
    (top-5 of 4 classes; those are logged as UNDEFINED)."""
    lines = []
    ident = ["source", "model", "data", "samples_seen", "checkpoint", "epoch", "task", "metric"]
    for group, members in table.groups_of(config).items():
        sub = df[df["dataset"].isin(members)]
        if sub.empty or len(set(members)) < 2:
            continue
        for key, part in sub.groupby(ident, dropna=False, sort=True):
            k = dict(zip(ident, key))
            have = set(part["dataset"])
            lacking = sorted(set(members) - have)
            expected = [m for m in members if k["task"] in config["downstream"][m]["tasks"]]
            if set(expected) != set(members):
                continue  # the config does not ask for this task on every member: no mean
            if any((k["source"], k["checkpoint"], m, k["metric"]) in undefined for m in lacking):
                continue
            if lacking:
                lines.append(f"NO MEAN    {k['source']} {k['model']} {k['data']} {k['samples_seen']} "
                             f"epoch {k['epoch']} {k['task']} {k['metric']}: group {group} lacks "
                             f"{lacking}")
    return lines


def build_table(config: dict, files: Iterable[str | Path]) -> tuple[pd.DataFrame, list[str], dict]:
    """The results table of result files (with group means) and the log lines."""
    c = collect(files)
    if c.rows:
        df = table.complete(pd.DataFrame(c.rows))
        df = table.validate_table(df, where="(evaluation results)")
        lines = group_coverage(df, config, c.undefined)
        df = table.add_group_means(df, table.groups_of(config))
    else:
        df, lines = table.validate_table(table.empty_table(), where="(no evaluation results)"), []
    return df, c.lines + lines, c.counts


def data_lines(run_records: Iterable[str | Path] = (), pool_index: str | Path | None = None) -> list[str]:
    """Log lines for the data behind the table: pool shards whose tar and parquet disagree (or
    that are truncated or hold unreadable samples), and samples each training run skipped."""
    from clipscale.subsets import pool_problems

    lines = []
    if pool_index and Path(pool_index).exists():
        lines += [f"POOL       {line}" for line in pool_problems(pd.read_parquet(pool_index))]
    for path in run_records:
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            lines.append(f"RUN        {path}: unreadable run record: {e}")
            continue
        skipped = record.get("skipped_samples") or {}
        if skipped.get("total"):
            reasons = ", ".join(f"{k}: {v}" for k, v in sorted(skipped.get("by_reason", {}).items()))
            lines.append(f"SKIPPED    {record['model']}/{record['scale']}/{record['samples_seen_label']}: "
                         f"training skipped {skipped['total']} samples ({reasons or 'reasons not recorded'}); "
                         f"see {path}")
        for aside in record.get("rejected_checkpoints", []):
            lines.append(f"CHECKPOINT {record['model']}/{record['scale']}/{record['samples_seen_label']}: "
                         f"{aside.get('file')} moved to {aside.get('moved_to')}: {aside.get('reason')}")
    return lines


def aggregate(config: dict, files: Iterable[str | Path], out_table: str | Path = paths.RESULTS_TABLE,
              out_csv: str | Path = paths.RESULTS_CSV, out_log: str | Path = paths.RESULTS_LOG, *,
              run_records: Iterable[str | Path] = (), pool_index: str | Path | None = None) -> pd.DataFrame:
    """Write the results table (parquet and CSV) and its log; never stops on a missing file.
    The log also lists the pool's problem shards and the samples training skipped."""
    files = [str(f) for f in files]
    df, lines, counts = build_table(config, files)
    lines = lines + data_lines(run_records, pool_index)
    table.write_table(df, out_table)
    table.write_table(df, out_csv)
    by_source = df["source"].value_counts().to_dict() if len(df) else {}
    groups = set(table.groups_of(config))
    n_group = int(df["dataset"].isin(groups).sum()) if len(df) else 0
    header = [
        f"# clipscale results log: what is and is not in {out_table} ({datetime.datetime.now():%Y-%m-%d %H:%M})",
        f"# evaluations expected: {len(files)}; " + ", ".join(f"{k}: {v}" for k, v in counts.items()),
        f"# rows: {len(df)} ({', '.join(f'{k}: {v}' for k, v in by_source.items()) or 'none'}), "
        f"of which group means: {n_group}",
        "# A FAILED evaluation's result file records why; delete it and re-run the workflow to retry.",
        "# MISSING: no result file; UNDEFINED: metric not defined for this set (no row);",
        "# NO MEAN: a group average left out because a member set has no value;",
        "# POOL: a pool shard whose tar and parquet disagree, truncated or with unreadable samples;",
        "# SKIPPED: samples a training run skipped; CHECKPOINT: a checkpoint a run set aside.",
    ]
    Path(out_log).parent.mkdir(parents=True, exist_ok=True)
    Path(out_log).write_text("\n".join(header + (lines or ["(every expected evaluation is in the table)"])) + "\n")
    problems = counts["missing"] + counts["unreadable"] + counts["failed"] + counts["partial"]
    (log.warning if problems else log.info)(
        "results table %s: %d rows from %d evaluations (%s); see %s", out_table, len(df), len(files),
        ", ".join(f"{k} {v}" for k, v in counts.items()), out_log)
    return df


# -------------------------------------------------------------------------------------------------
# command line


def _load_config(a) -> dict:
    if a.config_json:
        return config_mod.validate(json.loads(Path(a.config_json).read_text()), a.config_json)
    return config_mod.load(a.config)


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
    target = Target(a.source, a.model, a.scale, a.samples, str(a.epoch), a.dataset, a.task)
    result = evaluate(cfg, target, a.out, run_record=a.run_record, threads=a.threads, device=a.device)
    print(json.dumps({"status": result["status"], "seconds": result["seconds"],
                      "metrics": result["metrics"], "failures": result["failures"]}, indent=1))
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


def add_commands(subparsers, short: bool = False) -> None:
    """Subcommands of ``clipscale`` (evaluate, aggregate-results, eval-targets), or with ``short``
    those of ``python -m clipscale.evaluate`` (run, aggregate, targets)."""
    name = (lambda n: n) if short else _NAMES.__getitem__
    p = subparsers.add_parser(name("run"), help="evaluate one checkpoint on one downstream set and task")
    _add_config(p)
    p.add_argument("--source", choices=SOURCES, default="ours")
    p.add_argument("--model", required=True)
    p.add_argument("--scale", required=True, help="our scale, or a released checkpoint's Data (2B)")
    p.add_argument("--samples", required=True, help="samples seen label, e.g. 16k or 34B")
    p.add_argument("--epoch", default=None, help="checkpoint epoch (ours; default: the last), "
                                                  f"{FINAL!r} for released checkpoints")
    p.add_argument("--dataset", required=True)
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--out", help=f"result file (default: {paths.EVAL})")
    p.add_argument("--run-record", help="run.json of the run (default: its place under results/)")
    p.add_argument("--threads", type=int)
    p.add_argument("--device", choices=["cpu", "cuda"])
    p.set_defaults(func=_cmd_run_default_epoch)

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


@_reported
def _cmd_run_default_epoch(a) -> int:
    if a.epoch is None:
        if a.source == "released":
            a.epoch = FINAL
        else:
            cfg = _load_config(a)
            a.epoch = str(grid.hparams(cfg, grid.find_run(cfg, a.model, a.scale, a.samples))["epochs"])
    return _cmd_run(a)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipscale.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_commands(parser.add_subparsers(dest="command", required=True), short=True)
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
