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
from typing import Mapping

import numpy as np
import pandas as pd

from clipscale.config import checked_count, format_count
from clipscale.table import RESULTS_COLUMNS, validate_table

log = logging.getLogger(__name__)

REFERENCE_DIR = Path(str(resources.files("clipscale") / "data" / "reference"))

ZEROSHOT = "zeroshot_tables_long.csv"
OPENAI = "openai_clip_reference.csv"
LINEAR_PROBE = "table05_linear_probe.csv"
ARCHITECTURES = "table25_architectures.csv"
HPARAMS = "table18_training_hparams_resources.csv"
OVERLAP = "table03_phash_overlap.csv"
VTAB_PLUS = "table17_vtabplus_per_dataset_laion2b.csv"

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

#: Table 17's names of the 35 VTAB+ tasks -> our downstream set names (config/paper.yaml): the
#: clip_benchmark dataset name (its "vtab+" collection, less voc2007_multilabel), without the
#: "vtab/" prefix of the VTAB-split sets (clip_benchmark name wds/vtab/<name>). Its "VTAB+ (Avg.)"
#: column is their plain mean (Table 16's vtab+).
VTAB_PLUS_DATASETS = {
    "INet": "imagenet1k", "INet-v2": "imagenetv2", "INet-S": "imagenet_sketch", "INet-A": "imagenet-a",
    "INet-R": "imagenet-r", "ObjNet": "objectnet",
    "CIFAR-10": "cifar10", "CIFAR-100": "cifar100", "MNIST": "mnist", "Flowers102": "flowers", "Cars": "cars",
    "SVHN": "svhn", "FER2013": "fer2013", "RenderedSST2": "renderedsst2", "Pets": "pets",
    "Caltech-101": "caltech101", "VOC2007-Cl": "voc2007", "SUN397": "sun397", "FGVC Aircraft": "fgvc_aircraft",
    "Country211": "country211", "DTD": "dtd", "GTSRB": "gtsrb", "STL10": "stl10",
    "Retino": "diabetic_retinopathy", "EuroSAT": "eurosat", "RESISC45": "resisc45", "PCAM": "pcam",
    "CLEVR Counts": "clevr_count_all", "CLEVR Dist": "clevr_closest_object_distance",
    "DSprites Orient": "dsprites_label_orientation", "DSprites pos": "dsprites_label_x_position",
    "SmallNORB Elv": "smallnorb_label_elevation", "SmallNORB Azim": "smallnorb_label_azimuth",
    "DMLAB": "dmlab", "KITTI Dist": "kitti_closest_vehicle_distance",
}
VTAB_PLUS_AVERAGE = "VTAB+ (Avg.)"
#: the sets of Table 5's "VTAB" linear probe (the mean of their full-data probes): the 19
#: VTAB-split sets of clip_benchmark's probe_benchmark/generate_table.py, i.e. VTAB's 19 tasks with
#: CIFAR-10 in place of SUN397
VTAB_LINEAR_PROBE_DATASETS = (
    "caltech101", "cifar10", "cifar100", "clevr_count_all", "clevr_closest_object_distance",
    "diabetic_retinopathy", "dmlab", "dsprites_label_orientation", "dsprites_label_x_position", "dtd",
    "eurosat", "kitti_closest_vehicle_distance", "flowers", "pets", "pcam", "resisc45",
    "smallnorb_label_azimuth", "smallnorb_label_elevation", "svhn",
)


#: Fine-tuning (Sec. 4.4, supplement B.2.2): Tables 6-8 (the eight tasks and ImageNet as control)
#: and Table 9 (ImageNet fine-tuning with its robustness sets).
FINETUNE_ZEROSHOT = "table06_zeroshot_eight_tasks.csv"
FINETUNE_JOINT = "table07_finetuned_eight_tasks.csv"
FINETUNE_PATCHED = "table08_patched_eight_tasks.csv"
FINETUNE_IMAGENET = "table09_imagenet_finetune.csv"
#: the paper's names of the fine-tuning sets -> clip_benchmark's dataset names
FINETUNE_DATASETS = {"ImageNet": "imagenet1k", "Cars": "cars", "DTD": "dtd", "EuroSAT": "eurosat",
                     "GTSRB": "gtsrb", "MNIST": "mnist", "RESISC45": "resisc45", "SUN397": "sun397",
                     "SVHN": "svhn"}
#: Table 9's columns -> datasets (ImageNet's test split and its robustness sets)
IMAGENET_FINETUNE_SETS = {"imagenet": "imagenet1k", "imagenet_real": "imagenet-real",
                          "imagenet_v2": "imagenetv2", "imagenet_a": "imagenet-a",
                          "imagenet_r": "imagenet-r", "imagenet_sketch": "imagenet_sketch"}
