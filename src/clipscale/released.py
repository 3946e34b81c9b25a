"""Checkpoints released with the paper, named as they were released, evaluated like our own runs.

The paper's checkpoints are named ``Model-H-14_Data-2B_Samples-34B_lr-5e-4_bs-79k.pt``:

======== ================ ===============================================================
field    example          meaning
======== ================ ===============================================================
Model    H-14, B-32, g-14 architecture: open_clip's ``ViT-H-14`` (see "model" below)
Data     2B, 400M, 80M    training set: LAION-2B (``evaluate.released.data_prefix`` + size)
Samples  34B              samples seen, nominal; the exact count comes from the paper's
                          Table 18 when the file name is in it, else from the label
lr       5e-4             peak learning rate
bs       79k              global batch size, nominal (Table 18's exact one when known)
======== ================ ===============================================================

Which architecture (and so which open_clip model config) a Model token means, first match wins:

1. ``evaluate.released.models: {TOKEN: MODEL}``: an explicit map to a model of the config
   (e.g. ``{XS: vit-xs}`` for a tiny checkpoint saved as ``Model-XS_Data-12k_...pt``);
2. TOKEN is itself a model of the config (``Model-vit-xs_...``);
3. ``ViT-TOKEN`` is a model of the config (config/paper.yaml's ``ViT-B-32``);
4. ``ViT-TOKEN`` or TOKEN is an architecture open_clip ships (``ViT-H-14``, ``RN50``).

Models of the config with an ``open_clip`` dict are registered before the checkpoint is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from clipscale.config import ConfigError, parse_count, section

NAME_FORMAT = "Model-<arch>_Data-<size>_Samples-<count>_lr-<lr>_bs-<batch>.pt"
_NAME = re.compile(
    r"^Model-(?P<model>[^_/]+)_Data-(?P<data>[^_/]+)_Samples-(?P<samples>[^_/]+)"
    r"_lr-(?P<lr>[^_/]+)_bs-(?P<bs>[^_/]+)\.pt$"
)
_COUNT = re.compile(r"^[0-9]+(?:\.[0-9]+)?[kKMBG]?$")


class ReleasedNameError(ConfigError):
    """A released checkpoint whose name or model cannot be understood."""


@dataclass(frozen=True)
class ReleasedName:
    """The fields of a released checkpoint's file name, parsed."""

    file: str              # the file name, e.g. Model-H-14_Data-2B_Samples-34B_lr-5e-4_bs-79k.pt
    model_token: str       # "H-14"
    data_token: str        # "2B"
    samples_label: str     # "34B"
    samples_nominal: int   # 34_000_000_000
    lr: float              # 5e-4
    lr_label: str          # "5e-4"
    batch_label: str       # "79k"
    batch_size: int        # 79_000 (nominal)
    data_size: int         # 2_000_000_000 (unique samples of the training set, from the label)


def parse_name(name: str | Path) -> ReleasedName:
    """Parse a released checkpoint's file name (a path is fine: only its name is read)."""
    file = Path(name).name
    m = _NAME.match(file)
    if not m:
        raise ReleasedNameError(
            f"released checkpoint {name}: the name does not follow {NAME_FORMAT} "
            f"(e.g. Model-B-32_Data-400M_Samples-13B_lr-1e-3_bs-88k.pt)")
    problems = []
    for part in ("data", "samples", "bs"):
        if not _COUNT.match(m.group(part)):
            problems.append(f"{part} {m.group(part)!r} is not a count (write e.g. 400M, 34B, 88k)")
    try:
        lr = float(m.group("lr"))
        if not lr > 0:
            raise ValueError
    except ValueError:
        problems.append(f"lr {m.group('lr')!r} is not a positive number (write e.g. 5e-4)")
        lr = float("nan")
    if problems:
        raise ReleasedNameError(f"released checkpoint {name}: " + "; ".join(problems))
    return ReleasedName(
        file=file,
        model_token=m.group("model"),
        data_token=m.group("data"),
        samples_label=m.group("samples"),
        samples_nominal=parse_count(m.group("samples")),
        lr=lr,
        lr_label=m.group("lr"),
        batch_label=m.group("bs"),
        batch_size=parse_count(m.group("bs")),
        data_size=parse_count(m.group("data")),
    )


