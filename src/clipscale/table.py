"""The tidy results table: one row per checkpoint x dataset x metric.

Every results table of the pipeline has these columns, in this order: the paper's published
numbers (``clipscale.reference``), OpenAI's reference models, and our own evaluated runs. The
fit and the figures read nothing else, so a table that passes ``validate_table`` can be fitted
and drawn whatever produced it.

=================== ======= =====================================================================
column              dtype   meaning
=================== ======= =====================================================================
source              str     "published" (the paper's OpenCLIP runs), "openai" (OpenAI CLIP),
                            "ours" (runs of this pipeline, the paper's cosine schedule),
                            "ours-cooldown" (runs of this pipeline, const-cooldown schedule) or
                            "released" (checkpoints released with the paper, evaluated by this
                            pipeline)
model               str     architecture as shown in figures ("ViT-B/32", or our model's label)
arch_id             str     open_clip name of the architecture ("ViT-B-32", our model name)
data                str     training set ("LAION-400M", "CLIP-WIT", our scale's name)
samples_seen        int     EXACT number of samples the run saw (samples per epoch x epochs)
samples_seen_label  str     nominal label of the run ("13B", "24k")
gmac_per_sample     float   image + text forward GMAC of one sample
total_gmac          float   gmac_per_sample x samples_seen: the compute axis C
task                str     clip_benchmark task: zeroshot_classification, zeroshot_retrieval,
                            linear_probe; or the fine-tuning protocols (the paper's Sec. 4.4):
                            finetune (metric ft_acc1...), patching (patched_acc1)
dataset             str     downstream set ("imagenet1k", "mscoco_captions", "vtab+", "shapes")
metric              str     "acc1", "image_retrieval_recall@5", "lp_acc1_10shot", ...
value               float   the metric in percent, 0-100 (higher is better)
error               float   1 - value/100, a fraction in [0, 1]: the E of E = beta C^alpha
epoch               Int64   checkpoint's epoch, <NA> where unknown (published numbers)
final               bool    the run's final checkpoint
checkpoint          str     checkpoint file name or path
=================== ======= =====================================================================

Extra columns are kept after these (``data_size``, the number of unique samples of the training
set, is used by the figures when present; ``seed``, the seed index of our run when grid.seeds > 1,
<NA> for other sources: the fits treat rows that differ only in it as one cell's repeats).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from clipscale.config import format_count

RESULTS_COLUMNS: list[str] = [
    "source",
    "model",
    "arch_id",
    "data",
    "samples_seen",
    "samples_seen_label",
    "gmac_per_sample",
    "total_gmac",
    "task",
    "dataset",
    "metric",
    "value",
    "error",
    "epoch",
    "final",
    "checkpoint",
]

DTYPES: dict[str, str] = {
    "source": "object",
    "model": "object",
    "arch_id": "object",
    "data": "object",
    "samples_seen": "int64",
    "samples_seen_label": "object",
    "gmac_per_sample": "float64",
    "total_gmac": "float64",
    "task": "object",
    "dataset": "object",
    "metric": "object",
    "value": "float64",
    "error": "float64",
    "epoch": "Int64",
    "final": "bool",
    "checkpoint": "object",
}

#: Optional columns understood by the fit and the figures.
OPTIONAL_COLUMNS: dict[str, str] = {"data_size": "Int64", "seed": "Int64"}

SOURCES = ("published", "openai", "ours", "ours-cooldown", "released")
TASKS = ("zeroshot_classification", "zeroshot_retrieval", "linear_probe", "finetune", "patching")

#: Columns that identify one row.
KEY = ["source", "model", "data", "samples_seen", "checkpoint", "epoch", "task", "dataset", "metric"]

_STRING_COLUMNS = [c for c, t in DTYPES.items() if t == "object"]
_TOL = 1e-6


class TableError(ValueError):
    """A results table that breaks the format."""


def empty_table() -> pd.DataFrame:
    """A table with the columns and dtypes and no row."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in DTYPES.items()})


