"""clip_benchmark in this process: the model loaded once, each downstream set's image features
computed once and shared by the tasks that use them, clip_benchmark's own code computing every
metric.

Per set: zero-shot classification runs clip_benchmark's ``zeroshot_classification.evaluate``
(its zero-shot classifier from the text tower, its accuracy and mean per-class recall) on the
set's test image features, fed to it by a stand-in model whose ``encode_image`` returns the
precomputed feature; the linear probe runs clip_benchmark's ``linear_probe.evaluate`` on the same
test features and the train split's, written where it caches features (so it never featurizes
again); retrieval runs ``zeroshot_retrieval.evaluate`` (one pass over images and captions).
The features are what clip_benchmark computes itself: ``F.normalize(model.encode_image(x))``
under its autocast, over the set's webdataset loader with the model's own preprocessing.

CPU: clip_benchmark's linear probe asserts CUDA and calls ``.cuda()``. On CPU this module runs a
copy of that code with exactly those lines changed (``CPU_LINEAR_PROBE_PATCHES``), built at run
time from the installed file; nothing installed is edited, and if upstream's lines change the
patch fails with ``UpstreamChanged`` instead of running something else.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

from clipscale.config import ConfigError
from clipscale.logs import progress

log = logging.getLogger("clipscale.evaluate")


class UpstreamChanged(RuntimeError):
    """clip_benchmark no longer has the code that clipscale calls or patches."""


class EvaluationError(RuntimeError):
    """An evaluation that cannot give a result; recorded in its result file and the results log."""


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


# -------------------------------------------------------------------------------------------------
# the calls into clip_benchmark

#: clip_benchmark's functions that clipscale calls (module, name); tested with clip_benchmark 1.6.2
UPSTREAM = [
    ("clip_benchmark.models", "load_clip"),
    ("clip_benchmark.datasets.builder", "build_dataset"),
    ("clip_benchmark.datasets.builder", "get_dataset_collate_fn"),
    ("clip_benchmark.metrics.zeroshot_classification", "evaluate"),
    ("clip_benchmark.metrics.zeroshot_retrieval", "evaluate"),
    ("clip_benchmark.metrics.linear_probe", "evaluate"),
]


def upstream(module: str, name: str):
    """A function of clip_benchmark, or UpstreamChanged naming what is gone."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise UpstreamChanged(f"{module} has no {name}: clip_benchmark changed (tested: 1.6.2); "
                              f"update clipscale.evaluate.benchmark") from None


def check_upstream() -> None:
    for module, name in UPSTREAM:
        upstream(module, name)


def linear_probe_module(device: str) -> types.ModuleType:
    """clip_benchmark's linear probe module: upstream's on CUDA, the patched copy on CPU."""
    if device == "cpu":
        return cpu_linear_probe()
    import clip_benchmark.metrics.linear_probe as module

    return module


@dataclass
class Model:
    """A checkpoint loaded as clip_benchmark loads it (open_clip model, its preprocessing, its
    tokenizer), in eval mode on ``device``."""

    name: str
    path: str
    device: str
    amp: bool
    model: object = None
    transform: object = None
    tokenizer: object = None

    @classmethod
    def load(cls, name: str, path: str, device: str, amp: bool) -> "Model":
        model, transform, tokenizer = upstream("clip_benchmark.models", "load_clip")(
            model_type="open_clip", model_name=name, pretrained=path, cache_dir=None, device=device)
        model.eval()
        return cls(name, path, device, amp, model, transform, tokenizer)


def _loader(dataset, batch_size: int, workers: int, wds: bool, collate_fn=None):
    import torch

    if wds:  # as clip_benchmark's cli: a webdataset batches itself
        return torch.utils.data.DataLoader(dataset.batched(batch_size), batch_size=None, shuffle=False,
                                           num_workers=workers)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                       collate_fn=collate_fn)


def build(name: str, root: str, transform, split: str, task: str):
    """clip_benchmark's dataset of a set and split (``build_dataset``, no download)."""
    return upstream("clip_benchmark.datasets.builder", "build_dataset")(
        dataset_name=name, root=root, transform=transform, split=split, download=False, task=task)


