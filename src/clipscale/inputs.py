"""The folders a user points clipscale at, and the layout it reads from each: a pool of
img2dataset shards (``pool.source``) and clip_benchmark's downstream sets (``downstream.<set>.path``).
``path_problems`` checks them cheaply before any job starts (``clipscale.checks.validate`` with
``check_paths``); the jobs that read them (subsets, dedup, evaluate) name what they find later.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path


def path_problems(config: dict) -> list[str]:
    """Every configured path, checked cheaply (existence, a few named files, a directory scan that
    stops at the first .tar): pool.source and the downstream sets' folders (finetune.sets' are
    ``finetune.plan.path_problems``, evaluate.released's ``released.path_problems``)."""
    problems = []
    source = config["pool"]["source"]
    if source != "world":
        problem = _folder_problem(Path(source)) or (
            None if _has_tar(Path(source)) else " has no .tar shards (img2dataset's NNNNN.tar)")
        if problem:
            problems.append(f"pool.source: {source}{problem}")
    for name, spec in config["downstream"].items():
        if "path" in spec:
            problems += [f"downstream.{name}.path: {spec['path']}{p}" for p in downstream_problems(spec)]
    return problems


def _folder_problem(path: Path) -> str | None:
    if not path.exists():
        return " does not exist"
    if not path.is_dir():
        return " is not a directory"
    return None


def _has_tar(folder: Path) -> bool:
    """Whether a folder holds a .tar file; stops at the first one (a pool may hold 10^5 shards)."""
    with os.scandir(folder) as entries:
        return any(e.name.endswith(".tar") for e in entries)


def downstream_problems(spec: dict) -> list[str]:
    """What a downstream set's folder (``spec["path"]``) lacks for its tasks, each as the end of a
    sentence about the folder: clip_benchmark's webdataset layout (``wds/...`` sets, written by
    clipscale.world) is test/ (and train/ for linear_probe) with nshards.txt and {0..n-1}.tar,
    classnames.txt and zeroshot_classification_templates.txt for zero-shot classification,
    dataset_type.txt saying retrieval for retrieval; dedup hashes the test/ split's .tar shards."""
    root = Path(spec["path"])
    problem = _folder_problem(root)
    if problem:
        return [problem]
    tasks = spec["tasks"]
    wds = spec.get("benchmark_name", "wds/").startswith("wds/")
    splits = {}
    if wds or spec.get("dedup", True):
        splits["test"] = ""
    if wds and "linear_probe" in tasks:
        splits["train"] = " (linear_probe needs it)"
    out = []
    for split, why in splits.items():
        folder = root / split
        if not folder.is_dir() or not _has_tar(folder):
            out.append(f" has no {split}/ split with .tar shards{why}")
        elif wds and (nshards := _nshards_problems(folder, split)):
            out += nshards
        elif _empty_split(folder):
            out.append(f" has an empty {split}/ split (its .tar shards hold no sample){why}")
    if not wds:
        return out
    kind_file = root / "dataset_type.txt"
    kind = kind_file.read_text().strip().lower() if kind_file.is_file() else "classification"
    if "zeroshot_retrieval" in tasks and kind != "retrieval":
        out.append(" is not a retrieval set (zeroshot_retrieval needs dataset_type.txt saying retrieval)")
    for task in ("zeroshot_classification", "linear_probe"):
        if task in tasks and kind == "retrieval":
            out.append(f" is a retrieval set (dataset_type.txt): no {task}")
    if "zeroshot_classification" in tasks:
        for name in ("classnames.txt", "zeroshot_classification_templates.txt"):
            if not (root / name).is_file():
                out.append(f" has no {name} (zeroshot_classification needs it)")
    return out


def _empty_split(folder: Path) -> bool:
    """Whether no .tar shard of a split holds a file (each shard read up to its first member: one
    header when the split is not empty; an unreadable shard counts as not empty, the jobs that
    read it name it)."""
    for tar in sorted(folder.glob("*.tar")):
        if tar.stat().st_size == 0:
            continue
        try:
            with tarfile.open(tar) as t:
                if t.next() is not None:
                    return False
        except (tarfile.TarError, OSError):
            return False
    return True


def _nshards_problems(folder: Path, split: str) -> list[str]:
    """clip_benchmark reads {split}/nshards.txt and then {split}/{0..n-1}.tar; the first and the
    last shard are checked (evaluate checks them all when it runs)."""
    nshards = folder / "nshards.txt"
    if not nshards.is_file():
        return [f" has no {split}/nshards.txt (clip_benchmark's webdataset layout)"]
    try:
        n = int(nshards.read_text().strip())
    except ValueError:
        return [f": {split}/nshards.txt does not hold a number of shards"]
    if n < 1:
        return [f": {split}/nshards.txt says {n} shards"]
    for i in sorted({0, n - 1}):
        if not (folder / f"{i}.tar").is_file():
            return [f": {split}/nshards.txt says {n} shards, {split}/{i}.tar is missing"]
    return []
