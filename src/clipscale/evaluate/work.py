"""What an evaluation job computes: the images and texts it encodes, per downstream set, for
sizing its job (clipscale.resources.evaluate; no torch, no file of the set is read).

A set's sizes come from, in order: its ``size`` / ``train_size`` keys in the config (a user's
own set), the embedded world's spec (its sets, without ``path``), the standard sizes shipped in
``data/reference/downstream_sizes.csv`` (the paper's sets, by name or clip_benchmark name), else
FALLBACK: ImageNet's sizes, the largest of the paper's sets, so that an unknown set's job is
over-sized rather than cut short.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

TEMPLATES = 80  # zero-shot prompts per class counted: ImageNet's 80 (OpenAI's), the most clip_benchmark uses


@dataclass(frozen=True)
class SetSize:
    test: int       # images of the test split
    train: int      # images of the train split (read by a linear probe only)
    classes: int    # 0 for a retrieval set
    texts: int      # texts encoded: class prompts (zero-shot) or the test captions (retrieval)
    source: str     # where the sizes come from: config, world, package or fallback


FALLBACK = SetSize(test=50_000, train=1_281_167, classes=1000, texts=1000 * TEMPLATES, source="fallback")


@lru_cache(maxsize=1)
def standard_sizes() -> dict[str, SetSize]:
    """The paper's sets' split sizes (package data), by set name."""
    import csv

    path = resources.files("clipscale") / "data" / "reference" / "downstream_sizes.csv"
    out = {}
    with resources.as_file(path) as p, open(p, newline="") as f:
        for row in csv.DictReader(f):
            test, classes = int(row["test"]), int(row["classes"] or 0)
            captions = int(row["captions_per_image"] or 0)
            out[row["dataset"]] = SetSize(test, int(row["train"] or 0), classes,
                                          test * captions if captions else classes * TEMPLATES, "package")
    return out


def _world_size(config: dict, dataset: str) -> SetSize:
    from clipscale import world

    spec = world.WorldSpec.from_config(config)
    kind, classes, templates, _ = world.DOWNSTREAM_SETS[dataset]
    if kind == "retrieval":
        return SetSize(spec.retrieval_size, 0, 0, 2 * spec.retrieval_size, "world")  # two captions each
    if dataset == "digits":  # scikit-learn's 1,797 digits: 30% train, the rest after the pool's 40% test
        n_pool, n_train = int(0.4 * 1797), int(0.3 * 1797)
        test, train = 1797 - n_pool - n_train, n_train
    else:
        test, train = spec.test_per_class * len(classes), spec.train_per_class * len(classes)
    return SetSize(test, train, len(classes), len(classes) * len(templates), "world")


def set_size(config: dict, dataset: str) -> SetSize:
    """The split sizes of one downstream set of the config (see the module's docstring)."""
    from clipscale import world

    spec = config["downstream"][dataset]
    if "path" not in spec and dataset in world.DOWNSTREAM_SETS:
        base = _world_size(config, dataset)
    else:
        known = standard_sizes()
        alias = (spec.get("benchmark_name") or "").rsplit("/", 1)[-1]
        base = known.get(dataset) or known.get(alias) or FALLBACK
    if "size" in spec or "train_size" in spec:
        test, train = spec.get("size", base.test), spec.get("train_size", base.train)
        texts = base.texts if base.classes else base.texts * test // max(1, base.test)
        return SetSize(test, train, base.classes, texts, "config")
    return base


@dataclass(frozen=True)
class Work:
    """One checkpoint's evaluation: images and texts encoded, linear-probe fits, the sets."""

    images: int          # test images (once per set: shared by zero-shot and the probe) + probes' train images
    texts: int
    probe_macs: float    # the linear probes' training on cached features (GMAC per unit of feature width)
    largest_features: int  # images of the set with the most (test + train) features held at once
    sets: int
    tiny_images: int     # of ``images``, those of the embedded world (32 px: cheap to decode)


def evaluation_work(config: dict) -> Work:
    """What one evaluation job encodes: every configured (set, task) of clipscale.evaluate.plan.
    A set's test images are encoded once (zero-shot classification and the linear probe share
    them; retrieval encodes them again), its train images once for all linear_probe_k (cached
    features); each k fits a probe for linear_probe_epochs over its training features."""
    from clipscale.config import section

    ev = section(config, "evaluate")
    images = texts = tiny = largest = 0
    probe = 0.0
    for dataset, spec in config["downstream"].items():
        size, tasks = set_size(config, dataset), set(spec["tasks"])
        n = 0
        if tasks & {"zeroshot_classification", "linear_probe"}:
            n += size.test
        if "zeroshot_retrieval" in tasks:
            n += size.test
        if tasks & {"zeroshot_classification", "zeroshot_retrieval"}:
            texts += size.texts
        held = size.test
        if "linear_probe" in tasks:
            n += size.train
            held += size.train
            for k in ev["linear_probe_k"]:
                shots = size.train if k == "full" else min(size.train, int(k) * max(1, size.classes))
                probe += 3 * ev["linear_probe_epochs"] * shots * max(1, size.classes) / 1e9  # forward + backward
        images += n
        tiny += n if size.source == "world" else 0
        largest = max(largest, held)
    return Work(images, texts, probe, largest, len(config["downstream"]), tiny)
