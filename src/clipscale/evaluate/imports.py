"""The imports an evaluation job does not need, kept out of its process.

An evaluation job of the embedded default spends more CPU importing than encoding (issue 33):
``import open_clip`` pulls in timm (for timm image towers), which pulls in wandb (only for
``timm.utils.summary``'s logging), and transformers (for Hugging Face text towers); all three
are optional imports upstream (``try: import ... except ImportError``). A job whose model has
neither kind of tower and whose sets need no timm (clip_benchmark's ``tfds/`` and ``vtab/``
sets import it) uses none of them, so ``keep_out`` marks them absent in ``sys.modules`` before
open_clip is imported: the same models, transforms and metrics, with 700 modules and about
1.4 of a tiny job's 7 CPU-s fewer (benchmarks/README.md, bench_limit.py). Only for a process
that is one evaluation job (the rule's script, ``clipscale evaluate``): the marks last as long
as the process.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

NEVER_USED = ("wandb",)  # timm.utils.summary's optional logging; training's --report-to is its own process
TIMM_SETS = ("tfds/", "vtab/")  # clip_benchmark's builders that import timm


def model_config(config: dict, model: str) -> dict | None:
    """The open_clip config of ``model``: the config's own (models.<name>.open_clip), else open_clip's
    built-in JSON (read without importing open_clip); None when neither is found."""
    spec = (config.get("models") or {}).get(model) or {}
    if isinstance(spec.get("open_clip"), dict):
        return spec["open_clip"]
    found = importlib.util.find_spec("open_clip")
    for folder in (found.submodule_search_locations or []) if found else []:
        path = Path(folder) / "model_configs" / f"{model}.json"
        if path.is_file():
            return json.loads(path.read_text())
    return None


def unused(config: dict, model: str, benchmark_names: list[str]) -> list[str]:
    """The optional packages an evaluation of ``model`` on these clip_benchmark sets never imports
    for its work; an unknown model keeps timm and transformers."""
    out = list(NEVER_USED)
    cfg = model_config(config, model)
    if cfg is None:
        return out
    text = json.dumps(cfg)
    if "hf_" not in text:  # hf_model_name, hf_tokenizer_name, hf_proj_type, ...
        out.append("transformers")
    if "timm" not in text and not any(n.startswith(TIMM_SETS) for n in benchmark_names):
        out.append("timm")
    return out


def keep_out(names: list[str]) -> list[str]:
    """Mark these packages absent in this process (an ``import`` of them raises ImportError, which
    their importers catch); those already imported stay. Returns the names marked."""
    marked = [n for n in names if n not in sys.modules]
    for name in marked:
        sys.modules[name] = None
    return marked
