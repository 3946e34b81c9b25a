"""Shared fixtures: a small embedded world, made once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clipscale.world import WorldSpec, generate

REPO = Path(__file__).resolve().parents[1]

SMALL_WORLD = WorldSpec(seed=3, pool_size=600, shard_size=100, image_size=32, near_duplicates=20,
                        test_per_class=4, train_per_class=4, retrieval_size=20)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate(SMALL_WORLD, out, progress=False)
    return out


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run a test inside a fresh directory (artifact paths are relative: results/...)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pytest_collection_modifyitems(config, items):
    if os.environ.get("CLIPSCALE_FAST"):
        skip = pytest.mark.skip(reason="CLIPSCALE_FAST set: slow tests skipped")
        for item in items:
            if "slow" in item.keywords or "slurm" in item.keywords:
                item.add_marker(skip)