def format_name(model_token: str, data: str, samples: str, lr: str, bs: str) -> str:
    """The released name of a checkpoint (the inverse of ``parse_name``)."""
    name = f"Model-{model_token}_Data-{data}_Samples-{samples}_lr-{lr}_bs-{bs}.pt"
    parse_name(name)
    return name


@lru_cache(maxsize=1)
def _table18() -> dict[str, dict]:
    from clipscale.reference import load_hparams

    hp = load_hparams()
    return {r["checkpoint"]: r for r in hp.to_dict("records")}


def table18_row(file: str) -> dict | None:
    """The paper's Table 18 row of a released checkpoint (exact samples seen, global batch), or None."""
    return _table18().get(Path(file).name)


@lru_cache(maxsize=1)
def _open_clip_models() -> frozenset[str]:
    import open_clip

    return frozenset(open_clip.list_models())


def settings(config: dict) -> dict:
    """evaluate.released with the schema's defaults (dir, files and models are optional)."""
    return section(config, "evaluate")["released"]


def resolve_model(config: dict, token: str, where: str = "") -> str:
    """The model (a config model or an open_clip architecture) a Model token names."""
    models = config["models"]
    explicit = settings(config).get("models") or {}
    if token in explicit:
        model = explicit[token]
        if model not in models and model not in _open_clip_models():
            raise ReleasedNameError(
                f"evaluate.released.models: {token} -> {model!r}, which is neither a model of the "
                f"config ({sorted(models)}) nor an open_clip architecture")
        return model
    for candidate in (token, f"ViT-{token}"):
        if candidate in models:
            return candidate
    custom = {n for n, m in models.items() if "open_clip" in m}
    for candidate in (f"ViT-{token}", token):
        if candidate in _open_clip_models() and candidate not in custom:
            return candidate
    raise ReleasedNameError(
        f"released checkpoint {where or token}: model {token!r} is not a model of the config "
        f"({sorted(models)}) and neither ViT-{token} nor {token} is an open_clip architecture; "
        f"map it with evaluate.released.models: {{{token}: <model of the config>}}")


@dataclass(frozen=True)
class ReleasedCheckpoint:
    """A released checkpoint with everything the evaluation and the results table need."""

    path: str
    name: ReleasedName
    model: str            # config model name or open_clip architecture (the {model} wildcard)
    label: str            # model as shown in figures ("ViT-H/14")
    data: str             # "LAION-2B"
    samples_seen: int     # exact (Table 18) or nominal
    samples_seen_source: str  # "table18" or "name"
    batch_size: int
    table18: bool

    @property
    def wildcards(self) -> dict:
        """Wildcards of paths.EVAL: scale is the Data token, samples the Samples label."""
        return {"source": "released", "model": self.model, "scale": self.name.data_token,
                "samples": self.name.samples_label, "epoch": "final"}

    @property
    def file(self) -> str:
        return self.name.file


def _label(config: dict, model: str) -> str:
    spec = config["models"].get(model, {})
    if spec.get("label"):
        return spec["label"]
    from clipscale.models import table25

    t = table25()
    row = t[t["arch_id"] == model]
    return str(row["model"].iloc[0]) if len(row) else model


def released_files(config: dict) -> list[Path]:
    """The released checkpoint files of the config: evaluate.released.files (relative to dir when
    dir is given), or every *.pt file in dir when no files are listed."""
    spec = settings(config)
    folder = Path(spec["dir"]) if spec.get("dir") else None
    files = spec.get("files") or []
    if files:
        return [folder / f if folder and not Path(f).is_absolute() else Path(f) for f in files]
    if folder is None:
        return []
    if not folder.is_dir():
        what = "is not a directory" if folder.exists() else "does not exist"
        raise ReleasedNameError(f"evaluate.released.dir: {folder} {what}")
    found = sorted(folder.glob("*.pt"))
    if not found:
        raise ReleasedNameError(f"evaluate.released.dir: {folder} has no *.pt checkpoint")
    return found


