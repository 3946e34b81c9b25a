"""Figures from tidy results tables: the paper's scaling plots, for its numbers and for ours.

A figure is described by a ``FigureSpec`` (name, kind, sources, datasets, metrics) and drawn from
results tables (``clipscale.table`` format) keyed by input: "published" (the paper's numbers,
sources "published" and "openai") and "ours" (source "ours"). Nothing here knows dataset names:
which task/dataset/metric a figure shows comes from its spec, so the same code draws the paper's
ImageNet figure and our embedded world's "shapes" figure.

Kinds:

- ``compute``: error (%) vs total compute C (GMAC), log-log, one panel per dataset x metric;
  points coloured by training data, marker by model, size by samples seen; one fitted line per
  source (the paper's fit: binned, or direct for OpenAI) with its bootstrap band, the formula in
  the legend ("OpenCLIP (LAION): E = 5.86·C^-0.11").
- ``data_bottleneck``: error vs samples seen, one line per data scale, one panel per model.
- ``samples_bottleneck``: error vs data scale, one line per samples seen, one panel per model.
- ``overlap``: the near-duplicate overlap table (dataset, overlap_pct) as a bar chart.

Built-in specs: ``published_specs()`` (the paper's figures, "<name>_published") and
``default_our_specs(config)`` (derived from config.downstream). ``figure_specs(config)`` gives the
configured list: built-ins, with config.figures entries added or replacing those of same name.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from clipscale import fit as fitting  # noqa: E402
from clipscale import grid  # noqa: E402
from clipscale.config import section as config_section  # noqa: E402
from clipscale.released import settings as released_settings  # noqa: E402
from clipscale.table import add_group_means, data_size, groups_of, main_set  # noqa: E402

log = logging.getLogger(__name__)

KINDS = ("compute", "data_bottleneck", "samples_bottleneck", "overlap")
# "released": the paper's released checkpoints evaluated by this pipeline (in our results table)
INPUT_OF_SOURCE = {"published": "published", "openai": "published", "ours": "ours", "ours-cooldown": "ours",
                   "released": "ours"}

SOURCE_LABELS = {"published": "OpenCLIP (LAION)", "openai": "OpenAI CLIP (WIT)", "ours": "ours",
                 "ours-cooldown": "ours, const LR + cooldown", "released": "released, re-evaluated"}
SOURCE_COLORS = {"published": "#D55E00", "openai": "#0072B2", "ours": "#B5006B", "ours-cooldown": "#E69F00",
                 "released": "#009E73"}
SOURCE_LINESTYLES = {"published": "-", "openai": "--", "ours": "-.", "ours-cooldown": (0, (1, 1)),
                     "released": ":"}
HOLLOW_SOURCES = ("ours-cooldown",)  # drawn as hollow markers in compute figures
KNOWN_DATA_COLORS = {"LAION-80M": "#1f77b4", "LAION-400M": "#ff7f0e", "LAION-2B": "#2ca02c",
                     "CLIP-WIT": "#000000"}
MARKERS = ["v", "o", "s", "P", "*", "D", "^", "X", "h", "<", ">", "p"]

DATASET_LABELS = {
    "imagenet1k": "ImageNet",
    "imagenet_robustness": "ImageNet robustness (avg. of 5 sets)",
    "vtab+": "VTAB+ (avg. of 35 tasks)",
    "vtab": "VTAB",
    "mscoco_captions": "MS-COCO",
    "flickr30k": "Flickr30K",
    "cifar100": "CIFAR-100",
    "cars": "Cars", "dtd": "DTD", "eurosat": "EuroSAT", "gtsrb": "GTSRB", "mnist": "MNIST",
    "resisc45": "RESISC45", "sun397": "SUN397", "svhn": "SVHN",
    "imagenet-real": "ImageNet-ReaL", "imagenetv2": "ImageNet-V2", "imagenet-a": "ImageNet-A",
    "imagenet-r": "ImageNet-R", "imagenet_sketch": "ImageNet-Sketch",
}
METRIC_LABELS = {
    "acc1": "zero-shot top-1",
    "image_retrieval_recall@5": "image retrieval R@5",
    "text_retrieval_recall@5": "text retrieval R@5",
    "lp_acc1": "linear probe top-1",
    "lp_acc1_full": "linear probe, full",
    "ft_acc1": "fine-tuned top-1",
    "imagenet_ft_acc1": "ImageNet-fine-tuned top-1",
    "imagenet_ft_acc1_in12k": "ImageNet-fine-tuned top-1 (ImageNet-12k first)",
    "patched_acc1": "patched top-1",
    "zeroshot_acc1": "zero-shot top-1 (the patching's heads)",
}
#: the paper's fine-tuning tasks (Sec. 4.4, Tables 6-8) and ImageNet's robustness sets (Table 9)
PUBLISHED_FINETUNE = ["imagenet1k", "cars", "dtd", "eurosat", "gtsrb", "mnist", "resisc45", "sun397", "svhn"]
PUBLISHED_IMAGENET_FINETUNE = ["imagenet1k", "imagenet-real", "imagenetv2", "imagenet-a", "imagenet-r",
                               "imagenet_sketch"]
PUBLISHED_CLASSIFICATION = ["imagenet1k", "imagenet_robustness", "vtab+"]
PUBLISHED_RETRIEVAL = ["mscoco_captions", "flickr30k"]
TITLE_FONTSIZE = 12
LABEL_FONTSIZE = 11


class FigureError(ValueError):
    """A figure that cannot be drawn from the given tables, or a bad figure spec."""


@dataclass
class FigureSpec:
    name: str
    kind: str
    sources: list[str]
    datasets: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=lambda: ["acc1"])
    title: str | None = None
    models: list[str] | None = None  # bottleneck kinds: panels for these models only
    fit: bool = True  # compute kind: draw the fitted lines
    band: bool = True  # compute kind: draw the bootstrap band of each fit
    description: str | None = None

    @property
    def inputs(self) -> list[str]:
        """Tables the figure reads: "published" and/or "ours"."""
        return sorted({INPUT_OF_SOURCE[s] for s in self.sources})

    def caption(self) -> str:
        if self.description:
            return self.description
        sources = ", ".join(SOURCE_LABELS.get(s, s) for s in self.sources)
        sets = ", ".join(dataset_label(d, "ours" in self.inputs) for d in self.datasets)
        metrics = ", ".join(metric_label(m) for m in self.metrics)
        if self.kind == "compute":
            return (f"Error ({metrics}) on {sets} against total training compute C (GMAC per sample x "
                    f"samples seen), final checkpoints of {sources}. Lines: power laws E = beta C^alpha "
                    f"fitted as in the paper (best run per equal-width bin of log10 C; OpenAI's models "
                    f"directly), shaded: bootstrap interval.")
        if self.kind == "data_bottleneck":
            return (f"Error ({metrics}) on {sets} against samples seen, one line per training data scale, "
                    f"one panel per model ({sources}): a small data scale limits what more samples seen give.")
        if self.kind == "samples_bottleneck":
            return (f"Error ({metrics}) on {sets} against training data scale, one line per number of "
                    f"samples seen, one panel per model ({sources}): few samples seen limit what more data give.")
        if self.inputs == ["published"]:
            return ("Share of each downstream test set found as a near-duplicate in LAION-400M by perceptual "
                    "hashing, as the paper reports it (Table 3).")
        return "Share of each downstream test set found as a near-duplicate in our training pool."


def dataset_label(name: str, ours: bool = False) -> str:
    """Readable name of a dataset; our sets keep their own names (ours may reuse "vtab+" as a
    group name without being the paper's VTAB+)."""
    return name if ours else DATASET_LABELS.get(name, name)


def metric_label(name: str) -> str:
    if name in METRIC_LABELS:
        return METRIC_LABELS[name]
    if name.startswith("lp_acc1_") and name.endswith("shot"):
        return f"linear probe, {name[len('lp_acc1_'):-len('shot')]}-shot"
    if "recall@" in name:
        return name.replace("_retrieval_recall@", " retrieval R@")
    return name


def error_label(metric: str) -> str:
    if "recall@" in metric:
        return f"100 − R@{metric.rsplit('@', 1)[1]} (%)"
    return "100 − top-1 accuracy (%)"


# ---------------------------------------------------------------------------------------------
# specs


def published_specs() -> list[FigureSpec]:
    """The paper's figures, drawn from its published numbers."""
    both = ["published", "openai"]
    return [
        FigureSpec("imagenet_zeroshot_published", "compute", both, ["imagenet1k"], ["acc1"],
                   title="Zero-shot ImageNet classification"),
        FigureSpec("robustness_zeroshot_published", "compute", both, ["imagenet_robustness"], ["acc1"],
                   title="Zero-shot ImageNet robustness"),
        FigureSpec("vtab_zeroshot_published", "compute", both, ["vtab+"], ["acc1"],
                   title="Zero-shot VTAB+"),
        FigureSpec("retrieval_published", "compute", both, ["mscoco_captions", "flickr30k"],
                   ["image_retrieval_recall@5", "text_retrieval_recall@5"], title="Zero-shot retrieval"),
        FigureSpec("linear_probe_published", "compute", both, ["imagenet1k", "cifar100"],
                   ["lp_acc1_10shot", "lp_acc1_25shot", "lp_acc1_full"], title="Linear probing"),
        FigureSpec("data_bottleneck_published", "data_bottleneck", ["published"], ["imagenet1k"], ["acc1"],
                   title="Data scale bottleneck (zero-shot ImageNet)"),
        FigureSpec("samples_bottleneck_published", "samples_bottleneck", ["published"], ["imagenet1k"], ["acc1"],
                   title="Samples seen bottleneck (zero-shot ImageNet)"),
        FigureSpec("overlap_published", "overlap", ["published"], title="Test sets found in LAION-400M (pHash)"),
        FigureSpec("finetune_published", "compute", both, PUBLISHED_FINETUNE, ["acc1", "ft_acc1", "patched_acc1"],
                   title="Zero-shot, fine-tuned and patched (Tables 6-8; ImageNet: the patching control)",
                   description="Error on ImageNet and the eight fine-tuning tasks against the compute of "
                               "the pre-training run (GMAC per sample x samples seen): zero-shot (Table 6; "
                               "ImageNet: Table 19), after fine-tuning the vision encoder jointly on the "
                               "eight tasks (Table 7) and after patching (Table 8). Lines: power laws fitted "
                               "as in the paper; shaded: bootstrap interval."),
        FigureSpec("imagenet_finetune_published", "compute", both, PUBLISHED_IMAGENET_FINETUNE,
                   ["imagenet_ft_acc1", "imagenet_ft_acc1_in12k"],
                   title="ImageNet fine-tuning and its robustness sets (Table 9, 224 px)",
                   description="Top-1 error after fine-tuning on ImageNet (directly, or after an "
                               "ImageNet-12k step), on ImageNet and five robustness sets, against the "
                               "compute of the pre-training run (LAION-2B: the 34B-samples runs; "
                               "CLIP-WIT: OpenAI's). Lines: power laws fitted as in the paper."),
    ]


def _lp_metrics(config: Mapping) -> list[str]:
    ks = config_section(config, "evaluate")["linear_probe_k"]
    return [f"lp_acc1_{k}shot" if k != "full" else "lp_acc1_full" for k in ks]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "", name) or "group"


