"""clipscale.train_imports: the optional packages a training job keeps out of its process."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest

from clipscale import config as config_mod
from clipscale import grid, train_imports


@pytest.fixture(scope="module")
def default():
    return config_mod.load("config/config.yaml")


def test_the_defaults_runs_keep_out_wandb_timm_and_transformers_but_not_tensorboard(default):
    for run in grid.runs(default):
        assert train_imports.unused(default, run) == ["wandb", "timm", "transformers"], run.name


@pytest.mark.parametrize("change,kept", [
    ({"train": {"report_to": ["wandb"]}}, "wandb"),
    ({"train": {"report_to": []}}, None),
    ({"train": {"extra_args": ["--opt", "timm/adamw"]}}, "timm"),
    ({"models": {"vit-xs": {"open_clip": {"text_cfg": {"hf_tokenizer_name": "bert-base-uncased"}}}}}, "transformers"),
])
def test_what_a_run_names_is_not_kept_out(default, change, kept):
    cfg = copy.deepcopy(default)
    for section, values in change.items():
        if section == "models":
            cfg["models"]["vit-xs"]["open_clip"]["text_cfg"].update(values["vit-xs"]["open_clip"]["text_cfg"])
        else:
            cfg[section].update(values)
    run = next(r for r in grid.runs(cfg) if r.model == "vit-xs")
    out = train_imports.unused(cfg, run)
    if kept is None:  # no logger at all: tensorboard kept out too
        assert {"torch.utils.tensorboard", "tensorboard", "wandb"} <= set(out)
    else:
        assert kept not in out


def test_open_clip_train_imports_without_them():
    """What the marks do in a fresh process: open_clip_train's main imports, its optional
    loggers and towers absent (None), the rest there."""
    code = ("from clipscale import train_imports; train_imports.keep_out(['wandb', 'timm', 'transformers']);"
            "import sys, open_clip, open_clip_train.main as m;"
            "assert m.wandb is None and sys.modules['timm'] is None and sys.modules['transformers'] is None;"
            "assert m.tensorboard is not None; open_clip.create_model('ViT-S-32', pretrained=None)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