#: Table 9 lists no samples seen: its LAION-2B models are the 34B-samples runs of Table 18 (the
#: released ViT-B/32, B/16, L/14 and H/14 LAION-2B checkpoints), its CLIP-WIT ones OpenAI's.
IMAGENET_FINETUNE_SAMPLES = {"LAION-2B": "34B"}
#: the metrics of the fine-tuning protocols (task "finetune" or "patching"): jointly on the eight
#: tasks (Table 7), patched (Table 8), on ImageNet alone (Table 9; its variants, an ImageNet-12k
#: step first or a larger image size, are metrics of their own: imagenet_ft_acc1_384px_in12k)
FT_METRIC, PATCHED_METRIC, IMAGENET_FT_METRIC = "ft_acc1", "patched_acc1", "imagenet_ft_acc1"


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


def _pretrained_runs(directory: Path | None) -> dict[tuple[str, str, str], dict]:
    """(model, data, samples label) -> the pre-training run's columns of the results table, for the
    paper's LAION runs (Table 18) and OpenAI's CLIP (WIT, 12.8B samples, label 13B)."""
    arch_ids, gmac = _arch_ids(directory), gmac_lookup(directory)
    out = {}
    for r in load_hparams(directory).itertuples():
        samples = int(round(float(r.samples_seen_exact)))
        out[(r.model, r.data, str(r.samples_seen))] = {
            "source": "published", "arch_id": arch_ids[r.model], "samples_seen": samples,
            "samples_seen_label": str(r.samples_seen), "gmac_per_sample": gmac[r.model],
            "total_gmac": gmac[r.model] * samples, "checkpoint": r.checkpoint}
    openai = load_openai(directory).drop_duplicates("model")
    for r in openai.itertuples():
        out[(r.model, OPENAI_DATA, "13B")] = {
            "source": "openai", "arch_id": r.arch_id, "samples_seen": int(r.samples_seen),
            "samples_seen_label": r.samples_seen_label, "gmac_per_sample": float(r.gmac_per_sample),
            "total_gmac": float(r.total_gmac), "checkpoint": r.checkpoint}
    return out


def _finetune_rows(df: pd.DataFrame, runs: Mapping, task: str, metric: str, dataset: pd.Series,
                   value: pd.Series, samples_label: pd.Series) -> pd.DataFrame:
    rows = []
    for r, ds, v, label in zip(df.itertuples(), dataset, value, samples_label):
        run = runs.get((r.model, r.data, label))
        if run is None:
            raise ReferenceError(f"reference table {df.attrs['path']}: no pre-training run {r.model} "
                                 f"{r.data} {label} in {HPARAMS} or {OPENAI}")
        rows.append({**run, "model": r.model, "data": r.data, "task": task, "dataset": ds,
                     "metric": metric, "value": float(v)})
    out = pd.DataFrame(rows)
    out["error"] = 1.0 - out["value"] / 100.0
    out["epoch"] = pd.array([pd.NA] * len(out), dtype="Int64")
    out["final"] = True
    return out