def default_our_specs(config: Mapping) -> list[FigureSpec]:
    """Figures of our runs, derived from config.downstream (which sets, which tasks, groups):
    zero-shot classification of every set, the mean of each group of two or more classification
    sets, retrieval, linear probing, both bottlenecks on the main set (table.main_set), overlap,
    and, when published.enabled and the sets are real ones (not the embedded world's), our runs
    beside the paper's on the sets both evaluate."""
    downstream = config.get("downstream", {})
    ours = grid.sources(config)
    cls = [d for d, s in downstream.items() if "zeroshot_classification" in s["tasks"]]
    ret = [d for d, s in downstream.items() if "zeroshot_retrieval" in s["tasks"]]
    lp = [d for d, s in downstream.items() if "linear_probe" in s["tasks"]]
    specs = []
    if cls:
        specs.append(FigureSpec("zeroshot_ours", "compute", ours, cls, ["acc1"],
                                title="Zero-shot classification (our runs)"))
    for group, members in groups_of(config).items():
        members = [m for m in members if m in cls]
        if len(members) >= 2:
            name = f"{_safe(group)}_zeroshot_ours"
            if any(s.name == name for s in specs):  # "vtab+" and "vtab": one file name
                name = f"{_safe(group)}_{len(specs)}_zeroshot_ours"
            which = ", ".join(members) if len(members) <= 6 else f"{len(members)} sets"
            specs.append(FigureSpec(name, "compute", ours, [group], ["acc1"],
                                    title=f"Zero-shot, mean over {group} ({which})"))
    if ret:
        specs.append(FigureSpec("retrieval_ours", "compute", ours, ret,
                                ["image_retrieval_recall@5", "text_retrieval_recall@5"],
                                title="Zero-shot retrieval (our runs)"))
    if lp:
        specs.append(FigureSpec("linear_probe_ours", "compute", ours, lp, _lp_metrics(config),
                                title="Linear probing (our runs)"))
    main = main_set(config)
    if main:
        specs.append(FigureSpec("data_bottleneck_ours", "data_bottleneck", ours, [main], ["acc1"],
                                title=f"Data scale bottleneck (zero-shot {main})"))
        specs.append(FigureSpec("samples_bottleneck_ours", "samples_bottleneck", ours, [main], ["acc1"],
                                title=f"Samples seen bottleneck (zero-shot {main})"))
    specs += _finetune_specs(config, ours)
    if any(s.get("dedup", True) for s in downstream.values()):
        modes = config_section(config, "dedup")["modes"]
        how = " (pHash)" if modes == ["phash"] else ": pHash (the paper's), " + ", ".join(m for m in modes if m != "phash")
        specs.append(FigureSpec("overlap_ours", "overlap", ["ours"], title=f"Test sets found in our pool{how}"))
    real_sets = config["pool"]["source"] != "world"  # the world's sets only borrow names
    if real_sets and config_section(config, "published")["enabled"]:
        # our runs beside the paper's where we evaluate the same sets (e.g. config/paper.yaml)
        shown = cls + [g for g, m in groups_of(config).items() if len([x for x in m if x in cls]) >= 2]
        same = [d for d in PUBLISHED_CLASSIFICATION if d in shown]
        if same:
            specs.append(FigureSpec("zeroshot_vs_published", "compute", ["published", "openai", "ours"], same,
                                    ["acc1"], title="Zero-shot classification: our runs and the paper's"))
        released = released_settings(config)
        same = [d for d in PUBLISHED_CLASSIFICATION + PUBLISHED_RETRIEVAL if d in shown + ret]
        if same and (released.get("dir") or released.get("files")):
            metrics = (["acc1"] if any(d in shown for d in same) else []) + (
                ["image_retrieval_recall@5", "text_retrieval_recall@5"] if any(d in ret for d in same) else [])
            specs.append(FigureSpec("released_vs_published", "compute", ["published", "released"], same, metrics,
                                    title="Released checkpoints: our evaluation and the paper's numbers"))
        same = [d for d in PUBLISHED_RETRIEVAL if d in ret]
        if same:
            specs.append(FigureSpec("retrieval_vs_published", "compute", ["published", "openai", "ours"], same,
                                    ["image_retrieval_recall@5", "text_retrieval_recall@5"],
                                    title="Zero-shot retrieval: our runs and the paper's"))
    return specs