def complete(df: pd.DataFrame) -> pd.DataFrame:
    """Fill the derived columns where they are missing or NA: error from value, total_gmac from
    gmac_per_sample x samples_seen, samples_seen_label from samples_seen, epoch as <NA>.

    For producers of tables (the evaluation's aggregation): build the rows with the measured
    columns, call ``complete`` then ``validate_table``.
    """
    out = df.copy()
    if "error" not in out:
        out["error"] = np.nan
    if "total_gmac" not in out:
        out["total_gmac"] = np.nan
    if "samples_seen_label" not in out:
        out["samples_seen_label"] = None
    if "epoch" not in out:
        out["epoch"] = pd.NA
    value = pd.to_numeric(out["value"], errors="coerce")
    out["error"] = pd.to_numeric(out["error"], errors="coerce").fillna(1.0 - value / 100.0)
    gmac = pd.to_numeric(out["gmac_per_sample"], errors="coerce")
    samples = pd.to_numeric(out["samples_seen"], errors="coerce")
    out["total_gmac"] = pd.to_numeric(out["total_gmac"], errors="coerce").fillna(gmac * samples)
    missing = out["samples_seen_label"].isna()
    out.loc[missing, "samples_seen_label"] = [
        format_count(int(s)) if pd.notna(s) else None for s in samples[missing]
    ]
    return out


def _fail(where: str, problems: list[str]) -> None:
    if problems:
        raise TableError(f"invalid results table {where}:\n" + "\n".join(f"  - {p}" for p in problems))


def _examples(mask: pd.Series, df: pd.DataFrame, n: int = 3) -> str:
    rows = df.loc[mask].head(n)
    return "; ".join(
        f"row {i}: {r.get('source')}/{r.get('model')}/{r.get('data')}/{r.get('samples_seen')}"
        f" {r.get('dataset')}/{r.get('metric')}"
        for i, r in rows.iterrows()
    )