def load_finetune(directory: Path | None = None) -> pd.DataFrame:
    """The paper's fine-tuning results (Sec. 4.4), at the compute of their pre-training runs:
    Table 6 (zero-shot on ImageNet and the eight fine-tuning tasks; task zeroshot_classification,
    metric acc1), Table 7 (the vision encoder fine-tuned jointly on the eight tasks; task
    finetune, metric ft_acc1), Table 8 (patched; task patching, metric patched_acc1, ImageNet
    the control) and Table 9 (fine-tuned on ImageNet alone, evaluated on it and its robustness
    sets; task finetune, metric imagenet_ft_acc1 at 224 px, imagenet_ft_acc1_<size>px at a larger
    size, ..._in12k after an ImageNet-12k step). Zero-shot ImageNet rows are Table 19's (see below)."""
    runs = _pretrained_runs(directory)
    frames = []
    for name, task, metric in ((FINETUNE_ZEROSHOT, "zeroshot_classification", "acc1"),
                               (FINETUNE_JOINT, "finetune", FT_METRIC),
                               (FINETUNE_PATCHED, "patching", PATCHED_METRIC)):
        df = _read(name, ["model", "samples_seen", "data", "dataset", "top1"], directory)
        unknown = sorted(set(df["dataset"]) - set(FINETUNE_DATASETS))
        if unknown:
            raise ReferenceError(f"reference table {df.attrs['path']}: unknown datasets {unknown}")
        frames.append(_finetune_rows(df, runs, task, metric, df["dataset"].map(FINETUNE_DATASETS),
                                     df["top1"], df["samples_seen"].astype(str)))
    df = _read(FINETUNE_IMAGENET, ["model", "image_size", "data", "extra_ft", *IMAGENET_FINETUNE_SETS], directory)
    bad = sorted(set(df["data"]) - set(IMAGENET_FINETUNE_SAMPLES) - {OPENAI_DATA})
    if bad:
        raise ReferenceError(f"reference table {df.attrs['path']}: unknown training data {bad}")
    label = df["data"].map(IMAGENET_FINETUNE_SAMPLES).fillna("13B")
    variant = [IMAGENET_FT_METRIC + ("" if size == 224 else f"_{size}px") + ("" if str(extra) in ("None", "nan") else
                                                                       "_" + str(extra).lower().replace("-", ""))
               for size, extra in zip(df["image_size"], df["extra_ft"])]
    for column, dataset in IMAGENET_FINETUNE_SETS.items():
        part = _finetune_rows(df, runs, "finetune", "", pd.Series([dataset] * len(df)), df[column], label)
        part["metric"] = variant
        frames.append(part)
    out = pd.concat(frames, ignore_index=True)
    # Table 6's ImageNet zero-shot rows are runs that Table 19 (and OpenAI's reference) already
    # holds: one row per key, theirs. (Table 6 was evaluated with the fine-tuning code: it differs
    # by -0.84 to +0.05 points, e.g. ViT-B/32 LAION-2B 34B 65.63 vs 66.47.)
    zeroshot = load_zeroshot(directory)
    known = set(zip(zeroshot["checkpoint"], zeroshot["dataset"], zeroshot["metric"]))
    openai = load_openai(directory)
    known |= set(zip(openai["checkpoint"], openai["dataset"], openai["metric"]))
    again = [(c, d, m) in known for c, d, m in zip(out["checkpoint"], out["dataset"], out["metric"])]
    return out[~np.array(again)].reset_index(drop=True)


def load_vtabplus_per_dataset(directory: Path | None = None) -> pd.DataFrame:
    """Table 17 (zero-shot top-1 of the LAION-2B runs on each of the 35 VTAB+ tasks) as a results
    table, the tasks under our set names (``VTAB_PLUS_DATASETS``), its average as dataset "vtab+".
    Not part of ``load_published``: Tables 16 and 6 hold some of the same keys (Table 6 with the
    fine-tuning code's numbers)."""
    df = _read(VTAB_PLUS, ["dataset", "model", "data", "samples_seen", "metric", "value"], directory)
    names = {**VTAB_PLUS_DATASETS, VTAB_PLUS_AVERAGE: "vtab+"}
    unknown = sorted(set(df["dataset"]) - set(names))
    if unknown:
        raise ReferenceError(f"reference table {df.attrs['path']}: unknown datasets {unknown}")
    out = _finetune_rows(df, _pretrained_runs(directory), "zeroshot_classification", "acc1",
                         df["dataset"].map(names), df["value"], df["samples_seen"].astype(str))
    return validate_table(out[RESULTS_COLUMNS], where=str(Path(directory or REFERENCE_DIR) / VTAB_PLUS))


def load_published(directory: Path | None = None) -> pd.DataFrame:
    """All published results (OpenCLIP and OpenAI) as one validated results table, with the
    optional ``data_size`` column (unique samples of LAION-80M/400M/2B and WIT)."""
    df = pd.concat(
        [load_zeroshot(directory), load_openai(directory), load_linear_probe(directory),
         load_finetune(directory)], ignore_index=True
    )
    df["data_size"] = df["data"].map(DATA_SIZES).astype("Int64")
    return validate_table(df[RESULTS_COLUMNS + ["data_size"]], where=str(directory or REFERENCE_DIR))


def problems(config: Mapping) -> list[str]:
    """fit.predictions: a count that does not parse, a model that is neither the config's nor of
    the paper's Table 25 (its GMAC per sample is unknown: the fit would skip it)."""
    predictions = config["fit"].get("predictions") or []  # no default: absent, not in the params
    if not predictions:
        return []
    models = config["models"]
    known = set(models) | {m["label"] for m in models.values() if m.get("label")} | set(gmac_lookup())
    out: list[str] = []
    for i, pred in enumerate(predictions):
        checked_count(pred["samples_seen"], f"fit.predictions[{i}].samples_seen", out)
        if pred["model"] not in known:
            out.append(
                f"fit.predictions[{i}].model: {pred['model']!r} is neither a model of the config nor "
                f"of the paper's Table 25 (its GMAC per sample is unknown: the fit would skip it)")
    return out