#: metrics of the fine-tuning jobs: in the fine-tuning table (clipscale.finetune.results), which
#: the results table, and so the fit step of our runs, never waits on
FINETUNE_METRICS = ("imagenet_ft_acc1", "ft_acc1", "zeroshot_acc1", "patched_acc1")


def reads_finetune(spec: FigureSpec) -> bool:
    """A compute figure of our runs with a fine-tuning metric: it reads the fine-tuning table
    too, and fits the fine-tuning metrics' laws itself (as the fit step fits)."""
    return spec.kind == "compute" and "ours" in spec.inputs and bool(set(spec.metrics) & set(FINETUNE_METRICS))


def _finetune_specs(config: Mapping, ours: list[str]) -> list[FigureSpec]:
    """With finetune.enabled: fine-tuned (and patched) against zero-shot error, per protocol."""
    from clipscale.finetune import plan

    if not plan.enabled(config):
        return []
    ft, out = plan.section(config), []
    if "classification" in ft["protocols"]:
        sets = plan.datasets(config, "classification")
        out.append(FigureSpec("finetune_classification_ours", "compute", ours, sets, ["acc1", "imagenet_ft_acc1"],
                              title=f"Fine-tuned on {sets[0]} (ImageNet-style) and zero-shot, our runs",
                              description=f"Top-1 error on {', '.join(sets)} against the compute of the "
                                          f"pre-training run: zero-shot (clip_benchmark) and after fine-tuning "
                                          f"the image encoder on {sets[0]} with the paper's recipe (Table 10; "
                                          f"the robustness sets with {sets[0]}'s head). Lines: power laws "
                                          f"fitted as in the paper."))
    if "patching" in ft["protocols"]:
        p = ft["patching"]
        out.append(FigureSpec("finetune_patching_ours", "compute", ours, [*p["tasks"], p["control"]],
                              ["zeroshot_acc1", "ft_acc1", "patched_acc1"],
                              title=f"Zero-shot, jointly fine-tuned and patched (control: {p['control']}), our runs",
                              description=f"Top-1 error against the compute of the pre-training run: zero-shot "
                                          f"(the heads of the joint fine-tuning), after fine-tuning the image "
                                          f"encoder jointly on {', '.join(p['tasks'])}, and patched (the mix of "
                                          f"the two with the best mean on those tasks that keeps {p['control']} "
                                          f"within {p['control_tolerance']:g} points of zero-shot). Lines: power "
                                          f"laws fitted as in the paper."))
    return out


def spec_from_dict(entry: Mapping) -> FigureSpec:
    known = {f for f in FigureSpec.__dataclass_fields__}
    unknown = set(entry) - known
    if unknown:
        raise FigureError(f"figure {entry.get('name')!r}: unknown keys {sorted(unknown)}")
    spec = FigureSpec(**{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in entry.items()})
    check_spec(spec)
    return spec


def check_spec(spec: FigureSpec) -> None:
    where = f"figure {spec.name!r}"
    if spec.kind not in KINDS:
        raise FigureError(f"{where}: unknown kind {spec.kind!r} (expected one of {list(KINDS)})")
    if not spec.sources or any(s not in INPUT_OF_SOURCE for s in spec.sources):
        raise FigureError(f"{where}: sources must be a non-empty subset of {list(INPUT_OF_SOURCE)}")
    if spec.kind != "overlap" and (not spec.datasets or not spec.metrics):
        raise FigureError(f"{where}: a {spec.kind} figure needs datasets and metrics")
    if spec.kind == "overlap" and len(spec.inputs) != 1:
        raise FigureError(f"{where}: an overlap figure shows one input (published or ours)")


def figure_specs(config: Mapping) -> list[FigureSpec]:
    """The configured figures: the paper's (if published.enabled) and ours (config.figures, or the
    defaults derived from config.downstream); config.figures entries replace same-named ones."""
    specs: dict[str, FigureSpec] = {}
    if config_section(config, "published")["enabled"]:
        specs.update((s.name, s) for s in published_specs())
    configured = config.get("figures")
    if configured is None:
        specs.update((s.name, s) for s in default_our_specs(config))
    else:
        seen = set()
        for entry in configured:
            spec = spec_from_dict(entry)
            if spec.name in seen:
                raise FigureError(f"figures: the name {spec.name!r} is used twice")
            seen.add(spec.name)
            specs[spec.name] = spec
    return list(specs.values())


