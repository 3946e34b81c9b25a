"""Model definitions: custom open_clip configs (registered per process) and compute per sample.

GMAC per sample (image + text forward, the paper's Table 25 measure) comes from one place,
``gmac_per_sample``: the config's explicit value, else the paper's Table 25 for its
architectures, else measured on the model itself with torch's FLOP counter.
"""

from __future__ import annotations

import ast
import atexit
import difflib
import importlib.util
import json
import shutil
import tempfile
import typing
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pandas as pd

_REGISTERED: set[str] = set()


# open_clip's model config: the keys of CLIP(...) and of its two towers' dataclasses
_OPEN_CLIP_PARTS = {"": "CLIP", "vision_cfg": "CLIPVisionCfg", "text_cfg": "CLIPTextCfg"}
_SET_BY_OPEN_CLIP = {"self", "cast_dtype"}  # CLIP(...)'s arguments that create_model passes itself


@dataclass(frozen=True)
class _Field:
    type: object  # a typing type, or Any where its annotation names no plain type
    text: str  # the annotation as open_clip writes it
    default_none: bool  # its default is None (a None in the config is then open_clip's default)
    required: bool


@lru_cache(maxsize=1)
def open_clip_fields() -> dict[str, dict[str, _Field]]:
    """The keys open_clip accepts in a model config, with their types: CLIP's arguments (""),
    CLIPVisionCfg's and CLIPTextCfg's fields ("vision_cfg", "text_cfg"). Read from open_clip's
    source, not imported: importing open_clip loads torch (4 s), and the config is checked each
    time Snakemake builds the DAG."""
    spec = importlib.util.find_spec("open_clip")
    source = Path(next(iter(spec.submodule_search_locations or []), "")) / "model.py" if spec else None
    if source is None or not source.is_file():
        raise ValueError("open_clip is not installed (its model.py was not found)")
    classes = {n.name: n for n in ast.parse(source.read_text()).body if isinstance(n, ast.ClassDef)}
    out = {}
    for part, name in _OPEN_CLIP_PARTS.items():
        if name not in classes:
            raise ValueError(f"open_clip changed: {source} defines no {name}")
        if part:
            out[part] = {s.target.id: _field(s.annotation, s.value) for s in classes[name].body
                         if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
            continue
        init = next(f for f in classes[name].body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
        args = init.args.args
        defaults = [None] * (len(args) - len(init.args.defaults)) + list(init.args.defaults)
        out[part] = {a.arg: _field(a.annotation, d, required=d is None) for a, d in zip(args, defaults)
                     if a.arg not in _SET_BY_OPEN_CLIP}
        out[part]["custom_text"] = _field(ast.Name("bool"), ast.Constant(False))  # create_model's
    return out


class _Names(dict):
    """eval's namespace for an annotation: typing's names; any other name (a class of open_clip's,
    torch.dtype) stands for Any, but the towers' configs, which are mappings in a config file."""

    def __missing__(self, key):
        return dict if key in ("CLIPVisionCfg", "CLIPTextCfg") else typing.Any


def _field(annotation, default, required: bool = False) -> _Field:
    text = ast.unparse(annotation) if annotation is not None else "Any"
    names = _Names({n: getattr(typing, n) for n in ("Any", "Dict", "List", "Optional", "Tuple", "Union")},
                   int=int, float=float, bool=bool, str=str, dict=dict, list=list, tuple=tuple)
    try:
        kind = eval(compile(ast.Expression(annotation), "<annotation>", "eval"), {"__builtins__": {}}, names)
    except Exception:  # an annotation that is no plain type: not checked
        kind = typing.Any
    none = isinstance(default, ast.Constant) and default.value is None
    return _Field(kind, text, none, required)


def _fits(value, kind) -> bool:
    """Whether a config value (from YAML: int, float, bool, str, list, dict, None) is of ``kind``."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is typing.Any:
        return True
    if origin is typing.Union:
        return any(_fits(value, a) for a in args)
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if kind is dict or origin is dict:
        return isinstance(value, dict)
    if kind in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, list):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
        return all(_fits(v, args[0]) for v in value) if args else True
    return True


def problems(config: dict) -> list[str]:
    """Custom models (models.<name>.open_clip) that open_clip would refuse: a key that is none of
    CLIP's arguments or of its towers' fields (CLIPVisionCfg, CLIPTextCfg), a value of another
    type, a missing required argument. Without it a typo surfaces in the first job that builds
    the model, or not at all (an unknown key of a tower is ignored)."""
    custom = {name: spec["open_clip"] for name, spec in config["models"].items() if "open_clip" in spec}
    if not custom:
        return []
    try:
        fields = open_clip_fields()
    except ValueError as e:
        return [f"models: cannot check the open_clip definitions: {e}"]
    out = []
    for name, definition in custom.items():
        for part, cls in _OPEN_CLIP_PARTS.items():
            where = f"models.{name}.open_clip" + (f".{part}" if part else "")
            values = definition.get(part) if part else definition
            if part and values is None:
                continue  # missing: reported as CLIP's required argument
            if not isinstance(values, dict):
                out.append(f"{where}: {values!r} is not a mapping (open_clip's {cls})")
                continue
            known = fields[part]
            for key, value in values.items():
                if key not in known:
                    near = difflib.get_close_matches(str(key), known, n=1)
                    out.append(f"{where}: unknown key {key!r} (open_clip's {cls} has no such "
                               f"{'argument' if not part else 'field'}" + (f"; did you mean {near[0]!r}?)" if near else ")"))
                elif not (value is None and known[key].default_none) and not _fits(value, known[key].type):
                    out.append(f"{where}.{key}: {value!r} is not of open_clip's type {known[key].text} ({cls}.{key})")
            missing = [k for k, f in known.items() if f.required and k not in values]
            if missing:
                out.append(f"{where}: {', '.join(missing)} missing (open_clip's {cls} requires "
                           f"{'it' if len(missing) == 1 else 'them'})")
    return out


def profile_needed(config: dict, model: str) -> bool:
    """A model whose GMAC per sample is measured (its profile, results/models/<model>.profile.json,
    is an input of its training and of its released checkpoints' evaluation): a custom open_clip
    model of the config without a given gmac_per_sample."""
    spec = config["models"].get(model, {})
    return "open_clip" in spec and not spec.get("gmac_per_sample")


def register(config: dict) -> list[str]:
    """Register every custom model of the config with open_clip in this process."""
    import open_clip

    todo = {n: m["open_clip"] for n, m in config["models"].items() if "open_clip" in m}
    new = {n: c for n, c in todo.items() if n not in _REGISTERED}
    if new:
        # open_clip re-reads every registered folder whenever one is added: the folder lives as
        # long as this process, and goes with it
        folder = Path(tempfile.mkdtemp(prefix="clipscale-models-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        for name, cfg in new.items():
            (folder / f"{name}.json").write_text(json.dumps(cfg))
        open_clip.add_model_config(folder)
        _REGISTERED.update(new)
    return sorted(todo)


@lru_cache(maxsize=1)
def table25() -> pd.DataFrame:
    path = resources.files("clipscale") / "data" / "reference" / "table25_architectures.csv"
    with resources.as_file(path) as p:
        return pd.read_csv(p)


def paper_gmac(arch_id: str) -> float | None:
    t = table25()
    row = t[(t["arch_id"] == arch_id) | (t["model"] == arch_id)]
    return float(row["gmac_per_sample"].iloc[0]) if len(row) else None


def measure_gmac(model_name: str) -> dict:
    """Image + text forward MACs of one sample (batch of 1), counted by torch's FlopCounterMode
    (a multiply-accumulate is 2 FLOPs), and the parameter count."""
    import open_clip
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = open_clip.create_model(model_name, pretrained=None, device="cpu")
    # train mode: in eval mode nn.MultiheadAttention takes a fused fast path whose FLOPs the
    # counter does not see (dropout is 0 in these models, so the forward is the same).
    model.train()
    cfg = open_clip.get_model_config(model_name)
    size = cfg["vision_cfg"]["image_size"]
    size = size if isinstance(size, (list, tuple)) else (size, size)
    ctx = cfg.get("text_cfg", {}).get("context_length", 77)
    image = torch.zeros(1, 3, *size)
    text = torch.zeros(1, ctx, dtype=torch.long)
    counts = {}
    with torch.no_grad():
        for part, fn in (("image", lambda: model.encode_image(image)),
                         ("text", lambda: model.encode_text(text))):
            counter = FlopCounterMode(display=False)
            with counter:
                fn()
            counts[part] = counter.get_total_flops() / 2 / 1e9
    params = sum(p.numel() for p in model.parameters())
    return {"model": model_name, "gmac_image": counts["image"], "gmac_text": counts["text"],
            "gmac_per_sample": counts["image"] + counts["text"], "params": params}


def estimated_gmac(config, name: str) -> float:
    """GMAC per sample without measuring (no torch): the config's value, Table 25's, else an
    estimate from a custom model's open_clip definition, (4 + 2 x mlp_ratio) x width^2 MACs
    per token and layer in each tower (attention projections and MLP). For ordering work
    (clipscale.resources.priority), not for the results: 1.0 where nothing is known."""
    spec = config["models"].get(name, {})
    if spec.get("gmac_per_sample"):
        return float(spec["gmac_per_sample"])
    cfg = spec.get("open_clip")
    if cfg is None:
        return paper_gmac(name) or 1.0
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    size = vision.get("image_size", 224)
    size = size[0] * size[1] if isinstance(size, (list, tuple)) else size * size
    towers = ((vision, size // vision.get("patch_size", 16) ** 2 + 1), (text, text.get("context_length", 77)))
    macs = sum(t.get("layers", 12) * (4 + 2 * t.get("mlp_ratio", 4)) * t.get("width", 512) ** 2 * tokens
               for t, tokens in towers)
    return macs / 1e9


def open_clip_definition(config, name: str) -> dict | None:
    """A model's open_clip definition without importing open_clip (torch): the config's own
    (models.<name>.open_clip), else the JSON open_clip ships for its architecture, else None."""
    spec = config["models"].get(name, {})
    if spec.get("open_clip"):
        return spec["open_clip"]
    found = importlib.util.find_spec("open_clip")
    folder = next(iter(found.submodule_search_locations or []), None) if found else None
    path = Path(folder) / "model_configs" / f"{name}.json" if folder else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


@dataclass(frozen=True)
class Towers:
    """A model's size for sizing jobs (clipscale.resources), estimated from its definition:
    forward GMAC of one image and of one text, parameters, feature width, image side (px)."""

    image_gmac: float
    text_gmac: float
    params: float
    embed_dim: int
    image_size: int


def towers(config, name: str) -> Towers:
    """The image and text towers' forward GMAC (as estimated_gmac counts, plus attention's
    2 x tokens^2 x width per layer), parameters and feature width, from the model's open_clip
    definition. Without one (a model known only by its gmac_per_sample): both towers at the
    whole sample's GMAC, ViT-L/14's other sizes (an over-estimate rather than a job cut short)."""
    cfg = open_clip_definition(config, name)
    if cfg is None:
        gmac = estimated_gmac(config, name)
        return Towers(gmac, gmac, 4.3e8, 768, 224)
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    side = vision.get("image_size", 224)
    side = max(side) if isinstance(side, (list, tuple)) else side
    patch = vision.get("patch_size", 16)
    image_tokens = (side // patch) ** 2 + 1
    text_tokens = text.get("context_length", 77)

    def tower(t, tokens, default_width):
        width, layers = t.get("width", default_width), t.get("layers", 12)
        per_layer = (4 + 2 * t.get("mlp_ratio", 4)) * width ** 2
        return layers * (per_layer * tokens + 2 * tokens ** 2 * width) / 1e9, layers * per_layer

    image_gmac, image_params = tower(vision, image_tokens, 768)
    text_gmac, text_params = tower(text, text_tokens, 512)
    params = image_params + text_params + text.get("vocab_size", 49408) * text.get("width", 512) \
        + 3 * patch ** 2 * vision.get("width", 768)
    return Towers(image_gmac, text_gmac, float(params), int(cfg.get("embed_dim", 512)), int(side))


def gmac_per_sample(config: dict, name: str, profile: dict | None = None) -> float:
    """GMAC per sample of model `name`: explicit config value, Table 25, or the measured profile."""
    spec = config["models"][name]
    if spec.get("gmac_per_sample"):
        return float(spec["gmac_per_sample"])
    if "open_clip" not in spec:
        value = paper_gmac(name)
        if value is not None:
            return value
    if profile is None:
        register(config)
        profile = measure_gmac(name)
    return float(profile["gmac_per_sample"])
