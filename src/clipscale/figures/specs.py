"""What a figure shows (``FigureSpec``): the paper's figures, ours (fine-tuning figures included), checks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

from clipscale import grid
from clipscale.config import section as config_section
from clipscale.figures.style import INPUT_OF_SOURCE, SOURCE_LABELS, dataset_label, metric_label
from clipscale.released import settings as released_settings
from clipscale.table import groups_of, main_set


KINDS = ("compute", "data_bottleneck", "samples_bottleneck", "overlap")

#: the paper's fine-tuning tasks (Sec. 4.4, Tables 6-8) and ImageNet's robustness sets (Table 9)
PUBLISHED_FINETUNE = ["imagenet1k", "cars", "dtd", "eurosat", "gtsrb", "mnist", "resisc45", "sun397", "svhn"]
PUBLISHED_IMAGENET_FINETUNE = ["imagenet1k", "imagenet-real", "imagenetv2", "imagenet-a", "imagenet-r",
                               "imagenet_sketch"]
PUBLISHED_CLASSIFICATION = ["imagenet1k", "imagenet_robustness", "vtab+"]
PUBLISHED_RETRIEVAL = ["mscoco_captions", "flickr30k"]


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
