"""The whole DAG on a reduced embedded default (tests/data/ci.yaml), as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import CI_CONFIG, REPO, default_sigint, run_snakemake

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 1800):
    return run_snakemake(workdir, *args, check=check, timeout=timeout)


def test_dry_run_lists_the_dag(tmp_path):
    out = snakemake(tmp_path, "-n").stdout
    for rule in ("make_world", "index_pool", "subset", "train", "evaluate", "aggregate_results"):
        assert rule in out
    assert "train" in out and " 8\n" in out.split("train", 1)[1][:40]  # 2 models x 2 scales x 2


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


def _training_pids(workdir: Path) -> list[int]:
    """Processes running `clipscale.train` for this workdir's runs."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if "clipscale.train" in cmdline and cwd == str(workdir):
            pids.append(int(proc.name))
    return pids


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stopping_snakemake_stops_training_and_the_next_run_resumes(tmp_path, sig):
    """SIGINT or SIGTERM to the snakemake process alone (not its process group: Snakemake's local
    executor would wait for a running job) stops training within seconds, keeps the saved
    checkpoints and writes no run.json; the next run resumes and records both attempts."""
    cfg = yaml.safe_load(CI_CONFIG.read_text())
    cfg["grid"] = {"models": ["vit-xs"], "scales": ["1k"], "samples_seen": ["12k"]}
    cfg["finetune"] = {"enabled": False}  # ci.yaml fine-tunes the 4k runs: this grid has none
    cfg["train"]["checkpoints"] = 12  # ~1k samples per checkpoint: the first comes in seconds
    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump(cfg))
    target = "results/train/vit-xs/1k/12k/run.json"
    cmd = [str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
           "--configfile", str(config), "--cores", "2", target]
    log = open(tmp_path / "snakemake.log", "w")
    smk = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                           preexec_fn=default_sigint)
    checkpoints = tmp_path / "results/train/vit-xs/1k/12k/openclip/checkpoints"
    deadline = time.time() + 600
    while not (checkpoints / "epoch_1.pt").exists():
        assert smk.poll() is None, (tmp_path / "snakemake.log").read_text()[-3000:]
        assert time.time() < deadline, "no first checkpoint in 10 minutes"
        time.sleep(0.5)
    assert _training_pids(tmp_path), "training is not running"
    smk.send_signal(sig)
    t0 = time.time()
    while _training_pids(tmp_path) and time.time() - t0 < 30:
        time.sleep(0.2)
    stopped_after = time.time() - t0
    assert not _training_pids(tmp_path), "training still runs 30 s after the signal"
    assert stopped_after < 15, f"training took {stopped_after:.1f} s to stop"
    smk.wait(timeout=120)
    assert not (tmp_path / target).exists()
    kept = sorted(p.name for p in checkpoints.glob("epoch_*.pt"))
    assert kept and len(kept) < 12, kept

    run_snakemake(tmp_path, target, configfile=config)
    record = json.loads((tmp_path / target).read_text())
    first, last = record["attempts"][0], record["attempts"][-1]
    assert len(record["attempts"]) == 2, record["attempts"]
    assert first["ended"].startswith("signal") and first["steps"] > 0
    assert last["ended"] == "completed" and last["resumed_from"] >= 1
    assert record["steps_total"] == first["steps"] + last["steps"]
