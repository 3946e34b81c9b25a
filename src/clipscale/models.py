"""Model definitions: custom open_clip configs (registered per process) and compute per sample.

GMAC per sample (image + text forward, the paper's Table 25 measure) comes from one place,
``gmac_per_sample``: the config's explicit value, else the paper's Table 25 for its
architectures, else measured on the model itself with torch's FLOP counter.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pandas as pd

_REGISTERED: set[str] = set()


def profile_needed(config: dict, model: str) -> bool:
    """A model whose GMAC per sample is measured (its profile, results/models/<model>.profile.json,
    is an input of its training and of its released checkpoints' evaluation): a custom open_clip
    model of the config without a given gmac_per_sample."""
    spec = config.get("models", {}).get(model, {})
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
    spec = config.get("models", {}).get(name, {})
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
    spec = config.get("models", {}).get(name, {})
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
