"""The paper's published results as a tidy results table (``clipscale.table`` format).

Reads the transcribed tables shipped in ``clipscale/data/reference`` (see the README there):

- zeroshot_tables_long.csv (Tables 16, 19-24): OpenCLIP runs, source "published";
- openai_clip_reference.csv: OpenAI CLIP ViT-B/32, B/16, L/14, source "openai";
- table05_linear_probe.csv: linear probing, OpenCLIP ("published") and OpenAI ("openai");
- table25_architectures.csv: GMAC per sample of each architecture (``load_architectures``);
- table18_training_hparams_resources.csv: per-run settings and checkpoints (``load_hparams``);
- table03_phash_overlap.csv: % of each test set found in LAION-400M (``load_overlap``).

The compute axis is the exact one: samples_seen = samples_seen_exact and total_gmac =
gmac_per_sample x samples_seen_exact; the nominal 3B/13B/34B stay as samples_seen_label.

Command line: ``clipscale published-table --out results/results/published.parquet``.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from clipscale.config import format_count
from clipscale.table import RESULTS_COLUMNS, validate_table

log = logging.getLogger(__name__)

REFERENCE_DIR = Path(str(resources.files("clipscale") / "data" / "reference"))

ZEROSHOT = "zeroshot_tables_long.csv"
OPENAI = "openai_clip_reference.csv"
LINEAR_PROBE = "table05_linear_probe.csv"
ARCHITECTURES = "table25_architectures.csv"
HPARAMS = "table18_training_hparams_resources.csv"
OVERLAP = "table03_phash_overlap.csv"

OPENAI_DATA = "CLIP-WIT"
#: Unique image-text pairs of each training set (WIT: 400M pairs, Radford et al. 2021).
DATA_SIZES = {"LAION-80M": 80_000_000, "LAION-400M": 400_000_000, "LAION-2B": 2_000_000_000,
              OPENAI_DATA: 400_000_000}

#: Metric names of the paper's tables -> (task, dataset, metric) of the results table.
ZEROSHOT_METRICS = {
    "imagenet1k_zeroshot_top1": ("zeroshot_classification", "imagenet1k", "acc1"),
    "imagenet_robustness_avg5_zeroshot_top1": ("zeroshot_classification", "imagenet_robustness", "acc1"),
    "vtab+_avg35_zeroshot_top1": ("zeroshot_classification", "vtab+", "acc1"),
    "mscoco_image_retrieval_recall@5": ("zeroshot_retrieval", "mscoco_captions", "image_retrieval_recall@5"),
    "mscoco_text_retrieval_recall@5": ("zeroshot_retrieval", "mscoco_captions", "text_retrieval_recall@5"),
    "flickr30k_image_retrieval_recall@5": ("zeroshot_retrieval", "flickr30k", "image_retrieval_recall@5"),
    "flickr30k_text_retrieval_recall@5": ("zeroshot_retrieval", "flickr30k", "text_retrieval_recall@5"),
}
OPENAI_TASKS = {
    "imagenet1k": ("zeroshot_classification", "imagenet1k", "acc1"),
    "imagenet_robustness": ("zeroshot_classification", "imagenet_robustness", "acc1"),
    "vtab+": ("zeroshot_classification", "vtab+", "acc1"),
    "mscoco_image_retrieval": ("zeroshot_retrieval", "mscoco_captions", "image_retrieval_recall@5"),
    "mscoco_text_retrieval": ("zeroshot_retrieval", "mscoco_captions", "text_retrieval_recall@5"),
    "flickr30k_image_retrieval": ("zeroshot_retrieval", "flickr30k", "image_retrieval_recall@5"),
    "flickr30k_text_retrieval": ("zeroshot_retrieval", "flickr30k", "text_retrieval_recall@5"),
}
LINEAR_PROBES = {
    "VTAB": ("vtab", "lp_acc1"),
    "ImageNet_10shot": ("imagenet1k", "lp_acc1_10shot"),
    "ImageNet_25shot": ("imagenet1k", "lp_acc1_25shot"),
    "ImageNet_full": ("imagenet1k", "lp_acc1_full"),
    "CIFAR100_10shot": ("cifar100", "lp_acc1_10shot"),
    "CIFAR100_25shot": ("cifar100", "lp_acc1_25shot"),
    "CIFAR100_full": ("cifar100", "lp_acc1_full"),
}


class ReferenceError(ValueError):
    """A reference CSV that does not hold what it should."""


def _read(name: str, required: list[str], directory: Path | None = None) -> pd.DataFrame:
    path = Path(directory or REFERENCE_DIR) / name
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise ReferenceError(f"reference table not found: {path}") from None
    except Exception as e:
        raise ReferenceError(f"reference table {path} cannot be read: {e}") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ReferenceError(f"reference table {path}: missing columns {missing}")
    df.attrs["path"] = str(path)
    return df


def _check_close(df: pd.DataFrame, a: pd.Series, b: pd.Series, what: str) -> None:
    bad = ~np.isclose(a.astype(float), b.astype(float), rtol=1e-6, atol=1e-6)
    if bad.any():
        rows = ", ".join(str(i + 2) for i in np.flatnonzero(bad)[:5])
        raise ReferenceError(f"reference table {df.attrs.get('path')}: {what} (lines {rows})")


def load_architectures(directory: Path | None = None) -> pd.DataFrame:
    """Table 25: model ("ViT-B/32"), arch_id ("ViT-B-32"), params, gmac_per_sample."""
    df = _read(ARCHITECTURES, ["model", "arch_id", "gmac_per_sample", "params"], directory)
    return df


def gmac_lookup(directory: Path | None = None) -> dict[str, float]:
    """GMAC per sample by model label and by arch_id (both spellings: "ViT-B/32", "ViT-B-32")."""
    arch = load_architectures(directory)
    out = {}
    for _, r in arch.iterrows():
        out[r["model"]] = float(r["gmac_per_sample"])
        out[r["arch_id"]] = float(r["gmac_per_sample"])
    return out


def load_hparams(directory: Path | None = None) -> pd.DataFrame:
    """Table 18 without its "Total" line: per-run batch size, lr, GPUs, GPU-hours, checkpoint."""
    df = _read(HPARAMS, ["model", "data", "samples_seen", "samples_seen_exact", "checkpoint"], directory)
    return df[df["model"] != "Total"].reset_index(drop=True)


def load_overlap(directory: Path | None = None) -> pd.DataFrame:
    """Table 3: dataset, overlap_pct (% of the test set found in LAION-400M by pHash)."""
    df = _read(OVERLAP, ["dataset", "overlap_pct"], directory)
    return df[["dataset", "overlap_pct"]]


def _arch_ids(directory: Path | None) -> dict[str, str]:
    arch = load_architectures(directory)
    return dict(zip(arch["model"], arch["arch_id"]))


def load_zeroshot(directory: Path | None = None) -> pd.DataFrame:
    """Tables 16 and 19-24 (OpenCLIP zero-shot classification and retrieval), source "published"."""
    df = _read(
        ZEROSHOT,
        ["metric", "model", "arch_id", "data", "samples_seen", "samples_seen_exact", "gmac_per_sample",
         "total_gmac_exact", "value", "error", "checkpoint"],
        directory,
    )
    unknown = sorted(set(df["metric"]) - set(ZEROSHOT_METRICS))
    if unknown:
        raise ReferenceError(f"reference table {df.attrs['path']}: unknown metrics {unknown}")
    _check_close(df, df["error"], 100.0 - df["value"], "error != 100 - value")
    _check_close(df, df["total_gmac_exact"], df["gmac_per_sample"] * df["samples_seen_exact"],
                 "total_gmac_exact != gmac_per_sample x samples_seen_exact")
    task, dataset, metric = zip(*(ZEROSHOT_METRICS[m] for m in df["metric"]))
    return pd.DataFrame({
        "source": "published",
        "model": df["model"],
        "arch_id": df["arch_id"],
        "data": df["data"],
        "samples_seen": df["samples_seen_exact"].round().astype("int64"),
        "samples_seen_label": df["samples_seen"].astype(str),
        "gmac_per_sample": df["gmac_per_sample"].astype(float),
        "total_gmac": df["total_gmac_exact"].astype(float),
        "task": task,
        "dataset": dataset,
        "metric": metric,
        "value": df["value"].astype(float),
        "error": 1.0 - df["value"].astype(float) / 100.0,
        "epoch": pd.array([pd.NA] * len(df), dtype="Int64"),
        "final": True,
        "checkpoint": df["checkpoint"],
    })


def load_openai(directory: Path | None = None) -> pd.DataFrame:
    """OpenAI CLIP ViT-B/32, B/16, L/14 (WIT, 12.8B samples seen), source "openai"."""
    df = _read(OPENAI, ["task", "model", "data", "samples_seen", "gmac_per_sample", "total_gmac", "value"],
               directory)
    unknown = sorted(set(df["task"]) - set(OPENAI_TASKS))
    if unknown:
        raise ReferenceError(f"reference table {df.attrs['path']}: unknown tasks {unknown}")
    _check_close(df, df["total_gmac"], df["gmac_per_sample"] * df["samples_seen"],
                 "total_gmac != gmac_per_sample x samples_seen")
    arch_ids = _arch_ids(directory)
    missing = sorted(set(df["model"]) - set(arch_ids))
    if missing:
        raise ReferenceError(f"reference table {df.attrs['path']}: models {missing} not in {ARCHITECTURES}")
    task, dataset, metric = zip(*(OPENAI_TASKS[t] for t in df["task"]))
    samples = df["samples_seen"].round().astype("int64")
    arch = df["model"].map(arch_ids)
    return pd.DataFrame({
        "source": "openai",
        "model": df["model"],
        "arch_id": arch,
        "data": df["data"],
        "samples_seen": samples,
        "samples_seen_label": [format_count(int(s)) for s in samples],
        "gmac_per_sample": df["gmac_per_sample"].astype(float),
        "total_gmac": df["total_gmac"].astype(float),
        "task": task,
        "dataset": dataset,
        "metric": metric,
        "value": df["value"].astype(float),
        "error": 1.0 - df["value"].astype(float) / 100.0,
        "epoch": pd.array([pd.NA] * len(df), dtype="Int64"),
        "final": True,
        "checkpoint": "openai/" + arch,
    })


def load_linear_probe(directory: Path | None = None) -> pd.DataFrame:
    """Table 5 (linear probing on VTAB, ImageNet and CIFAR-100 with 10, 25 shots or the full
    training set): LAION runs as "published", CLIP-WIT ones as "openai"."""
    df = _read(LINEAR_PROBE, ["model", "samples_seen", "data", "samples_seen_exact", "gmac_per_sample",
                              "total_gmac_exact", "probe", "top1"], directory)
    unknown = sorted(set(df["probe"]) - set(LINEAR_PROBES))
    if unknown:
        raise ReferenceError(f"reference table {df.attrs['path']}: unknown probes {unknown}")
    _check_close(df, df["total_gmac_exact"], df["gmac_per_sample"] * df["samples_seen_exact"],
                 "total_gmac_exact != gmac_per_sample x samples_seen_exact")
    arch_ids = _arch_ids(directory)
    hp = load_hparams(directory)
    ckpt = {(r.model, r.data, r.samples_seen): r.checkpoint for r in hp.itertuples()}
    openai = df["data"] == OPENAI_DATA
    checkpoints = []
    for r, is_openai in zip(df.itertuples(), openai):
        if is_openai:
            checkpoints.append("openai/" + arch_ids[r.model])
        elif (r.model, r.data, r.samples_seen) in ckpt:
            checkpoints.append(ckpt[(r.model, r.data, r.samples_seen)])
        else:
            raise ReferenceError(
                f"reference table {df.attrs['path']}: no checkpoint in {HPARAMS} for "
                f"{r.model} {r.data} {r.samples_seen}"
            )
    dataset, metric = zip(*(LINEAR_PROBES[p] for p in df["probe"]))
    samples = df["samples_seen_exact"].round().astype("int64")
    return pd.DataFrame({
        "source": np.where(openai, "openai", "published"),
        "model": df["model"],
        "arch_id": df["model"].map(arch_ids),
        "data": df["data"],
        "samples_seen": samples,
        "samples_seen_label": np.where(openai, [format_count(int(s)) for s in samples],
                                       df["samples_seen"].astype(str)),
        "gmac_per_sample": df["gmac_per_sample"].astype(float),
        "total_gmac": df["total_gmac_exact"].astype(float),
        "task": "linear_probe",
        "dataset": dataset,
        "metric": metric,
        "value": df["top1"].astype(float),
        "error": 1.0 - df["top1"].astype(float) / 100.0,
        "epoch": pd.array([pd.NA] * len(df), dtype="Int64"),
        "final": True,
        "checkpoint": checkpoints,
    })


def load_published(directory: Path | None = None) -> pd.DataFrame:
    """All published results (OpenCLIP and OpenAI) as one validated results table, with the
    optional ``data_size`` column (unique samples of LAION-80M/400M/2B and WIT)."""
    df = pd.concat(
        [load_zeroshot(directory), load_openai(directory), load_linear_probe(directory)], ignore_index=True
    )
    df["data_size"] = df["data"].map(DATA_SIZES).astype("Int64")
    return validate_table(df[RESULTS_COLUMNS + ["data_size"]], where=str(directory or REFERENCE_DIR))
