"""Model definitions: custom open_clip configs registered in-process, GMAC per sample.

GMAC are measured with torch's FlopCounterMode (image + text forward of one sample) and
compared with the paper's Table 25 (src/clipscale/data/reference/table25_architectures.csv).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clipscale import config as config_mod
from clipscale import models

REPO = Path(__file__).resolve().parents[1]
TINY = ["vit-xs", "vit-s", "vit-m"]


@pytest.fixture(scope="module")
def default_config() -> dict:
    return config_mod.load(REPO / "config" / "config.yaml")


@pytest.fixture(scope="module")
def tiny_profiles(default_config) -> dict:
    models.register(default_config)
    return {name: models.measure_gmac(name) for name in TINY}


def test_vit_b32_measured_gmac_matches_table25():
    """Our counter on open_clip's ViT-B-32 agrees with the paper's Table 25 (7.4 GMAC, 151 M)."""
    paper = models.paper_gmac("ViT-B-32")
    assert paper == 7.4
    prof = models.measure_gmac("ViT-B-32")
    assert prof["gmac_per_sample"] == pytest.approx(paper, rel=0.05)
    assert prof["gmac_image"] > prof["gmac_text"] > 0
    assert prof["gmac_per_sample"] == pytest.approx(prof["gmac_image"] + prof["gmac_text"])
    assert prof["params"] == pytest.approx(151e6, rel=0.05)


def test_table25_lookup_by_open_clip_name_and_paper_label():
    assert models.paper_gmac("ViT-B/32") == models.paper_gmac("ViT-B-32") == 7.4
    assert models.paper_gmac("ViT-L-14") == 87.73
    assert models.paper_gmac("no-such-model") is None


def test_tiny_models_are_registered_with_open_clip(default_config):
    import open_clip

    names = models.register(default_config)
    assert names == sorted(TINY)
    assert set(TINY) <= set(open_clip.list_models())
    for name in TINY:
        cfg = open_clip.get_model_config(name)
        assert cfg == default_config["models"][name]["open_clip"]
    assert models.register(default_config) == names  # idempotent


def test_tiny_models_gmac_positive_and_ordered(tiny_profiles):
    gmac = [tiny_profiles[n]["gmac_per_sample"] for n in TINY]
    params = [tiny_profiles[n]["params"] for n in TINY]
    assert all(g > 0 for g in gmac)
    assert gmac[0] < gmac[1] < gmac[2], dict(zip(TINY, gmac))
    assert params[0] < params[1] < params[2], dict(zip(TINY, params))


def _no_measuring(*args, **kwargs):
    raise AssertionError("measure_gmac was called although a value was available")


def test_gmac_precedence_config_then_table25_then_measured(default_config, tiny_profiles, monkeypatch):
    paper_arch = {"models": {"ViT-B-32": {}}}
    explicit = {"models": {"ViT-B-32": {"gmac_per_sample": 1.25}}}
    custom = {"models": {"vit-s": default_config["models"]["vit-s"]}}
    custom_explicit = {"models": {"vit-s": {**default_config["models"]["vit-s"], "gmac_per_sample": 2.5}}}
    # a custom config under a Table 25 name is a different model: it is measured, not looked up
    custom_named_like_paper = {"models": {"ViT-B-32": {"open_clip": {"embed_dim": 8}}}}

    monkeypatch.setattr(models, "measure_gmac", _no_measuring)
    assert models.gmac_per_sample(explicit, "ViT-B-32") == 1.25  # config value first
    assert models.gmac_per_sample(paper_arch, "ViT-B-32") == 7.4  # then Table 25
    assert models.gmac_per_sample(custom_explicit, "vit-s", {"gmac_per_sample": 9.0}) == 2.5
    assert models.gmac_per_sample(custom, "vit-s", {"gmac_per_sample": 0.125}) == 0.125  # profile
    assert models.gmac_per_sample(custom_named_like_paper, "ViT-B-32", {"gmac_per_sample": 0.5}) == 0.5

    monkeypatch.undo()  # no value anywhere: measured on the model
    assert models.gmac_per_sample(custom, "vit-s") == pytest.approx(tiny_profiles["vit-s"]["gmac_per_sample"])