def image_features(m: Model, loader, what: str = "image features") -> tuple:
    """(features, targets) of every image of a loader: clip_benchmark's features,
    ``F.normalize(model.encode_image(images))`` under its autocast, on the CPU."""
    import torch
    import torch.nn.functional as F

    feats, targets = [], []
    with torch.no_grad():
        for images, target in progress(loader, what, unit="batches", logger=log):
            with torch.autocast(m.device, enabled=m.amp):
                feats.append(F.normalize(m.model.encode_image(images.to(m.device)), dim=-1).cpu())
            targets.append(target)
    if not feats:
        raise EvaluationError("the split holds no images")
    return torch.cat(feats), torch.cat(targets)


class _Precomputed:
    """A stand-in CLIP model for clip_benchmark's zero-shot classification: ``encode_image``
    returns its input, the precomputed (normalized) image features; ``encode_text`` is the
    model's."""

    def __init__(self, model):
        self._model = model

    def encode_image(self, features):
        return features

    def encode_text(self, texts):
        return self._model.encode_text(texts)


class _FeatureBatches:
    """Batches of precomputed features and targets, shaped like the data loader clip_benchmark's
    zero-shot classification reads (``.dataset.classes`` included)."""

    def __init__(self, features, targets, classes, batch_size: int):
        self.features, self.targets, self.batch_size = features, targets, batch_size
        self.dataset = types.SimpleNamespace(classes=classes)

    def __len__(self) -> int:
        return math.ceil(len(self.features) / self.batch_size)

    def __iter__(self):
        for i in range(0, len(self.features), self.batch_size):
            yield self.features[i:i + self.batch_size], self.targets[i:i + self.batch_size]


@dataclass
class TaskResult:
    """What one (set, task) gave: metrics in percent, undefined metrics and why, failures, and
    clip_benchmark's raw numbers with their seconds."""

    metrics: dict = field(default_factory=dict)
    undefined: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    clip_benchmark: list = field(default_factory=list)

    def add(self, raw: dict, seconds: float, suffix: str = "", prefix: str = "", **extra) -> None:
        """clip_benchmark's raw output; its numbers whose names start with ``prefix`` become
        metrics (named ``<name>_<suffix>`` with a suffix)."""
        metrics, undefined = _metrics_of({k: v for k, v in raw.items() if k.startswith(prefix)}, suffix)
        self.metrics.update(metrics)
        self.undefined.update(undefined)
        self.clip_benchmark.append({"metrics": raw, "seconds": round(seconds, 3), **extra})

    def explain_undefined(self) -> None:
        for name in list(self.undefined):
            if name.startswith(("acc5", "lp_acc5")):
                self.undefined[name] = "top-5 accuracy is not defined for fewer than 5 classes"


@dataclass
class SetSettings:
    """How one downstream set is evaluated (from the config's evaluate section and the set)."""

    name: str            # the set's name in the config
    benchmark_name: str  # clip_benchmark's name: wds/<name> for a webdataset folder
    root: str
    batch_size: int = 256
    workers: int = 0
    recall_k: list = field(default_factory=lambda: [1, 5, 10])
    linear_probe_k: list = field(default_factory=lambda: [10, "full"])
    linear_probe_epochs: int = 10
    linear_probe_lr: float = 0.1
    seed: int = 0

    @property
    def wds(self) -> bool:
        return self.benchmark_name.startswith("wds/")


def zeroshot_classification(m: Model, s: SetSettings, test) -> TaskResult:
    """clip_benchmark's zero-shot classification on precomputed test features."""
    dataset, features, targets = test
    templates, classes = getattr(dataset, "templates", None), getattr(dataset, "classes", None)
    if not templates or not classes:
        raise EvaluationError(f"downstream set {s.name} has no class names or templates")
    out, t0 = TaskResult(), time.time()
    raw = upstream("clip_benchmark.metrics.zeroshot_classification", "evaluate")(
        _Precomputed(m.model), _FeatureBatches(features, targets, classes, s.batch_size), m.tokenizer,
        classes, templates, device=m.device, amp=m.amp, verbose=False)
    out.add(raw, time.time() - t0)
    return out


def zeroshot_retrieval(m: Model, s: SetSettings) -> TaskResult:
    """clip_benchmark's zero-shot retrieval (one pass over the test images and captions)."""
    dataset = build(s.benchmark_name, s.root, m.transform, "test", "zeroshot_retrieval")
    collate = upstream("clip_benchmark.datasets.builder", "get_dataset_collate_fn")(s.benchmark_name)
    loader = _loader(dataset, s.batch_size, s.workers, s.wds, collate)
    out, t0 = TaskResult(), time.time()
    raw = upstream("clip_benchmark.metrics.zeroshot_retrieval", "evaluate")(
        m.model, progress(loader, f"{s.name} retrieval", unit="batches", logger=log), m.tokenizer,
        recall_k_list=list(s.recall_k), device=m.device, amp=m.amp)
    out.add(raw, time.time() - t0)
    return out