def find_spec(config: Mapping, name: str) -> FigureSpec:
    for spec in figure_specs(config):
        if spec.name == name:
            return spec
    raise FigureError(f"no figure named {name!r} (configured: {[s.name for s in figure_specs(config)]})")


# ---------------------------------------------------------------------------------------------
# drawing helpers


def _style_maps(df: pd.DataFrame, data_sizes: Mapping[str, int] | None):
    data = _order_data(df, data_sizes)
    # the paper's sets keep the paper's colours; others (our scales) a sequential palette in
    # order of size, light (small) to dark (large)
    unknown = [d for d in data if d not in KNOWN_DATA_COLORS]
    cmap = plt.get_cmap("viridis")
    colors = {d: KNOWN_DATA_COLORS[d] for d in data if d in KNOWN_DATA_COLORS}
    for i, d in enumerate(unknown):
        colors[d] = cmap(0.85 - 0.7 * i / max(len(unknown) - 1, 1))
    models = (df.groupby("model")["gmac_per_sample"].median().sort_values().index.tolist())
    markers = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(models)}
    labels = _order_samples(df)
    sizes = {lab: s for lab, s in zip(labels, np.linspace(35, 160, max(len(labels), 1)))}
    return colors, markers, sizes


def _order_data(df: pd.DataFrame, data_sizes: Mapping[str, int] | None) -> list[str]:
    names = list(dict.fromkeys(df["data"]))
    known = dict(data_sizes or {})
    if "data_size" in df:
        for d, s in df.groupby("data")["data_size"].first().items():
            if pd.notna(s):
                known.setdefault(d, int(s))
    size = {d: data_size(d, known) for d in names}
    rank = {"published": 0, "released": 1, "ours": 2, "ours-cooldown": 2, "openai": 3}
    source = {d: min(rank.get(s, 3) for s in df.loc[df["data"] == d, "source"]) for d in names}
    return sorted(names, key=lambda d: (source[d], math.isnan(size[d]), 0 if math.isnan(size[d]) else size[d], d))


def _order_samples(df: pd.DataFrame) -> list[str]:
    med = df.groupby("samples_seen_label")["samples_seen"].median().sort_values()
    return med.index.tolist()


def _log_error_axis(ax, values: np.ndarray) -> None:
    ax.set_yscale("log")
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    span = math.log10(hi / lo) if lo > 0 and hi > lo else 0.0
    if span < 0.6:
        subs = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)
    elif span < 1.2:
        subs = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
    else:
        subs = (1.0, 2.0, 3.0, 5.0)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    top = hi * 10 ** max(0.04, 0.08 * span)
    if hi <= 100:  # an error rate: fitted lines may overshoot 100 % at small compute
        top = min(top, 100.0 * 10 ** 0.02)
    ax.set_ylim(lo / 10 ** max(0.04, 0.08 * span), top)


def _grid(n_rows: int, n_cols: int, width: float = 5.2, height: float = 4.2):
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width * n_cols + 2.6, height * n_rows), squeeze=False)
    return fig, axes


_RUN_STYLE = {"hue": "data", "style": "model", "size": "samples_seen_label"}
_RUN_LEGEND_TITLES = {"data": "Training data", "model": "Model", "samples_seen_label": "Samples seen"}