def validate_table(df: pd.DataFrame, where: str = "(in memory)") -> pd.DataFrame:
    """Check a results table; return it with canonical dtypes and column order.

    Raises TableError naming ``where`` (a file name) and every problem found: missing columns,
    unknown source or task, values outside 0-100, error != 1 - value/100, total_gmac !=
    gmac_per_sample x samples_seen, non-positive compute, duplicate rows.
    """
    missing = [c for c in RESULTS_COLUMNS if c not in df.columns]
    _fail(where, [f"missing columns {missing} (a results table has {RESULTS_COLUMNS})"] if missing else [])
    df = df.copy()
    problems: list[str] = []

    for col in _STRING_COLUMNS:
        nulls = df[col].isna()
        if nulls.any():
            problems.append(f"column {col!r} has {int(nulls.sum())} empty values ({_examples(nulls, df)})")
        df[col] = df[col].astype(object).where(~nulls, None)
        df.loc[~nulls, col] = df.loc[~nulls, col].astype(str)
    for col in ("samples_seen", "gmac_per_sample", "total_gmac", "value", "error"):
        numeric = pd.to_numeric(df[col], errors="coerce")
        bad = numeric.isna() | ~np.isfinite(numeric.astype(float))
        if bad.any():
            problems.append(f"column {col!r} has {int(bad.sum())} missing or non-numeric values ({_examples(bad, df)})")
        df[col] = numeric
    epoch = pd.to_numeric(df["epoch"], errors="coerce")
    if (epoch.notna() & (epoch != epoch.round())).any():
        problems.append("column 'epoch' has non-integer values")
    final = df["final"]
    if final.isna().any() or not set(pd.unique(final.astype(object))) <= {True, False, 0, 1}:
        problems.append("column 'final' must hold booleans")
    _fail(where, problems)

    bad = ~df["source"].isin(SOURCES)
    if bad.any():
        problems.append(f"unknown source {sorted(set(df.loc[bad, 'source']))} (expected one of {list(SOURCES)})")
    bad = ~df["task"].isin(TASKS)
    if bad.any():
        problems.append(f"unknown task {sorted(set(df.loc[bad, 'task']))} (expected one of {list(TASKS)})")
    samples = df["samples_seen"]
    bad = (samples <= 0) | (samples != samples.round())
    if bad.any():
        problems.append(f"samples_seen must be positive integers ({_examples(bad, df)})")
    bad = df["gmac_per_sample"] <= 0
    if bad.any():
        problems.append(f"gmac_per_sample must be > 0 ({_examples(bad, df)})")
    bad = (df["value"] < 0) | (df["value"] > 100)
    if bad.any():
        problems.append(f"value must be a percentage in [0, 100] ({_examples(bad, df)})")
    bad = (df["error"] - (1.0 - df["value"] / 100.0)).abs() > _TOL
    if bad.any():
        problems.append(f"error must equal 1 - value/100 ({_examples(bad, df)})")
    expected = df["gmac_per_sample"] * df["samples_seen"]
    bad = (df["total_gmac"] - expected).abs() > _TOL * expected.abs().clip(lower=1.0)
    if bad.any():
        problems.append(f"total_gmac must equal gmac_per_sample x samples_seen ({_examples(bad, df)})")
    _fail(where, problems)

    df["samples_seen"] = df["samples_seen"].round().astype("int64")
    df["epoch"] = epoch.astype("Int64")
    df["final"] = df["final"].astype(bool)
    dup = df.duplicated(KEY, keep=False)
    if dup.any():
        problems.append(f"{int(dup.sum())} duplicate rows on {KEY} ({_examples(dup, df)})")
    _fail(where, problems)

    for col, dtype in OPTIONAL_COLUMNS.items():
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(dtype)
    extra = [c for c in df.columns if c not in RESULTS_COLUMNS]
    return df[RESULTS_COLUMNS + extra].reset_index(drop=True)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a results table (.parquet or .csv) and validate it; errors name the file."""
    path = Path(path)
    if not path.exists():
        raise TableError(f"results table not found: {path}")
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        elif path.suffix == ".csv":
            df = pd.read_csv(path)
        else:
            raise TableError(f"results table {path}: unknown format (expected .parquet or .csv)")
    except TableError:
        raise
    except Exception as e:  # pyarrow / parser errors: name the file
        raise TableError(f"results table {path} cannot be read: {e}") from None
    return validate_table(df, where=str(path))


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Validate and write a results table; the format follows the suffix (.parquet or .csv)."""
    path = Path(path)
    df = validate_table(df, where=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        raise TableError(f"cannot write results table {path}: unknown format (expected .parquet or .csv)")


def concat(tables: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate validated tables (empty input gives an empty table)."""
    tables = [t for t in tables if len(t)]
    if not tables:
        return empty_table()
    return validate_table(pd.concat(tables, ignore_index=True), where="(concatenated tables)")


def add_group_means(df: pd.DataFrame, groups: Mapping[str, Iterable[str]]) -> pd.DataFrame:
    """Add rows with dataset=<group> holding the mean of the group's datasets.

    For each checkpoint x task x metric that has a value for every dataset of the group, one row
    with the average value (e.g. "imagenet_robustness" over ImageNet-V2, -R, -Sketch, -A,
    ObjectNet, as the paper's Table 20). Groups already present as a dataset, and groups of a
    single dataset (their mean is that dataset), are left alone.
    """
    out = [df]
    present = set(df["dataset"])
    ident = [c for c in KEY if c not in ("dataset",)]
    for group, members in groups.items():
        members = sorted(set(members))
        if group in present or len(members) < 2:
            continue
        sub = df[df["dataset"].isin(members)]
        if sub.empty:
            continue
        other = [c for c in df.columns if c not in ident and c not in ("value", "error", "dataset")]
        spec = {c: (c, "first") for c in other}
        spec.update(value=("value", "mean"), n_members=("dataset", "nunique"))
        rows = sub.groupby(ident, dropna=False, sort=False).agg(**spec).reset_index()
        rows = rows[rows["n_members"] == len(members)].drop(columns="n_members")
        if rows.empty:
            continue
        rows["error"] = 1.0 - rows["value"] / 100.0
        rows["dataset"] = group
        out.append(rows[df.columns])
    return validate_table(pd.concat(out, ignore_index=True), where="(with group means)")


def set_groups(spec: Mapping) -> list[str]:
    """The groups of one downstream set: its ``group``, a name or a list of names."""
    group = spec.get("group")
    if not group:
        return []
    return [group] if isinstance(group, str) else list(group)


def groups_of(config: Mapping) -> dict[str, list[str]]:
    """config.downstream groups: group name -> member datasets (for ``add_group_means``); a set
    with a list of groups is a member of each. ``config`` may be a rule's settings (clipscale.shaping),
    without downstream."""
    groups: dict[str, list[str]] = {}
    for name, spec in config.get("downstream", {}).items():
        for group in set_groups(spec):
            groups.setdefault(group, []).append(name)
    return groups


MAIN_GROUP = "main"


def main_set(config: Mapping) -> str | None:
    """The main downstream set (the paper's ImageNet; both bottleneck figures show it): the set in
    group "main", else the only zero-shot classification set; None when there is none (or several,
    none in group main: ``problems`` refuses that unless config.figures is given). Named,
    not the first key: reordering config.downstream changes no figure's set."""
    down = config["downstream"]
    marked = [name for name, spec in down.items() if MAIN_GROUP in set_groups(spec)]
    if marked:
        return marked[0] if len(marked) == 1 else None
    cls = [name for name, spec in down.items() if "zeroshot_classification" in spec["tasks"]]
    return cls[0] if len(cls) == 1 else None


def main_set_problems(config: Mapping) -> list[str]:
    """Group main holding more than one set, or a set without zero-shot classification; several
    zero-shot classification sets and none in group main while the default figures are drawn."""
    down = config["downstream"]
    marked = [name for name, spec in down.items() if MAIN_GROUP in set_groups(spec)]
    cls = sorted(name for name, spec in down.items() if "zeroshot_classification" in spec["tasks"])
    if len(marked) > 1:
        return [f"downstream: {', '.join(marked)} are all in group {MAIN_GROUP!r}: the main set (the "
                f"bottleneck figures') is one set"]
    if marked and marked[0] not in cls:
        return [f"downstream.{marked[0]}.group: {MAIN_GROUP!r}: the main set is shown zero-shot (the "
                f"bottleneck figures): its tasks need zeroshot_classification"]
    if not marked and len(cls) > 1 and config.get("figures") is None:
        return [f"downstream: no set is in group {MAIN_GROUP!r}: the bottleneck figures show the main set; "
                f"put one of {cls} in it (e.g. group: {MAIN_GROUP}, or a list of groups with {MAIN_GROUP})"]
    return []


def problems(config: Mapping) -> list[str]:
    """The results table's groups of downstream sets: the main set (``main_set_problems``), and a
    group named as a set (the table would hold the set, not the group's mean)."""
    out = main_set_problems(config)
    for name, spec in config["downstream"].items():
        for g in set_groups(spec):
            if g in config["downstream"]:
                out.append(f"downstream.{name}.group: {g!r} is also a downstream set's name "
                           f"(the results table would hold the set, not the group's mean)")
    return out


_COUNT_IN_NAME = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([kKMBG])\b")


def data_size(name: str, known: Mapping[str, int] | None = None) -> float:
    """Number of unique samples of a training set: from ``known`` (config scales), else from a
    count in its name ("LAION-400M" -> 4e8, "CLIP-WIT" -> nan)."""
    if known and name in known:
        return float(known[name])
    m = _COUNT_IN_NAME.search(name)
    if not m:
        return math.nan
    scale = {"k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9}[m.group(2)]
    return float(m.group(1)) * scale
