"""Shared fixtures: a small embedded world, made once per test session."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clipscale.world import WorldSpec, generate

REPO = Path(__file__).resolve().parents[1]
CI_CONFIG = REPO / "tests" / "data" / "ci.yaml"

SMALL_WORLD = WorldSpec(seed=3, pool_size=600, shard_size=100, image_size=32, near_duplicates=20,
                        hard_duplicates=20, test_per_class=4, train_per_class=4, retrieval_size=20)


@contextlib.contextmanager
def scratch(request, tmp_path_factory, name: str):
    """A folder for a module- or session-scoped fixture, removed at the fixture's teardown unless
    a test failed meanwhile (kept to look at). pytest keeps such folders to the session's end,
    and the finished pipeline, the training baselines and the per-test folders (removed when the
    test passes: tmp_path_retention_policy) together fill a CI machine's small free disk."""
    failed = request.session.testsfailed
    folder = tmp_path_factory.mktemp(name)
    yield folder
    if request.session.testsfailed == failed:
        shutil.rmtree(folder, ignore_errors=True)


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


@pytest.fixture
def world_workdir(small_world, in_tmp) -> Path:
    """A fresh working directory (the cwd) holding a copy of the small world's pool where the
    pipeline puts the embedded world's: results/world/pool/ (inside the workdir)."""
    shutil.copytree(small_world / "pool", in_tmp / "results" / "world" / "pool")
    return in_tmp


# With pytest-xdist (scripts/test.sh: -n 2 --dist loadfile) the tests of one file run in one
# process, one after the other: test_slurm.py's share one cluster (and module fixtures), and the
# tests on the finished pipeline (finished_workdir, a session fixture: made once per process)
# all live in test_cache.py. (xdist's --dist loadgroup does not group with pytest 9.2: it renames
# items through Node._nodeid, which pytest 9 no longer reads.) The two long files go first, so
# that each process starts with one of them and the rest of the suite fills the gaps: the Slurm
# tests wait on the scheduler and on walltimes much of the time.
FIRST = ("test_slurm.py", "test_cache.py")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: FIRST.index(item.path.name) if item.path.name in FIRST else len(FIRST))
    if os.environ.get("CLIPSCALE_FAST"):
        skip = pytest.mark.skip(reason="CLIPSCALE_FAST set: slow tests skipped")
        for item in items:
            if "slow" in item.keywords or "slurm" in item.keywords:
                item.add_marker(skip)


def run_snakemake(workdir: Path, *args: str, configfile: Path = CI_CONFIG, check: bool = True,
                  timeout: int = 1800, cores: int = 2) -> subprocess.CompletedProcess:
    """snakemake on the repository's Snakefile in ``workdir``, as a user runs it."""
    cmd = [str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"),
           "-d", str(workdir), "--configfile", str(configfile), "--cores", str(cores), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="module")
def finished_workdir(request, tmp_path_factory) -> Path:
    """The whole DAG of tests/data/ci.yaml, run once for test_cache.py, its only user (about 4
    minutes on 2 cores). Tests that share it must not change it (dry runs only).
    CLIPSCALE_FINISHED_WORKDIR names one to reuse (finished by an earlier run; it is brought up to
    date first, and kept)."""
    reuse = os.environ.get("CLIPSCALE_FINISHED_WORKDIR")
    if reuse:
        run_snakemake(Path(reuse))
        yield Path(reuse)
        return
    with scratch(request, tmp_path_factory, "pipeline") as workdir:
        run_snakemake(workdir)
        yield workdir


def default_sigint() -> None:
    """preexec_fn for a child that a test stops with SIGINT: a shell's background job (CI run
    as `bash .ci/run &`, nohup) inherits SIGINT ignored, and Python then never installs its
    handler; the child must react to SIGINT as it does from a terminal."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