def _run_points(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.assign(error_pct=100 * rows["error"])


def _scatter_runs(ax, rows: pd.DataFrame, colors, markers, sizes) -> None:
    """One marker per run (seaborn): colour = training data, shape = model, size = samples seen;
    runs of HOLLOW_SOURCES (const-cooldown) hollow, in the colour of their data."""
    import seaborn as sns  # here: importing this module (the Snakefile does) stays quick

    for hollow in (False, True):
        part = rows[rows["source"].isin(HOLLOW_SOURCES) == hollow]
        if part.empty:
            continue
        sns.scatterplot(data=_run_points(part), x="total_gmac", y="error_pct", **_RUN_STYLE,
                        palette=colors, hue_order=list(colors), markers=markers, style_order=list(markers),
                        sizes=sizes, size_order=list(sizes), alpha=0.85, zorder=3, legend=False, ax=ax,
                        edgecolor="white", linewidth=0.6)
        if hollow:
            points = ax.collections[-1]
            points.set_edgecolors(points.get_facecolors())
            points.set_facecolors("none")
            points.set_linewidths(1.6)


def _side_legend_of_runs(fig, df: pd.DataFrame, colors, markers, sizes) -> None:
    """seaborn's legend of the run markers (data, model, samples seen; samples seen only when
    they vary), beside the panels, its section titles in bold."""
    import seaborn as sns  # here: importing this module (the Snakefile does) stays quick

    probe_fig, probe = plt.subplots()
    sns.scatterplot(data=_run_points(df), x="total_gmac", y="error_pct", **_RUN_STYLE, palette=colors,
                    hue_order=[d for d in colors if d in set(df["data"])], markers=markers,
                    style_order=[m for m in markers if m in set(df["model"])], sizes=sizes,
                    size_order=[s for s in sizes if s in set(df["samples_seen_label"])], legend="full", ax=probe)
    handles, labels = probe.get_legend_handles_labels()
    plt.close(probe_fig)
    keep_sizes = df["samples_seen_label"].nunique() > 1
    out_h, out_l, section = [], [], None
    for h, lab in zip(handles, labels):
        if lab in _RUN_LEGEND_TITLES:
            section = lab
            if section == "samples_seen_label" and not keep_sizes:
                continue
            out_h.append(Line2D([], [], linestyle=""))
            out_l.append(_RUN_LEGEND_TITLES[lab])
        elif section != "samples_seen_label" or keep_sizes:
            out_h.append(h)
            out_l.append(lab)
    leg = fig.legend(out_h, out_l, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
                     fontsize=9, handletextpad=0.4, borderaxespad=0.2)
    for text, lab in zip(leg.get_texts(), out_l):
        if lab in _RUN_LEGEND_TITLES.values():
            text.set_fontweight("bold")


def _panels(spec: FigureSpec, df: pd.DataFrame) -> list[tuple[str, str]]:
    panels = [(d, m) for d in spec.datasets for m in spec.metrics
              if ((df["dataset"] == d) & (df["metric"] == m)).any()]
    if not panels:
        have = sorted(set(zip(df["dataset"], df["metric"])))[:20]
        raise FigureError(
            f"figure {spec.name!r}: no final results for datasets {spec.datasets} x metrics {spec.metrics} "
            f"from sources {spec.sources} (the tables have {have})"
        )
    return panels


def _layout(spec: FigureSpec, panels: list[tuple[str, str]]) -> tuple[int, int, dict]:
    datasets = list(dict.fromkeys(d for d, _ in panels))
    metrics = list(dict.fromkeys(m for _, m in panels))
    if len(datasets) > 1 and len(metrics) > 1:
        return len(datasets), len(metrics), {p: (datasets.index(p[0]), metrics.index(p[1])) for p in panels}
    n_cols = min(len(panels), 3)
    n_rows = math.ceil(len(panels) / n_cols)
    return n_rows, n_cols, {p: divmod(i, n_cols) for i, p in enumerate(panels)}


def _select(spec: FigureSpec, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    parts = []
    for inp in spec.inputs:
        if inp not in tables:
            raise FigureError(f"figure {spec.name!r} needs the {inp!r} results table")
        parts.append(tables[inp])
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    df = fitting.final_points(df)
    df = df[df["source"].isin(spec.sources) & df["dataset"].isin(spec.datasets) & df["metric"].isin(spec.metrics)]
    if spec.models:
        df = df[df["model"].isin(spec.models)]
    return df


# ---------------------------------------------------------------------------------------------
# the kinds


def fit_laws(tables: Mapping[str, pd.DataFrame], fit_config: Mapping | None = None,
             seed: int = 0) -> dict[tuple[str, str, str], fitting.Fit]:
    """The paper's laws of result tables (input -> table, group means added), fitted as the fit
    step fits them (``fit.fit_table``): for drawing without the fit step's outputs."""
    st = fitting.FitSettings.of(fit_config)
    laws = {}
    for input_name, table in tables.items():
        fits = fitting.fit_table(table, input_name=input_name, bins=st.bins, bootstrap=st.bootstrap, ci=st.ci,
                                 seed=seed, methods=("paper",), pad=st.bin_pad)
        laws.update(fitting.paper_laws(fits))
    return laws


def draw_compute(spec: FigureSpec, tables: Mapping[str, pd.DataFrame],
                 laws: Mapping[tuple[str, str, str], fitting.Fit], data_sizes: Mapping[str, int] | None = None):
    """Points of the tables and the laws of the fit step ((source, dataset, metric) -> the paper's
    fit, ``fit.laws_from_frames`` or ``fit_laws``): a line per source, its bootstrap band."""
    df = _select(spec, tables)
    panels = _panels(spec, df)
    n_rows, n_cols, where = _layout(spec, panels)
    fig, axes = _grid(n_rows, n_cols)
    colors, markers, sizes = _style_maps(df, data_sizes)
    fits = {}
    for (dataset, metric), (r, c) in where.items():
        ax = axes[r][c]
        sub = df[(df["dataset"] == dataset) & (df["metric"] == metric)]
        _scatter_runs(ax, sub, colors, markers, sizes)
        lo_c, hi_c = sub["total_gmac"].min(), sub["total_gmac"].max()
        xs = np.logspace(math.log10(lo_c) - 0.15, math.log10(hi_c) + 0.15, 200)
        yvals = [100 * sub["error"].to_numpy()]
        fit_handles = []
        for source in spec.sources:
            pts = sub[sub["source"] == source]
            if pts.empty or not spec.fit:
                continue
            f = laws.get((source, dataset, metric))
            if f is None:
                log.warning("figure %s, %s/%s, %s: no fit (the fit step found none: see its log)",
                            spec.name, dataset, metric, source)
                fit_handles.append(Line2D([], [], color=SOURCE_COLORS[source], label=f"{SOURCE_LABELS[source]}: no fit"))
                continue
            fits[(source, dataset, metric)] = f
            y = 100 * f.predict(xs)
            line, = ax.plot(xs, y, color=SOURCE_COLORS[source], linestyle=SOURCE_LINESTYLES[source], lw=2,
                            zorder=2, label=f"{SOURCE_LABELS[source]}: {f.formula(tex=True)}")
            fit_handles.append(line)
            yvals.append(np.clip(y, None, 100.0))
            if spec.band and len(f.draws) >= 2:
                lo, hi = f.interval(xs)
                ax.fill_between(xs, 100 * lo, 100 * hi, color=SOURCE_COLORS[source], alpha=0.12, lw=0, zorder=1)
        ax.set_xscale("log")
        _log_error_axis(ax, np.concatenate(yvals))
        ax.set_xlabel("Total compute C (GMAC)", fontsize=LABEL_FONTSIZE)
        ax.set_ylabel(error_label(metric), fontsize=LABEL_FONTSIZE)
        ours = "ours" in spec.inputs
        ax.set_title(f"{dataset_label(dataset, ours)}, {metric_label(metric)}", fontsize=TITLE_FONTSIZE)
        ax.grid(True, which="major", alpha=0.3)
        if fit_handles:
            ax.legend(handles=fit_handles, loc="lower left", fontsize=8.5, framealpha=0.85)
    for r in range(n_rows):
        for c in range(n_cols):
            if (r, c) not in where.values():
                axes[r][c].set_visible(False)
    _side_legend_of_runs(fig, df, colors, markers, sizes)
    _title(fig, spec.title)
    fig.fits = fits
    return fig


def _bottleneck_models(df: pd.DataFrame, spec: FigureSpec) -> list[str]:
    order = df.groupby("model")["gmac_per_sample"].median().sort_values().index.tolist()
    keep = [m for m in order
            if df.loc[df["model"] == m, "data"].nunique() >= 2 and df.loc[df["model"] == m, "samples_seen_label"].nunique() >= 2]
    if not keep:
        raise FigureError(
            f"figure {spec.name!r}: no model has runs at two data scales and two samples-seen values "
            f"(models: {order})"
        )
    return keep


def draw_bottleneck(spec: FigureSpec, tables: Mapping[str, pd.DataFrame], data_sizes: Mapping[str, int] | None = None):
    import seaborn as sns  # here: importing this module (the Snakefile does) stays quick

    df = _select(spec, tables)
    panels = _panels(spec, df)
    dataset, metric = panels[0]
    df = df[(df["dataset"] == dataset) & (df["metric"] == metric)]
    models = _bottleneck_models(df, spec)
    colors, markers, _ = _style_maps(df, data_sizes)
    data_order = _order_data(df, data_sizes)
    sample_order = _order_samples(df)
    n_cols = min(len(models), 3)
    n_rows = math.ceil(len(models) / n_cols)
    fig, axes = _grid(n_rows, n_cols, width=4.6, height=3.9)
    by_samples = spec.kind == "data_bottleneck"  # x = samples seen, one line per data scale
    x_order = sample_order if by_samples else data_order
    line_key, line_order = ("data", data_order) if by_samples else ("samples_seen_label", sample_order)
    cmap = plt.get_cmap("viridis")
    line_colors = ({d: colors[d] for d in data_order} if by_samples else
                   {s: cmap(0.15 + 0.7 * i / max(len(sample_order) - 1, 1)) for i, s in enumerate(sample_order)})
    for i, model in enumerate(models):
        ax = axes[i // n_cols][i % n_cols]
        sub = df[(df["model"] == model) & df[line_key].isin(line_order)]
        xcol = "samples_seen_label" if by_samples else "data"
        pts = sub.assign(_x=sub[xcol].map({v: j for j, v in enumerate(x_order)}), error_pct=100 * sub["error"],
                         source_label=sub["source"].map(lambda s: SOURCE_LABELS.get(s, s))).sort_values("_x")
        several = pts["source"].nunique() > 1  # a line style per source
        # a line per data scale (or samples seen), through its runs in x order (no estimate)
        sns.lineplot(data=pts, x="_x", y="error_pct", hue=line_key,
                     hue_order=[k for k in line_order if k in set(pts[line_key])], palette=line_colors,
                     style="source_label" if several else None,
                     dashes={SOURCE_LABELS.get(s, s): _dashes(SOURCE_LINESTYLES[s]) for s in spec.sources}
                     if several else True,
                     estimator=None, sort=False, marker=markers[model], markersize=7, lw=2, ax=ax)
        ax.set_xticks(range(len(x_order)))
        ax.set_xticklabels(x_order)
        ax.set_xlim(-0.3, len(x_order) - 0.7)
        ax.set_xlabel("Samples seen" if by_samples else "Training data", fontsize=LABEL_FONTSIZE)
        ax.set_ylabel(error_label(metric), fontsize=LABEL_FONTSIZE)
        ax.set_title(model, fontsize=TITLE_FONTSIZE)
        ax.grid(True, alpha=0.3)
        # seaborn's legend, its section titles renamed: the hue's is the legend's title
        handles, labels = ax.get_legend_handles_labels()
        keep = [(h, "Runs" if lab == "source_label" else lab) for h, lab in zip(handles, labels) if lab != line_key]
        leg = ax.legend([h for h, _ in keep], [lab for _, lab in keep], fontsize=9, title_fontsize=9,
                        title="Training data" if by_samples else "Samples seen")
        for text in leg.get_texts():
            if text.get_text() == "Runs":
                text.set_fontweight("bold")
    for j in range(len(models), n_rows * n_cols):
        axes[j // n_cols][j % n_cols].set_visible(False)
    _title(fig, spec.title or f"{dataset_label(dataset, 'ours' in spec.inputs)}, {metric_label(metric)}")
    return fig


def _title(fig, title: str | None) -> None:
    """Lay the panels out, leaving room above them for the figure's title (tight_layout alone
    puts the first row's titles under it on a tall figure)."""
    fig.tight_layout()
    if title:
        height = fig.get_figheight()  # inches: a title line is about 0.3
        fig.suptitle(title, fontsize=TITLE_FONTSIZE + 2, y=1 - 0.08 / height, va="top")
        fig.subplots_adjust(top=fig.subplotpars.top - 0.4 / height)


def _dashes(style) -> tuple | str:
    """A matplotlib line style as seaborn's dashes: "" for solid, else (on, off, ...)."""
    if isinstance(style, tuple):
        return tuple(style[1])
    return {"-": "", "--": (4, 2), "-.": (4, 1.5, 1, 1.5), ":": (1, 1.5)}[style]


def draw_overlap(spec: FigureSpec, overlap: pd.DataFrame):
    missing = [c for c in ("dataset", "overlap_pct") if c not in overlap.columns]
    if missing:
        raise FigureError(f"figure {spec.name!r}: the overlap table lacks columns {missing}")
    ov = overlap.copy()
    ov["overlap_pct"] = pd.to_numeric(ov["overlap_pct"], errors="coerce")
    if ov["overlap_pct"].isna().any():
        raise FigureError(f"figure {spec.name!r}: non-numeric overlap_pct for {ov.loc[ov['overlap_pct'].isna(), 'dataset'].tolist()}")
    if ov.empty:
        raise FigureError(f"figure {spec.name!r}: the overlap table is empty")
    modes = [c[len("overlap_pct_"):] for c in ov.columns
             if c.startswith("overlap_pct_") and c != "overlap_pct_exact"]
    if modes:  # the dedup modes (dedup.modes) beside the paper's pHash
        return _draw_overlap_modes(spec, ov, modes)
    ov = ov.sort_values("overlap_pct")
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(ov) + 1.6))
    bars = ax.barh(ov["dataset"].astype(str), ov["overlap_pct"], color=SOURCE_COLORS[spec.sources[0]], alpha=0.85)
    top = float(ov["overlap_pct"].max()) or 1.0
    for bar, v in zip(bars, ov["overlap_pct"]):
        ax.text(bar.get_width() + 0.01 * top, bar.get_y() + bar.get_height() / 2, f"{v:.2f}%", va="center",
                fontsize=9)
    ax.set_xlim(0, top * 1.15)
    ax.set_xlabel("Test images with a near-duplicate in the training pool (%)", fontsize=LABEL_FONTSIZE)
    ax.set_title(spec.title or "Near-duplicate overlap", fontsize=TITLE_FONTSIZE)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def _draw_overlap_modes(spec: FigureSpec, ov: pd.DataFrame, modes: list[str]):
    """One bar per matching mode and test set, the paper's pHash first, all modes together
    ("any") last: how much overlap pHash alone leaves behind."""
    columns = ["overlap_pct"] + [f"overlap_pct_{m}" for m in modes]
    labels = ["pHash (paper)"] + [m if m != "any" else "any mode" for m in modes]
    for c in columns:
        ov[c] = pd.to_numeric(ov[c], errors="coerce").fillna(0.0)
    ov = ov.sort_values(columns[-1])
    n, k = len(ov), len(columns)
    height = 0.8 / k
    fig, ax = plt.subplots(figsize=(7.5, (0.3 + 0.22 * k) * n + 1.8))
    colors = plt.get_cmap("tab10").colors
    top = float(ov[columns].to_numpy().max()) or 1.0
    for j, (c, label) in enumerate(zip(columns, labels)):
        y = np.arange(n) - 0.4 + height * (k - 1 - j + 0.5)
        color = SOURCE_COLORS[spec.sources[0]] if j == 0 else ("0.35" if label == "any mode" else colors[j % 10])
        bars = ax.barh(y, ov[c], height=height * 0.95, color=color, alpha=0.85, label=label)
        for bar, v in zip(bars, ov[c]):
            ax.text(bar.get_width() + 0.01 * top, bar.get_y() + bar.get_height() / 2, f"{v:.1f}%",
                    va="center", fontsize=6.5)
    ax.set_yticks(np.arange(n), ov["dataset"].astype(str))
    ax.set_xlim(0, top * 1.18)
    ax.set_xlabel("Test images with a near-duplicate in the training pool (%)", fontsize=LABEL_FONTSIZE)
    ax.set_title(spec.title or "Near-duplicate overlap", fontsize=TITLE_FONTSIZE)
    ax.legend(fontsize=8, loc="lower right", title="matching mode", title_fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def draw(spec: FigureSpec, tables: Mapping[str, pd.DataFrame] | None = None, overlap: pd.DataFrame | None = None,
         fit_config: Mapping | None = None, seed: int = 0, data_sizes: Mapping[str, int] | None = None,
         groups: Mapping[str, Iterable[str]] | None = None,
         laws: Mapping[tuple[str, str, str], fitting.Fit] | None = None):
    """Draw one figure; returns the matplotlib Figure. A compute figure draws ``laws`` (the fit
    step's: ``fit.laws_from_frames``), or, without them, the laws ``fit_laws`` fits here with
    ``fit_config`` and ``seed`` the way the fit step does."""
    check_spec(spec)
    if spec.kind == "overlap":
        if overlap is None:
            raise FigureError(f"figure {spec.name!r} needs an overlap table (dataset, overlap_pct)")
        return draw_overlap(spec, overlap)
    tables = dict(tables or {})
    if groups and "ours" in tables:
        tables["ours"] = add_group_means(tables["ours"], groups)
    if spec.kind == "compute":
        if laws is None:
            laws = fit_laws(tables, fit_config, seed) if spec.fit else {}
        return draw_compute(spec, tables, laws, data_sizes)
    return draw_bottleneck(spec, tables, data_sizes)


def save(fig, outputs: Sequence[str | Path], dpi: int = 150) -> None:
    """Write a figure to each output (format from the suffix: .pdf, .png, .svg)."""
    for out in outputs:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi, bbox_inches="tight", metadata=_metadata(out.suffix))
    plt.close(fig)


def _metadata(suffix: str) -> dict:
    # fixed metadata so that the same inputs give the same bytes
    if suffix == ".pdf":
        return {"CreationDate": None, "Producer": "clipscale"}
    if suffix == ".png":
        return {"Software": "clipscale"}
    if suffix == ".svg":
        return {"Date": None}
    return {}


def make(settings: Mapping, tables: Mapping[str, str], overlap: str | None,
         outputs: Sequence[str], fits: Mapping[str, tuple[str, str]] | None = None) -> None:
    """The pipeline's figure step: draw one figure from table files.

    ``settings`` is what shapes the figure (``clipscale.shaping.figure``: its spec, the data
    scales, the downstream groups; for a figure that ``reads_finetune``, the fit settings and
    the seed); ``tables`` maps an input ("published", "ours") to a results table file, and
    "finetune" to the fine-tuning table, whose rows are drawn with our runs' and whose laws are
    fitted here; ``fits`` maps an input to the fit step's (coefficients.csv, draws.csv), the laws
    a compute figure draws; ``overlap`` is the overlap CSV (dataset, overlap_pct) of an overlap
    figure.
    """
    from clipscale.table import read_table

    spec = FigureSpec(**settings["spec"])
    loaded = {inp: read_table(path) for inp, path in tables.items()}
    finetune = loaded.pop("finetune", None)
    if finetune is not None:
        loaded["ours"] = pd.concat([loaded["ours"], finetune], ignore_index=True) if "ours" in loaded else finetune
    ov = None
    if overlap:
        try:
            ov = pd.read_csv(overlap)
        except Exception as e:
            raise FigureError(f"figure {spec.name!r}: cannot read the overlap table {overlap}: {e}") from None
    laws = None
    if fits is not None:
        laws = {}
        for inp, (coefficients, draws) in fits.items():
            laws.update(fitting.laws_from_frames(pd.read_csv(coefficients), pd.read_csv(draws)))
        if finetune is not None and spec.fit:
            own = fit_laws({"ours": add_group_means(finetune, groups_of(settings))}, settings.get("fit"),
                           settings.get("seed", 0))
            laws.update({k: v for k, v in own.items() if k[2] in FINETUNE_METRICS})
    fig = draw(spec, loaded, overlap=ov, data_sizes=dict(settings.get("scales", {})), groups=groups_of(settings),
               laws=laws)
    save(fig, outputs)


# ---------------------------------------------------------------------------------------------
# training curves (losses.csv of each run) and learning curves (every checkpoint's error)

#: steps of the rolling mean drawn over each run's per-step training loss
LOSS_SMOOTHING = 10


def read_losses(run_records: Iterable[str | Path]) -> pd.DataFrame:
    """Every run's training loss from the ``losses.csv`` beside its run.json: one row per step
    (a step trained again after a resume counts with its last value) with the run's name, model
    label, data, samples seen label, schedule, and ``samples_seen`` = (step + 1) x the global
    batch. A const-cooldown branch's file starts at its trunk's checkpoint."""
    from clipscale.train import LOSSES_NAME

    frames = []
    for record_path in run_records:
        record_path = Path(record_path)
        record = __import__("json").loads(record_path.read_text())
        path = record_path.parent / LOSSES_NAME
        if not path.exists():
            raise FigureError(f"training curves: {path} (the losses of {record_path}) does not exist")
        losses = pd.read_csv(path, header=None, names=["step", "loss"], dtype={"step": "Int64"})
        losses = losses.dropna().drop_duplicates("step", keep="last").sort_values("step")
        frames.append(losses.assign(
            run=str(record_path.parent), model=record.get("model_label") or record["model"],
            data=record["scale"], samples_seen_label=record["samples_seen_label"],
            schedule=record.get("schedule", "cosine"), gmac_per_sample=record.get("gmac_per_sample", np.nan),
            samples_seen=(losses["step"].astype("int64") + 1) * int(record["global_batch_size"])))
    if not frames:
        raise FigureError("training curves: no runs")
    return pd.concat(frames, ignore_index=True)


def _curve_panels(df: pd.DataFrame, order_by: str):
    """Models in order of ``order_by`` (compute per sample), a panel each; the data scales'
    colours (light: small, dark: large) and the samples-seen labels' order."""
    models = df.groupby("model")[order_by].median().sort_values().index.tolist()
    data = list(dict.fromkeys(df.sort_values("data_size")["data"]))
    cmap = plt.get_cmap("viridis")
    colors = {d: cmap(0.85 - 0.7 * i / max(len(data) - 1, 1)) for i, d in enumerate(data)}
    samples = df.groupby("samples_seen_label")["run_samples"].max().sort_values().index.tolist()
    n_cols = min(len(models), 3)
    n_rows = math.ceil(len(models) / n_cols)
    fig, axes = _grid(n_rows, n_cols, width=4.6, height=3.9)
    for j in range(len(models), n_rows * n_cols):
        axes[j // n_cols][j % n_cols].set_visible(False)
    return fig, [axes[i // n_cols][i % n_cols] for i in range(len(models))], models, data, colors, samples


def _samples_axis(ax) -> None:
    """A log axis of samples seen, its ticks as counts (2k, 10k, 1M); no minor tick labels."""
    from clipscale.config import format_count

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_count(int(round(v))) if v >= 1 else f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _curve_legend(ax, last: bool) -> None:
    """One legend, beside the last panel (the panels share colours and line styles)."""
    handles, names = ax.get_legend_handles_labels()
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    if last:
        titles = {"data": "Training data", "samples_seen_label": "Samples seen (run)"}
        ax.legend(handles, [titles.get(n, n) for n in names], fontsize=9, loc="upper left",
                  bbox_to_anchor=(1.02, 1.0), frameon=False)


def draw_training_curves(losses: pd.DataFrame, scales: Mapping[str, int] | None = None,
                         labels: Mapping[str, str] | None = None, smooth: int = LOSS_SMOOTHING):
    """Training loss against samples seen: a panel per model, a line per run (colour: the data
    scale; line style: the run's samples seen), a rolling mean over ``smooth`` steps."""
    import seaborn as sns  # here: importing this module (the Snakefile does) stays quick

    df = losses.copy()
    df["model"] = df["model"].map(lambda m: (labels or {}).get(m, m))
    df["data_size"] = df["data"].map(lambda d: (scales or {}).get(d, np.nan))
    df["run_samples"] = df.groupby("run")["samples_seen"].transform("max")
    df["loss_smooth"] = df.groupby("run")["loss"].transform(lambda s: s.rolling(smooth, min_periods=1).mean())
    fig, axes, models, data, colors, samples = _curve_panels(df, "gmac_per_sample")  # small models first
    for ax, model in zip(axes, models):
        sub = df[df["model"] == model]
        sns.lineplot(data=sub, x="samples_seen", y="loss_smooth", hue="data", hue_order=[d for d in data if d in set(sub["data"])],
                     palette=colors, style="samples_seen_label",
                     style_order=[s for s in samples if s in set(sub["samples_seen_label"])],
                     units="run", estimator=None, sort=True, lw=1.4, ax=ax)
        _samples_axis(ax)
        ax.set_xlabel("Samples seen", fontsize=LABEL_FONTSIZE)
        ax.set_ylabel(f"Training loss (mean of {smooth} steps)", fontsize=LABEL_FONTSIZE)
        ax.set_title(model, fontsize=TITLE_FONTSIZE)
        ax.grid(True, alpha=0.3)
        _curve_legend(ax, last=ax is axes[-1])
    _title(fig, "Training loss of our runs")
    return fig


def draw_learning_curves(table: pd.DataFrame, dataset: str, metric: str = "acc1",
                         sources: Sequence[str] = ("ours", "ours-cooldown"),
                         task: str = "zeroshot_classification"):
    """The main task's error against samples seen at every evaluated checkpoint of each run
    (evaluate.all_checkpoints): a panel per model, a line per run through its checkpoints
    (colour: data scale, line style: the run's samples seen), where the bottlenecks form."""
    import seaborn as sns

    df = table[table["source"].isin(sources) & (table["dataset"] == dataset) & (table["metric"] == metric)
               & (table["task"] == task)].copy()
    if df.empty:
        raise FigureError(f"learning curves: no rows of {task} {metric} on {dataset} from {list(sources)}")
    # a run: its checkpoints' folder (results/train/<model>/<scale>/<samples>/openclip/checkpoints)
    df["run"] = df["checkpoint"].map(lambda c: str(Path(c).parent))
    final = df[df["final"]].set_index("run")["samples_seen_label"]
    df["run_samples"] = df.groupby("run")["samples_seen"].transform("max")
    df["samples_seen_label"] = df["run"].map(final).fillna(df["samples_seen_label"])
    if "data_size" not in df:
        df["data_size"] = np.nan
    df["error_pct"] = 100 * df["error"]
    several = df.groupby("run").size().max() > 1
    fig, axes, models, data, colors, samples = _curve_panels(df, "gmac_per_sample")
    for ax, model in zip(axes, models):
        sub = df[df["model"] == model].sort_values("samples_seen")
        sns.lineplot(data=sub, x="samples_seen", y="error_pct", hue="data",
                     hue_order=[d for d in data if d in set(sub["data"])], palette=colors,
                     style="samples_seen_label", style_order=[s for s in samples if s in set(sub["samples_seen_label"])],
                     units="run", estimator=None, sort=True, marker="o", markersize=5, lw=1.6, ax=ax)
        _samples_axis(ax)
        _log_error_axis(ax, sub["error_pct"].to_numpy())
        ax.set_xlabel("Samples seen (at the checkpoint)", fontsize=LABEL_FONTSIZE)
        ax.set_ylabel(error_label(metric), fontsize=LABEL_FONTSIZE)
        ax.set_title(model, fontsize=TITLE_FONTSIZE)
        ax.grid(True, alpha=0.3)
        _curve_legend(ax, last=ax is axes[-1])
    what = "every checkpoint" if several else "final checkpoints only (evaluate.all_checkpoints: false)"
    _title(fig, f"Learning curves: zero-shot {dataset_label(dataset, True)}, {what}")
    return fig


def make_training_curves(settings: Mapping, run_records: Sequence[str], outputs: Sequence[str]) -> None:
    """Rule figure_training_curves: ``settings`` from clipscale.shaping.training_curves."""
    fig = draw_training_curves(read_losses(run_records), settings.get("scales"), settings.get("labels"),
                               settings.get("smooth", LOSS_SMOOTHING))
    save(fig, outputs)


def make_learning_curves(settings: Mapping, table: str, outputs: Sequence[str]) -> None:
    """Rule figure_learning_curves: ``settings`` from clipscale.shaping.learning_curves."""
    from clipscale.table import read_table

    fig = draw_learning_curves(read_table(table), settings["dataset"], settings.get("metric", "acc1"),
                               settings["sources"])
    save(fig, outputs)