def problems(config: dict) -> list[str]:
    """What is wrong with evaluate.released without reading the filesystem, as dotted keys: a
    model map to no model, a listed file name that does not parse or names no model, two files
    of one result folder."""
    spec = settings(config)
    models = config["models"]
    out = []
    for token, model in (spec.get("models") or {}).items():
        if model not in models and model not in _open_clip_models():
            out.append(f"evaluate.released.models.{token}: {model!r} is neither a model of the config "
                       f"({sorted(models)}) nor an open_clip architecture")
    if spec.get("files") and not out:
        out += _name_problems(config, released_files(config), "evaluate.released.files[{i}]")
    return out


def path_problems(config: dict) -> list[str]:
    """evaluate.released on the filesystem: dir exists, listed files exist, and the names of the
    *.pt files of a dir without a file list (checked only here: they are found by listing it)."""
    spec = settings(config)
    folder = Path(spec["dir"]) if spec.get("dir") else None
    if folder and not folder.is_dir():
        what = "is not a directory" if folder.exists() else "does not exist"
        return [f"evaluate.released.dir: {folder} {what}"]
    if spec.get("files"):
        return [f"evaluate.released.files[{i}]: {path} does not exist"
                for i, path in enumerate(released_files(config)) if not path.is_file()]
    try:
        files = released_files(config)  # the *.pt of dir
    except ReleasedNameError as e:
        return [str(e)]
    return _name_problems(config, files, "evaluate.released.dir")


def _name_problems(config: dict, files: list[Path], key: str) -> list[str]:
    out = []
    for i, path in enumerate(files):
        try:
            resolve(config, path)
        except ReleasedNameError as e:
            out.append(f"{key.format(i=i)}: {e}")
    if files and not out:
        try:
            checkpoints(config)
        except ReleasedNameError as e:
            out.append(f"evaluate.released: {e}")
    return out


def resolve(config: dict, path: str | Path) -> ReleasedCheckpoint:
    """Parse one released checkpoint's name and resolve its model, data and samples seen."""
    name = parse_name(path)
    model = resolve_model(config, name.model_token, where=str(path))
    prefix = settings(config)["data_prefix"]
    row = table18_row(name.file)
    if row is not None:
        samples, source = int(round(float(row["samples_seen_exact"]))), "table18"
        batch = int(row["global_bs"])
    else:
        samples, source = name.samples_nominal, "name"
        batch = name.batch_size
    return ReleasedCheckpoint(
        path=str(path), name=name, model=model, label=_label(config, model),
        data=f"{prefix}-{name.data_token}", samples_seen=samples, samples_seen_source=source,
        batch_size=batch, table18=row is not None,
    )


def checkpoints(config: dict) -> list[ReleasedCheckpoint]:
    """All released checkpoints of the config, resolved; two that would share an output folder
    (same model, data and samples seen) are an error."""
    out = [resolve(config, p) for p in released_files(config)]
    seen: dict[tuple, str] = {}
    for ckpt in out:
        key = tuple(ckpt.wildcards.values())
        if key in seen:
            raise ReleasedNameError(
                f"released checkpoints {seen[key]} and {ckpt.path} have the same model, data and "
                f"samples seen ({ckpt.model}, {ckpt.name.data_token}, {ckpt.name.samples_label}); "
                f"evaluate them in separate result folders (list only one in evaluate.released)")
        seen[key] = ckpt.path
    return out


def find(config: dict, model: str, scale: str, samples: str) -> ReleasedCheckpoint:
    """The released checkpoint behind the wildcards of an evaluation path."""
    for ckpt in checkpoints(config):
        w = ckpt.wildcards
        if (w["model"], w["scale"], w["samples"]) == (model, scale, samples):
            return ckpt
    raise ReleasedNameError(f"no released checkpoint of the config is {model}/{scale}/{samples}")


__all__ = ["NAME_FORMAT", "ReleasedName", "ReleasedNameError", "ReleasedCheckpoint", "parse_name",
           "format_name", "table18_row", "resolve_model", "released_files", "problems", "path_problems",
           "resolve", "checkpoints", "find"]
