"""The whole DAG on a reduced embedded default (tests/data/ci.yaml), as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CI_CONFIG = REPO / "tests" / "data" / "ci.yaml"
pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 1800):
    cmd = [str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"),
           "-d", str(workdir), "--configfile", str(CI_CONFIG), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pipeline")
    snakemake(workdir)
    return workdir


def test_dry_run_lists_the_dag(tmp_path):
    out = snakemake(tmp_path, "-n").stdout
    for rule in ("make_world", "index_pool", "subset", "train", "evaluate", "aggregate_results"):
        assert rule in out
    assert "train" in out and " 8\n" in out.split("train", 1)[1][:40]  # 2 models x 2 scales x 2


def test_every_artifact_is_made(pipeline):
    r = pipeline / "results"
    cfg = yaml.safe_load(CI_CONFIG.read_text())
    for scale, size in cfg["scales"].items():
        manifest = json.loads((r / "data" / "subsets" / scale / "manifest.json").read_text())
        assert manifest["n_samples"] == size
    runs = sorted(r.glob("train/*/*/*/run.json"))
    assert len(runs) == 8
    for run in runs:
        record = json.loads(run.read_text())
        assert Path(pipeline / record["final_checkpoint"]).exists()
        assert record["total_gmac"] > 0
    table = pd.read_parquet(r / "results" / "results.parquet")
    ours = table[table["source"] == "ours"]
    assert ours.groupby(["model", "data", "samples_seen"]).ngroups == 8
    assert set(cfg["downstream"]) <= set(ours["dataset"])
    assert (r / "dedup" / "overlap.csv").exists()
    assert list(r.glob("figures/*.png")) and list(r.glob("figures/*.pdf"))
    for rule_dir in (r / "logs").iterdir():
        assert any(rule_dir.rglob("*.log")), rule_dir


def test_nothing_left_to_do_and_one_figure_reruns_alone(pipeline):
    assert "Nothing to be done" in snakemake(pipeline, "-n").stdout + snakemake(pipeline, "-n").stderr
    figure = sorted((pipeline / "results" / "figures").glob("*.pdf"))[0]
    out = snakemake(pipeline, "-n", "--forcerun", str(figure.relative_to(pipeline)),
                    str(figure.relative_to(pipeline))).stdout
    assert "train" not in out.split("Job stats")[-1] and "evaluate " not in out


def test_bad_config_stops_before_any_job(tmp_path):
    cfg = yaml.safe_load(CI_CONFIG.read_text())
    cfg["train"]["precision"] = "fp7"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    cmd = [str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"),
           "-d", str(tmp_path), "--configfile", str(bad), "--cores", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "train.precision" in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists()