def model_id(m: Model, s: SetSettings) -> str:
    """clip_benchmark's name of a model's feature cache folder (as its cli builds it)."""
    return f"{m.name}-{m.path}-{s.benchmark_name}".replace("/", "_")


def write_features(folder: Path, split: str, features, targets) -> None:
    """Features in clip_benchmark's linear-probe cache layout (features_<split>.pt, targets_...);
    targets last: clip_benchmark takes targets_train.pt as the sign of a complete cache."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    torch.save(features, folder / f"features_{split}.pt")
    torch.save(targets, folder / f"targets_{split}.pt")


def linear_probe(m: Model, s: SetSettings, test, feature_root: Path) -> TaskResult:
    """clip_benchmark's linear probe for every k of linear_probe_k, on cached features: the test
    features shared with zero-shot classification, the train split's computed once."""
    import torch

    _, features, targets = test
    folder = feature_root / model_id(m, s)
    if not (folder / "targets_test.pt").exists() or not (folder / "targets_train.pt").exists():
        train = build(s.benchmark_name, s.root, m.transform, "train", "linear_probe")
        write_features(folder, "test", features, targets)
        write_features(folder, "train", *image_features(m, _loader(train, s.batch_size, s.workers, s.wds),
                                                            f"{s.name} train features"))
    probe = linear_probe_module(m.device).evaluate
    out = TaskResult()
    for k in s.linear_probe_k:
        suffix = _shot_suffix(k)
        torch.manual_seed(s.seed)  # as clip_benchmark's cli, before each run: the k-shot draw
        t0 = time.time()
        raw = probe(m.model, None, None, -1 if k == "full" else int(k), s.batch_size, s.workers,
                    s.linear_probe_lr, s.linear_probe_epochs, model_id(m, s), s.seed, str(feature_root),
                    m.device, val_dataloader=None, normalize=True, amp=m.amp, verbose=False)
        if raw is None:  # clip_benchmark's "insufficient data for this eval"
            counts = _class_counts(feature_root)
            short = {c: n for c, n in counts.items() if n < int(k)}
            out.failures.append({
                "metric": f"lp_*_{suffix}",
                "error": f"{k}-shot linear probe needs {k} training samples of every class; "
                         f"{s.name}'s train split has fewer for classes {short or '(unknown)'} "
                         f"(class: count)"})
            out.clip_benchmark.append({"metrics": None, "fewshot_k": -1 if k == "full" else int(k),
                                       "seconds": round(time.time() - t0, 3)})
            continue
        out.add(raw, time.time() - t0, suffix, prefix="lp_")
    return out


def evaluate_set(m: Model, s: SetSettings, tasks: list[str], feature_root: Path) -> dict[str, TaskResult]:
    """Every task of one downstream set on one loaded model: the test images' features computed
    once for zero-shot classification and the linear probe; retrieval on its own pass."""
    out: dict[str, TaskResult] = {}
    if s.wds:
        for task in tasks:
            check_downstream(s.root, s.name, task)
    classification = [t for t in tasks if t in ("zeroshot_classification", "linear_probe")]
    if classification:
        import torch

        torch.manual_seed(s.seed)
        t0 = time.time()
        dataset = build(s.benchmark_name, s.root, m.transform, "test", "zeroshot_classification")
        features, targets = image_features(m, _loader(dataset, s.batch_size, s.workers, s.wds),
                                           f"{s.name} test features")
        log.info("%s: %d test images encoded in %.1f s (shared by %s)", s.name, len(features),
                 time.time() - t0, ", ".join(classification))
        test = (dataset, features, targets)
        if "linear_probe" in classification:
            prepare_feature_cache(feature_root, m.path)
        for task in classification:
            out[task] = (zeroshot_classification(m, s, test) if task == "zeroshot_classification"
                         else linear_probe(m, s, test, feature_root))
    if "zeroshot_retrieval" in tasks:
        out["zeroshot_retrieval"] = zeroshot_retrieval(m, s)
    for result in out.values():
        result.explain_undefined()
    return out
