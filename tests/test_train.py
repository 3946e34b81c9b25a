"""Training (issue "Train"): open_clip's command line, resume, divergence, distributed.

Runs go through the pipeline's own entry point ``clipscale.train.launch`` (a subprocess, like
the Snakemake rule) on a small world, inside a temporary directory (paths are relative:
results/train/...). The slow tests train a 2-layer ViT for 4 virtual epochs of 4 steps.

Bit-exact resume: open_clip's data order is not reproducible by itself (webdataset's sample
shuffle buffer is seeded from the clock); clipscale.resume seeds it and the augmentation RNG, so a
run SIGKILLed in epoch 3, or stopped by the walltime warning in the middle of it, and resumed ends
with the same losses and weights, bit for bit, as one never interrupted. The test processes get
a ``sitecustomize`` (``HOOKS`` below, on PYTHONPATH) that kills the process at a chosen step
(CLIPSCALE_TEST_KILL_AT_STEP: a real SIGKILL, at a deterministic point), pauses it, or sends it
SIGUSR1 there.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import io
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from clipscale import config as config_mod
from clipscale import grid, subsets, train
from conftest import scratch

REPO = Path(__file__).resolve().parents[1]
MODEL, SCALE = "vit-xs", "s"
BATCH, EPOCHS = 32, 4

HOOKS = textwrap.dedent('''
    """Test-only hooks (tests/test_train.py), active when CLIPSCALE_TEST_HOOKS is set."""
    import os

    if os.environ.get("CLIPSCALE_TEST_HOOKS"):
        import signal

        kill_at = int(os.environ.get("CLIPSCALE_TEST_KILL_AT_STEP", "0"))
        pause_at = int(os.environ.get("CLIPSCALE_TEST_PAUSE_AT_STEP", "0"))
        signal_at = int(os.environ.get("CLIPSCALE_TEST_SIGNAL_AT_STEP", "0"))  # send SIGUSR1 there
        term_at = int(os.environ.get("CLIPSCALE_TEST_TERM_AT_STEP", "0"))  # SIGTERM, workers first
        if kill_at or pause_at or signal_at or term_at:
            import time

            import open_clip_train.train as oct_train

            original = oct_train.backward
            calls = [0]

            def backward(total_loss, scaler):
                calls[0] += 1
                if calls[0] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                if calls[0] == signal_at:  # as Slurm's walltime warning would
                    os.kill(os.getpid(), signal.SIGUSR1)
                if calls[0] == term_at:  # the group's SIGTERM reaching the data workers first
                    import subprocess
                    me = str(os.getpid())
                    kids = [d for d in os.listdir("/proc") if d.isdigit() and _ppid(d) == me]
                    subprocess.run(["kill", "-TERM", *kids])  # from another process, as the launcher
                    time.sleep(2)
                    os.kill(os.getpid(), signal.SIGTERM)
                if calls[0] == pause_at:  # training is underway: say so (pid), then wait
                    with open(os.environ["CLIPSCALE_TEST_PAUSED_FILE"], "w") as fh:
                        fh.write(str(os.getpid()))
                    from clipscale import stopping

                    t_end = time.time() + 300  # a long step: it ends when a stop asks to save
                    while time.time() < t_end and not getattr(stopping.current(), "save_requested", 0):
                        time.sleep(0.1)
                return original(total_loss, scaler)

            oct_train.backward = backward

            def _ppid(pid):
                try:
                    with open(f"/proc/{pid}/stat") as fh:
                        return fh.read().rsplit(")", 1)[1].split()[1]
                except OSError:
                    return None

        full_at = int(os.environ.get("CLIPSCALE_TEST_DISK_FULL_AT_SAVE", "0"))  # the Nth torch.save
        if full_at:  # meets a full disk: writes part of the file, then fails as torch does
            import errno
            import shutil

            import torch

            real_save, real_usage, saves = torch.save, shutil.disk_usage, [0]

            def save(obj, f, *args, **kwargs):
                saves[0] += 1
                if saves[0] != full_at:
                    return real_save(obj, f, *args, **kwargs)
                with open(f, "wb") as fh:
                    fh.write(b"PK" + bytes(700))
                shutil.disk_usage = lambda path: real_usage(path)._replace(free=0)  # the disk is full now
                if os.environ.get("CLIPSCALE_TEST_DISK_FULL_ERROR") == "ENOSPC":
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

            torch.save = save
''')


# ---------------------------------------------------------------------------------------------
# helpers and fixtures
# ---------------------------------------------------------------------------------------------


def tiny_config(samples=(480,), **train_settings) -> dict:
    """The embedded default config cut down to one tiny model on a 600-sample world."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["world"] = {"pool_size": 600, "shard_size": 100, "test_per_class": 4,
                    "train_per_class": 4, "retrieval_size": 20, "near_duplicates": 20}
    cfg["scales"] = {SCALE: 600}
    cfg["grid"] = {"models": [MODEL], "scales": [SCALE], "samples_seen": list(samples)}
    cfg["fit"].pop("comparisons")  # config.yaml's compare its const-cooldown runs: this grid is cosine
    cfg["train"].pop("overrides")  # config.yaml's learning rate per model: the tests set their own
    cfg["train"].update(device="cpu", precision="fp32", batch_size=BATCH, checkpoints=EPOCHS,
                        warmup=2, workers=1, threads=1, nproc=1)
    cfg["train"].update(train_settings)
    from clipscale import checks

    return checks.validate(cfg, "tiny test config")  # every check the Snakefile makes


def run_of(cfg: dict, samples) -> grid.Run:
    return grid.find_run(cfg, MODEL, SCALE, str(samples))


@contextmanager
def inside(folder: Path, env: dict | None = None):
    """cwd = folder and extra environment variables, restored afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        for k, v in (env or {}).items():
            if v is None:
                mp.delenv(k, raising=False)
            else:
                mp.setenv(k, v)
        yield


MANIFEST = Path("subset") / "manifest.json"  # relative to the run's working directory


@pytest.fixture(scope="module")
def pool_index(small_world):
    return subsets.build_index(small_world / "pool")


def subset_in(index, folder: Path) -> Path:
    """A 600-sample subset of the small world (6 shards) in `folder`, as the pipeline's subset
    rule makes it (manifests name their shards relative to the working directory)."""
    with inside(folder):
        subsets.write_subset(index, SCALE, 600, 0, MANIFEST.parent)
    return MANIFEST


@pytest.fixture
def manifest(pool_index, in_tmp) -> Path:
    """The subset in this test's working directory (the cwd)."""
    return subset_in(pool_index, in_tmp)


@pytest.fixture(scope="module")
def hooks_env(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("hooks")
    (folder / "sitecustomize.py").write_text(HOOKS)
    path = os.pathsep.join([str(folder)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return {"PYTHONPATH": path, "CLIPSCALE_TEST_HOOKS": "1", "CLIPSCALE_TEST_KILL_AT_STEP": None,
            "CLIPSCALE_TEST_PAUSE_AT_STEP": None, "CLIPSCALE_TEST_SIGNAL_AT_STEP": None,
            "CLIPSCALE_TEST_TERM_AT_STEP": None, "CLIPSCALE_TEST_DISK_FULL_AT_SAVE": None}


def launch(cfg, samples, manifest, folder: Path, env=None) -> dict:
    """train.launch in `folder` (the rule's call); returns the record it wrote to run.json."""
    run = run_of(cfg, samples)
    with inside(folder, env):
        train.launch(cfg, run, manifest, "run.json", log_file="train.log")
    return json.loads((folder / "run.json").read_text())


def ckpt_dir(folder: Path, samples) -> Path:
    return folder / "results" / "train" / MODEL / SCALE / str(samples) / train.OPENCLIP_NAME / "checkpoints"


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def optimizer_steps(ckpt: dict) -> int:
    steps = {int(s["step"]) for s in ckpt["optimizer"]["state"].values()}
    assert len(steps) == 1, steps
    return steps.pop()


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# 480 samples = 4 virtual epochs x 120; batch 32 -> open_clip rounds up to 4 steps (128 samples)
# per epoch: 16 steps, 512 samples really seen
SAMPLES = 480
STEPS_PER_EPOCH = math.ceil(SAMPLES // EPOCHS / BATCH)
SEEN = EPOCHS * STEPS_PER_EPOCH * BATCH


@pytest.fixture(scope="module")
def baseline(request, pool_index, hooks_env, tmp_path_factory) -> dict:
    """One uninterrupted run (deterministic data order), for the resume tests to compare with."""
    with scratch(request, tmp_path_factory, "baseline") as folder:
        cfg = tiny_config()
        record = launch(cfg, SAMPLES, subset_in(pool_index, folder), folder, hooks_env)
        yield {"cfg": cfg, "folder": folder, "record": record,
               "final": load(ckpt_dir(folder, SAMPLES) / f"epoch_{EPOCHS}.pt")}


@pytest.fixture(scope="module", params=[0, 2], ids=["in-process", "2-workers"])
def baseline_workers(request, pool_index, hooks_env, tmp_path_factory) -> dict:
    """The same run with its data read in the training process (train.workers 0, the embedded
    default) or by 2 data workers."""
    with scratch(request, tmp_path_factory, f"baseline-w{request.param}") as folder:
        cfg = tiny_config(workers=request.param)
        record = launch(cfg, SAMPLES, subset_in(pool_index, folder), folder, hooks_env)
        yield {"cfg": cfg, "folder": folder, "record": record,
               "final": load(ckpt_dir(folder, SAMPLES) / f"epoch_{EPOCHS}.pt")}


@pytest.fixture(scope="module")
def killed(request, pool_index, hooks_env, tmp_path_factory) -> Path:
    """The same run SIGKILLed at its 2nd step of epoch 3 (after epoch_2.pt was written)."""
    with scratch(request, tmp_path_factory, "killed") as folder:
        cfg = tiny_config()
        kill_at = 2 * STEPS_PER_EPOCH + 2
        manifest = subset_in(pool_index, folder)
        with pytest.raises(train.TrainingError, match=r"exited with status -9.*resumes from the latest"):
            launch(cfg, SAMPLES, manifest, folder, {**hooks_env, "CLIPSCALE_TEST_KILL_AT_STEP": str(kill_at)})
        yield folder


def resume_copy(killed: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    shutil.copytree(killed, folder, symlinks=True)
    return folder


# ---------------------------------------------------------------------------------------------
# 1. the open_clip command line
# ---------------------------------------------------------------------------------------------


def parsed(args: list[str]):
    from open_clip_train.params import parse_args

    return parse_args(args)


def test_open_clip_args_follow_the_paper_recipe(manifest):
    cfg = tiny_config(samples=(10_000,), lr=0.003, wd=0.15, warmup=7, batch_size=64,
                      precision="amp_bf16", checkpoints=5, beta2=0.95)
    run = run_of(cfg, "10k")
    hp = grid.hparams(cfg, run)
    m = subsets.read_manifest(manifest)
    a = parsed(train.open_clip_args(cfg, run, m, hp))
    assert a.dataset_resampled and a.dataset_type == "webdataset"
    assert a.local_loss and a.gather_with_grad
    assert a.epochs == 5 and a.train_num_samples == 2000
    assert a.epochs * a.train_num_samples == run.samples_seen == 10_000
    # what open_clip really draws: whole global batches per virtual epoch (32 x 64 = 2048)
    assert hp["samples_seen_exact"] == 5 * 32 * 64 == 10_240
    assert (a.precision, a.lr, a.wd, a.warmup, a.batch_size, a.beta2) == ("amp_bf16", 0.003, 0.15, 7, 64, 0.95)
    assert a.save_frequency == 1 and a.resume == "latest"  # a checkpoint per virtual epoch, resumable
    assert a.train_data == m["url"] and a.model == MODEL and a.seed == cfg["seed"]
    assert Path(a.logs) == train.run_dir(run) and a.name == train.OPENCLIP_NAME
    assert a.report_to == "tensorboard"  # train.report_to: training curves by default


def test_open_clip_args_take_per_run_overrides(manifest):
    cfg = tiny_config(samples=(512, 1024), overrides=[
        {"samples_seen": 1024, "lr": 0.01, "batch_size": 16, "precision": "amp_bf16", "warmup": 3,
         "wd": 0.05, "extra_args": ["--grad-clip-norm", "1.0"]}])
    m = subsets.read_manifest(manifest)
    small, big = run_of(cfg, 512), run_of(cfg, 1024)
    a = parsed(train.open_clip_args(cfg, small, m, grid.hparams(cfg, small)))
    b = parsed(train.open_clip_args(cfg, big, m, grid.hparams(cfg, big)))
    assert (a.lr, a.batch_size, a.precision, a.warmup, a.wd, a.grad_clip_norm) == (0.002, BATCH, "fp32", 2, 0.1, None)
    assert (b.lr, b.batch_size, b.precision, b.warmup, b.wd, b.grad_clip_norm) == (0.01, 16, "amp_bf16", 3, 0.05, 1.0)
    assert b.epochs * b.train_num_samples == 1024


def test_fewer_samples_per_checkpoint_than_a_global_batch_is_refused(manifest):
    cfg = tiny_config(samples=(256,), nproc=2)
    cfg["grid"]["samples_seen"] = [100]  # 25 samples per checkpoint < 2 x 32 (past the config check)
    run = run_of(cfg, 100)
    with pytest.raises(train.TrainingError, match=r"vit-xs/s/100: 25 samples per checkpoint.*\(64\)"):
        train.open_clip_args(cfg, run, subsets.read_manifest(manifest), grid.hparams(cfg, run))


# ---------------------------------------------------------------------------------------------
# 2. a whole run, resume after SIGKILL, corrupt checkpoint, failures
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_pipeline_run_writes_checkpoints_and_record(baseline):
    rec, folder = baseline["record"], baseline["folder"]
    assert rec["epochs"] * rec["train_num_samples"] == rec["samples_seen"] == SAMPLES
    assert rec["samples_seen_exact"] == SEEN == 512  # whole batches, as open_clip drew them
    assert (rec["epochs"], rec["world_size"], rec["global_batch_size"]) == (EPOCHS, 1, BATCH)
    assert rec["steps_this_attempt"] == EPOCHS * STEPS_PER_EPOCH
    assert rec["steps_total"] == rec["steps_this_attempt"]
    assert rec["seconds_total"] == rec["seconds_this_attempt"] > 0
    [attempt] = rec["attempts"]
    assert (attempt["ended"], attempt["resumed_from"], attempt["steps"]) == ("completed", 0, EPOCHS * STEPS_PER_EPOCH)
    assert attempt["seconds"] == rec["seconds_this_attempt"] and attempt["started"] < attempt["finished"]
    assert rec["skipped_samples"]["total"] == 0 and rec["rejected_checkpoints"] == []
    assert rec["gmac_per_sample"] > 0 and rec["total_gmac"] == pytest.approx(rec["gmac_per_sample"] * SEEN)
    folder_ckpts = ckpt_dir(folder, SAMPLES)
    assert sorted(p.name for p in folder_ckpts.iterdir()) == [f"epoch_{e}.pt" for e in range(1, EPOCHS + 1)]
    assert rec["checkpoints"] == {str(e): str(Path(f"results/train/vit-xs/s/{SAMPLES}/openclip/checkpoints")
                                               / f"epoch_{e}.pt") for e in range(1, EPOCHS + 1)}
    for e in range(1, EPOCHS + 1):
        ck = load(folder_ckpts / f"epoch_{e}.pt")
        assert ck["epoch"] == e and optimizer_steps(ck) == e * STEPS_PER_EPOCH
    assert optimizer_steps(ck) * rec["global_batch_size"] == rec["samples_seen_exact"]
    # what open_clip itself says it ran with
    params = dict(line.split(": ", 1) for line in
                  (folder_ckpts.parent / "params.txt").read_text().splitlines() if ": " in line)
    assert params["dataset_resampled"] == "True" and params["local_loss"] == "True"
    assert params["gather_with_grad"] == "True" and params["train_num_samples"] == str(SAMPLES // EPOCHS)
    assert params["epochs"] == str(EPOCHS) and params["precision"] == "fp32"
    assert params["device"] == "cpu"  # train.device reaches open_clip (its default is cuda)
    # open_clip's default augmentation, through clipscale.augment's faster equivalent
    train_log = (folder / "train.log").read_text()
    assert "training transform: FastTrainTransform(size=[32, 32], scale=(0.9, 1.0)" in train_log
    assert "tokenizer: CachedTokenizer(" in train_log


def test_report_to_reaches_open_clip(manifest):
    m = subsets.read_manifest(manifest)
    for names, expected in (([], ""), (["tensorboard"], "tensorboard"), (["tensorboard", "wandb"], "tensorboard,wandb")):
        cfg = tiny_config()
        cfg["train"]["report_to"] = names  # past the config check (wandb may not be installed)
        run = run_of(cfg, SAMPLES)
        a = parsed(train.open_clip_args(cfg, run, m, grid.hparams(cfg, run)))
        assert a.report_to == expected
        assert ("tensorboard" in a.report_to, "wandb" in a.report_to) == ("tensorboard" in names, "wandb" in names)


def test_wandb_without_its_package_is_refused_before_any_job(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    with pytest.raises(config_mod.ConfigError, match=r"train.report_to: wandb needs the wandb package"):
        tiny_config(report_to=["tensorboard", "wandb"])
    tiny_config(report_to=["tensorboard"])


def test_wandb_logs_offline_into_the_run_folder_as_a_run_of_its_own(in_tmp, monkeypatch):
    """open_clip names every W&B run after --name (``openclip`` here): each run gets its own name
    and id, project clipscale, offline, its files under the run's folder."""
    import types

    import open_clip_train.main as oct_main

    calls = []
    fake = types.SimpleNamespace(init=lambda *a, **kw: calls.append(kw))
    monkeypatch.setattr(oct_main, "wandb", fake)
    for var in ("WANDB_MODE", "WANDB_DIR"):  # unset here, as they were before, after the test
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    cfg = tiny_config()
    run = run_of(cfg, SAMPLES)
    train.install_wandb_offline(run)
    train.install_wandb_offline(run)  # a second install wraps open_clip's call once
    oct_main.wandb.init(project="open-clip", name="openclip", id="openclip", resume="auto")
    assert calls == [{"project": "clipscale", "name": "vit-xs/s/480", "id": "vit-xs-s-480", "resume": "auto"}]
    assert os.environ["WANDB_MODE"] == "offline"
    assert Path(os.environ["WANDB_DIR"]) == (in_tmp / train.run_dir(run)).absolute()
    monkeypatch.setattr(oct_main, "wandb", None)
    with pytest.raises(train.TrainingError, match="wandb package is not installed"):
        train.install_wandb_offline(run)


@pytest.mark.slow
def test_tensorboard_event_files_hold_the_training_loss(baseline):
    """The default train.report_to: open_clip's TensorBoard event files under the run's folder,
    with the loss of the steps it logs (every 10th and each epoch's last), the same values as
    losses.csv, and the learning rate and samples/s beside it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = baseline["folder"]
    tb = folder / "results" / "train" / MODEL / SCALE / str(SAMPLES) / train.OPENCLIP_NAME / "tensorboard"
    events = sorted(tb.glob("events.out.tfevents.*"))
    assert events, f"no event file in {tb}"
    acc = EventAccumulator(str(tb))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/samples_per_second"} <= tags
    logged = {e.step: e.value for e in acc.Scalars("train/loss")}
    last = EPOCHS * STEPS_PER_EPOCH - 1
    # each epoch's first step (0 mod 10 within it) and last step
    assert set(logged) == {e * STEPS_PER_EPOCH + i for e in range(EPOCHS) for i in (0, STEPS_PER_EPOCH - 1)}
    assert max(logged) == last
    ours = losses(folder, SAMPLES)
    for step, value in logged.items():
        assert value == pytest.approx(float(ours[step]), rel=1e-6), step


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(baseline, killed, hooks_env, tmp_path):
    folder = resume_copy(killed, tmp_path)
    ckpts = ckpt_dir(folder, SAMPLES)
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch_1.pt", "epoch_2.pt"]
    assert not (folder / "run.json").exists()
    before = {p.name: p.read_bytes() for p in ckpts.iterdir()}

    rec = launch(baseline["cfg"], SAMPLES, MANIFEST, folder, hooks_env)  # the workflow, re-run

    assert rec["steps_this_attempt"] == (EPOCHS - 2) * STEPS_PER_EPOCH  # epochs 3 and 4 only
    first, second = rec["attempts"]  # the SIGKILLed attempt could not write its end
    assert first["ended"].startswith("killed") and first["steps"] is None and first["resumed_from"] == 0
    assert (second["ended"], second["resumed_from"]) == ("completed", 2)
    assert rec["steps_total"] == rec["steps_this_attempt"]  # the killed attempt's steps are unknown
    assert rec["samples_seen_exact"] == baseline["record"]["samples_seen_exact"]
    assert rec["final_checkpoint"] == baseline["record"]["final_checkpoint"]
    final = load(ckpts / f"epoch_{EPOCHS}.pt")
    assert optimizer_steps(final) == EPOCHS * STEPS_PER_EPOCH
    assert same_weights(final["state_dict"], baseline["final"]["state_dict"])
    assert {p: (ckpts / p).read_bytes() for p in before} == before  # epochs 1-2 not redone
    log = (ckpts.parent / "out.log").read_text()
    assert "resuming checkpoint" in log and "epoch_2.pt' (epoch 2)" in log


def losses(folder: Path, samples) -> dict[int, str]:
    """global step -> loss (as written: repr of the float) from the run's losses.csv; a step
    trained again after a resume counts with its last value."""
    out = {}
    path = folder / "results" / "train" / MODEL / SCALE / str(samples) / train.LOSSES_NAME
    for line in path.read_text().splitlines():
        step, loss = line.split(",")
        out[int(step)] = loss
    return out


@pytest.mark.slow
def test_walltime_warning_saves_the_place_and_the_next_window_resumes_exactly(baseline_workers, pool_index,
                                                                             hooks_env, tmp_path):
    """Slurm's walltime warning (SIGUSR1) at the start of epoch 3: the step is finished, a
    partial checkpoint is written, the job ends; the next window resumes at that step (the data
    stream drops what the first steps of the epoch were made of, undecoded) and ends with the
    uninterrupted run's step count, losses and weights, bit for bit, whether the data is read in
    the training process or by data workers (with 2 workers the stop waits for an even step)."""
    baseline = baseline_workers
    folder = tmp_path / "windows"
    folder.mkdir()
    manifest = subset_in(pool_index, folder)
    signal_at = 2 * STEPS_PER_EPOCH + 1  # during the 1st step of epoch 3
    workers = baseline["cfg"]["train"]["workers"]
    in_epoch = 1 if workers == 0 else 2  # the next step; with 2 workers the next even one
    done = 2 * STEPS_PER_EPOCH + in_epoch
    with pytest.raises(train.TrainingError, match=rf"walltime warning \(SIGUSR1\) after {done} steps, at epoch 2 "
                                                  rf"\+ {in_epoch} of 4 steps.*re-running the workflow resumes there"):
        launch(baseline["cfg"], SAMPLES, manifest, folder, {**hooks_env, "CLIPSCALE_TEST_SIGNAL_AT_STEP": str(signal_at)})
    run_folder = folder / "results" / "train" / MODEL / SCALE / str(SAMPLES)
    ckpts = ckpt_dir(folder, SAMPLES)
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch_1.pt", "epoch_2.pt"]
    partial = load(run_folder / "partial.pt")
    assert (partial["epoch"], partial["step_in_epoch"], partial["global_step"]) == (2, in_epoch, done)
    assert optimizer_steps(partial) == done  # the step in progress at the signal was finished

    rec = launch(baseline["cfg"], SAMPLES, MANIFEST, folder, hooks_env)  # the next window

    first, second = rec["attempts"]
    assert first["ended"].startswith("signal SIGUSR1") and first["steps"] == done
    assert first["stopped_at"] == {"epoch": 2, "step_in_epoch": in_epoch, "global_step": done}
    assert (second["resumed_from"], second["resumed_from_step"], second["steps"]) == (2, done, 16 - done)
    assert rec["steps_total"] == EPOCHS * STEPS_PER_EPOCH == baseline["record"]["steps_total"]
    final = load(ckpts / f"epoch_{EPOCHS}.pt")
    assert optimizer_steps(final) == EPOCHS * STEPS_PER_EPOCH
    assert losses(folder, SAMPLES) == losses(baseline["folder"], SAMPLES)
    assert same_weights(final["state_dict"], baseline["final"]["state_dict"])
    assert not list(run_folder.glob("partial.pt*"))  # the final checkpoint holds all it had


@pytest.mark.slow
@pytest.mark.parametrize("baseline_workers", [2], indirect=True, ids=["2-workers"])
def test_a_sigterm_reaching_the_data_workers_first_still_saves_the_place(baseline_workers, pool_index,
                                                                       hooks_env, tmp_path):
    """A SIGTERM to the training's process group (the launcher stopping it for snakemake, a
    scancel) can reach the data workers before the training process handles it: on a loaded CI
    machine torch's worker handler exited and the attempt ended "error: DataLoader worker exited
    unexpectedly", its place lost. The workers keep serving batches: the step is finished, the
    partial checkpoint written, the attempt ends "signal SIGTERM" and the rerun resumes exactly."""
    baseline = baseline_workers
    folder = tmp_path / "term"
    folder.mkdir()
    manifest = subset_in(pool_index, folder)
    done = 2 * STEPS_PER_EPOCH + 2  # the signal in the 1st step of epoch 3; 2 workers: an even step
    with pytest.raises(train.TrainingError, match=r"stopped \(SIGTERM; .* at epoch 2 \+ 2 of 4 steps"):
        launch(baseline["cfg"], SAMPLES, manifest, folder,
               {**hooks_env, "CLIPSCALE_TEST_TERM_AT_STEP": str(2 * STEPS_PER_EPOCH + 1)})
    partial = load(folder / "results" / "train" / MODEL / SCALE / str(SAMPLES) / "partial.pt")
    assert (partial["epoch"], partial["step_in_epoch"], partial["global_step"]) == (2, 2, done)

    rec = launch(baseline["cfg"], SAMPLES, MANIFEST, folder, hooks_env)

    first, second = rec["attempts"]
    assert first["ended"].startswith("signal SIGTERM") and first["steps"] == done, first
    assert (second["resumed_from_step"], second["steps"]) == (done, 16 - done)
    assert losses(folder, SAMPLES) == losses(baseline["folder"], SAMPLES)
    final = load(ckpt_dir(folder, SAMPLES) / f"epoch_{EPOCHS}.pt")
    assert same_weights(final["state_dict"], baseline["final"]["state_dict"])


def test_a_window_without_a_step_is_requeued_once_after_progress(in_tmp, monkeypatch):
    """Attempts go on while the run progresses: a first window that ended before its first step
    stops the run with the reason (and never calls scontrol); one after a window that trained is
    requeued (a slow start-up on a loaded node, seen on CI); a second empty window in a row stops."""
    cfg = tiny_config()
    run = run_of(cfg, SAMPLES)
    train.run_dir(run).mkdir(parents=True)
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    calls = []
    monkeypatch.setattr(train.launcher, "requeue_this_job", lambda job: calls.append(job))
    hp = grid.hparams(cfg, run)
    not_requeued = r"before this attempt trained a step.*not requeued.*train.runtime.*signal_lead_s.*see job.log"

    def window(steps):
        entry = train.start_attempt(run, 2, [])
        train.end_attempt(run, entry, "signal SIGUSR1", steps, 40.0)

    window(0)
    with pytest.raises(train.TrainingError, match=not_requeued):
        train.end_of_window(run, hp, "job.log")
    assert calls == []
    window(3)  # with progress: requeued
    with pytest.raises(train.TrainingError, match=r"Slurm job 123 requeued"):
        train.end_of_window(run, hp, "job.log")
    window(0)  # empty, after one that trained: requeued once more
    with pytest.raises(train.TrainingError, match=r"Slurm job 123 requeued"):
        train.end_of_window(run, hp, "job.log")
    assert calls == ["123", "123"]
    window(0)  # two empty windows in a row: the walltime is too short for the start-up
    with pytest.raises(train.TrainingError, match=r"as in the attempt before; not requeued"):
        train.end_of_window(run, hp, "job.log")
    assert calls == ["123", "123"]


FINISH_THEN_DIE = ("import os, signal, sys; open(sys.argv[-1], 'w').write('{}'); "
                   "os.kill(os.getpid(), signal.SIGUSR1) if sys.argv[-2] == 'signal' else sys.exit(138)")


@pytest.mark.parametrize("how", ["signal", "srun-status"])
def test_a_walltime_warning_after_the_run_finished_does_not_requeue_it(in_tmp, monkeypatch, how, caplog):
    """Slurm's walltime warning can reach the training processes after their run finished and
    wrote its record (killing python, or srun answering 128 + SIGUSR1): the job succeeds; it is
    not requeued into a window that would train nothing (seen on CI: a fifth, empty attempt)."""
    import clipscale.launch

    cfg = tiny_config()
    run = run_of(cfg, SAMPLES)
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    calls = []
    monkeypatch.setattr(train.launcher, "requeue_this_job", lambda job: calls.append(job))
    monkeypatch.setattr(clipscale.launch, "build_command",
                        lambda target, args, **kw: [sys.executable, "-c", FINISH_THEN_DIE, how, args[-1]])
    with caplog.at_level(logging.WARNING, logger="clipscale.train"):
        train.launch(cfg, run, "manifest.json", "run.json", log_file="train.log")
    assert Path("run.json").read_text() == "{}" and calls == []
    assert "finished and wrote run.json" in caplog.text
    Path("stale.json").write_text("{}")  # a record from before this job is no proof
    monkeypatch.setattr(clipscale.launch, "build_command",
                        lambda target, args, **kw: [sys.executable, "-c", "import sys; sys.exit(1)"])
    with pytest.raises(train.TrainingError, match="exited with status 1"):
        train.launch(cfg, run, "manifest.json", "stale.json", log_file="train.log")


def test_a_finished_training_process_outlives_a_late_walltime_warning():
    """Past its training (``stop_on_signals`` left) a process ignores SIGUSR1, whose default
    action would kill it while it exits, turning a finished run into a failed one."""
    code = ("import os, signal, time; from clipscale.stopping import stop_on_signals\n"
            "with stop_on_signals(watch_parent=False): pass\n"
            "os.kill(os.getpid(), signal.SIGUSR1); time.sleep(0.2); print('alive')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "alive", res


@pytest.mark.slow
def test_changed_settings_start_the_run_afresh_and_keep_the_old_one(baseline, tmp_path):
    """Snakemake reruns a run whose settings changed: it must not resume the old run's
    checkpoints; they are moved to superseded/ (nothing lost) and the run starts at step 0."""
    folder = tmp_path / "changed"
    shutil.copytree(baseline["folder"], folder, symlinks=True)
    (folder / "run.json").unlink()
    cfg = tiny_config(lr=baseline["cfg"]["train"]["lr"] / 4)
    rec = launch(cfg, SAMPLES, MANIFEST, folder)
    assert [a["resumed_from"] for a in rec["attempts"]] == [0]
    assert rec["steps_this_attempt"] == EPOCHS * STEPS_PER_EPOCH and rec["lr"] == cfg["train"]["lr"]
    run_folder = folder / "results" / "train" / MODEL / SCALE / str(SAMPLES)
    (old,) = (run_folder / "superseded").iterdir()
    assert (old / train.OPENCLIP_NAME / "checkpoints" / f"epoch_{EPOCHS}.pt").exists()
    assert json.loads((old / "settings.json").read_text())["hparams"]["lr"] == baseline["cfg"]["train"]["lr"]
    rec = launch(cfg, SAMPLES, MANIFEST, folder)  # same settings again: resumes (already done)
    assert rec["steps_this_attempt"] == 0 and len(list((run_folder / "superseded").iterdir())) == 1


@pytest.mark.slow
def test_truncated_latest_checkpoint_is_moved_aside(baseline, killed, hooks_env, tmp_path):
    folder = resume_copy(killed, tmp_path)
    ckpts = ckpt_dir(folder, SAMPLES)
    latest = ckpts / "epoch_2.pt"
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 3])  # the job died while torch.save wrote it

    rec = launch(baseline["cfg"], SAMPLES, MANIFEST, folder, hooks_env)

    assert (ckpts / "epoch_2.pt.corrupt").stat().st_size == len(data) // 3
    assert rec["steps_this_attempt"] == (EPOCHS - 1) * STEPS_PER_EPOCH  # resumed from epoch 1
    final = load(ckpts / f"epoch_{EPOCHS}.pt")
    assert optimizer_steps(final) == EPOCHS * STEPS_PER_EPOCH
    assert same_weights(final["state_dict"], baseline["final"]["state_dict"])
    assert "epoch_2.pt cannot be resumed from: unreadable" in (folder / "train.log").read_text()
    [rejected] = rec["rejected_checkpoints"]
    assert rejected["file"].endswith("epoch_2.pt") and rejected["moved_to"].endswith("epoch_2.pt.corrupt")
    assert rejected["reason"].startswith("unreadable")
    assert rec["attempts"][-1]["rejected_checkpoints"] == [rejected]


def _fake_checkpoints(run, epochs):
    folder = train.checkpoint_dir(run)
    folder.mkdir(parents=True)
    for e in epochs:
        torch.save({"epoch": e, "state_dict": {"w": torch.full((64,), float(e))}}, folder / f"epoch_{e}.pt")
    return folder


def test_a_deleted_checkpoint_that_is_evaluated_is_trained_again(in_tmp):
    """A finished run's checkpoint deleted by hand: the check before the DAG names the record of
    the job that wrote it (Snakemake then runs that job again), and that job resumes before it,
    the later checkpoints moved aside (resuming from the newest would never write it again)."""
    from clipscale import evaluate, paths

    cfg = tiny_config()
    run = run_of(cfg, SAMPLES)
    record = paths.fill(paths.RUN_DONE, **run.wildcards)
    folder = _fake_checkpoints(run, [1, 3, 4])  # epoch 2 deleted: only the last is evaluated
    Path(record).write_text("{}")
    assert evaluate.missing_checkpoints(cfg) == {} and train.resume_before_missing(cfg, run, EPOCHS) is None
    (folder / "epoch_4.pt").unlink()
    assert evaluate.missing_checkpoints(cfg) == {record: [str(folder / "epoch_4.pt")]}

    cfg["evaluate"]["all_checkpoints"] = True
    assert evaluate.missing_checkpoints(cfg) == {record: [str(folder / f"epoch_{e}.pt") for e in (2, 4)]}
    moved = train.resume_before_missing(cfg, run, EPOCHS)
    assert sorted(train.checkpoints(run)) == [1] and [p.name for p in moved.iterdir()] == ["epoch_3.pt"]


def test_drop_corrupt_latest_keeps_the_newest_readable(in_tmp):
    run = grid.Run(MODEL, SCALE, SAMPLES)
    folder = _fake_checkpoints(run, [1, 2, 9, 10])
    for e in (9, 10):  # two unreadable: a truncated one and an empty one
        p = folder / f"epoch_{e}.pt"
        p.write_bytes(p.read_bytes()[:50] if e == 10 else b"")
    assert list(train.checkpoints(run)) == [1, 2, 9, 10]  # numeric order, not 1, 10, 2, 9
    rejected = train.check_resume_checkpoints(run, epochs=10)
    assert list(train.checkpoints(run)) == [1, 2]
    assert sorted(p.name for p in folder.glob("*.corrupt")) == ["epoch_10.pt.corrupt", "epoch_9.pt.corrupt"]
    assert [r["file"] for r in rejected] == [str(folder / "epoch_10.pt"), str(folder / "epoch_9.pt")]
    assert train.check_resume_checkpoints(run, epochs=10) == []  # good files are never moved
    assert list(train.checkpoints(run)) == [1, 2]


class _RunsCodeWhenLoaded:
    """Unpickling this calls os.system (what a planted checkpoint could do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def test_unsafe_or_out_of_range_checkpoints_are_moved_aside_unrun(in_tmp, caplog):
    run = grid.Run(MODEL, SCALE, SAMPLES)
    folder = _fake_checkpoints(run, [1, 2, 3, 5])
    marker = in_tmp / "code-ran"
    torch.save({"epoch": 4, "state_dict": {}, "x": _RunsCodeWhenLoaded(marker)}, folder / "epoch_4.pt")
    torch.save({"epoch": 7, "state_dict": {"w": torch.ones(2)}}, folder / "epoch_3.pt")  # name says 3
    caplog.set_level(logging.WARNING, logger="clipscale.train")

    rejected = train.check_resume_checkpoints(run, epochs=EPOCHS)  # 4 epochs: epoch_5.pt is beyond

    assert not marker.exists()  # the planted pickle never ran
    assert list(train.checkpoints(run)) == [1, 2]
    assert sorted(p.name for p in folder.iterdir()) == [
        "epoch_1.pt", "epoch_2.pt", "epoch_3.pt.rejected", "epoch_4.pt.rejected", "epoch_5.pt.rejected"]
    reasons = {Path(r["file"]).name: r["reason"] for r in rejected}
    assert reasons["epoch_5.pt"] == "epoch 5 is beyond the run's 4 epochs"
    assert reasons["epoch_4.pt"].startswith("unsafe: not loadable with weights_only=True")
    assert reasons["epoch_3.pt"] == "its 'epoch' field says 7, its name 3"
    assert all(r["moved_to"] == r["file"] + ".rejected" for r in rejected)
    for name, reason in reasons.items():
        assert any(name in m and reason in m for m in caplog.messages)
    # a rejected name is used again and rejected again: the first file aside is kept
    torch.save({"epoch": 9, "state_dict": {}}, folder / "epoch_5.pt")
    [again] = train.check_resume_checkpoints(run, epochs=EPOCHS)
    assert again["moved_to"] == str(folder / "epoch_5.pt.rejected.1")
    assert (folder / "epoch_5.pt.rejected").exists()


def test_a_foreign_pt_file_that_open_clip_would_resume_from_is_checked(in_tmp):
    """open_clip's --resume latest takes the last *.pt in natural order, any name, and its glob
    (<folder>**/*.pt) also matches sibling folders checkpoints*/: the check covers what it picks."""
    run = grid.Run(MODEL, SCALE, SAMPLES)
    folder = _fake_checkpoints(run, [1])
    torch.save({"epoch": 1, "state_dict": {}}, folder / "zz.pt")
    (folder.parent / "checkpoints_old").mkdir()
    torch.save({"epoch": 2, "state_dict": {}}, folder.parent / "checkpoints_old" / "epoch_2.pt")
    rejected = train.check_resume_checkpoints(run, epochs=EPOCHS)
    assert [r["file"] for r in rejected] == [str(folder.parent / "checkpoints_old" / "epoch_2.pt"),
                                             str(folder / "zz.pt")]
    assert all("not named epoch_N.pt in" in r["reason"] for r in rejected)
    assert list(train.checkpoints(run)) == [1]


def test_open_clip_resume_loads_weights_only(in_tmp, monkeypatch):
    """open_clip_train's own resume load (pt_load) is made weights_only=True explicitly, so
    torch's TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot turn it into a full unpickle."""
    import open_clip_train.main as oct_main

    marker = in_tmp / "code-ran"
    torch.save({"epoch": 1, "x": _RunsCodeWhenLoaded(marker)}, in_tmp / "epoch_1.pt")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    train.install_guards(train.LossGuard("r", 4.0))
    with pytest.raises(Exception, match="Weights only load failed"):
        oct_main.pt_load(str(in_tmp / "epoch_1.pt"), map_location="cpu")
    assert not marker.exists()


def test_open_clip_error_fails_the_run(in_tmp, manifest, monkeypatch, caplog):
    import open_clip_train.main as oct_main

    cfg = tiny_config()
    (in_tmp / "c.json").write_text(json.dumps(cfg))
    monkeypatch.setattr(oct_main, "main", lambda args: -1)  # open_clip's own error return
    argv = ["--config-json", "c.json", "--model", MODEL, "--scale", SCALE, "--samples", str(SAMPLES),
            "--manifest", str(manifest), "--out", "run.json"]
    with pytest.raises(train.TrainingError, match=r"vit-xs/s/480: open_clip_train returned -1"):
        train.train(cfg, run_of(cfg, SAMPLES), manifest)
    assert train.main(argv) == 1 and not Path("run.json").exists()
    monkeypatch.setattr(oct_main, "main", lambda args: None)  # "success" but no final checkpoint
    with pytest.raises(train.TrainingError, match=r"finished without its final checkpoint .*epoch_4.pt"):
        train.train(cfg, run_of(cfg, SAMPLES), manifest)


@pytest.mark.slow
def test_failed_process_fails_the_job(in_tmp, manifest):
    """A training process that dies (here: its model is unknown to open_clip) fails launch()."""
    cfg = tiny_config()
    cfg["models"][MODEL]["open_clip"] = {"embed_dim": 8}  # not a valid open_clip model config
    with pytest.raises(train.TrainingError, match=r"vit-xs/s/480: training processes exited with status 1"):
        train.launch(cfg, run_of(cfg, SAMPLES), manifest, "run.json", log_file="train.log")
    assert not Path("run.json").exists()
    assert "Traceback" in Path("train.log").read_text()


def test_missing_shard_fails_before_training(in_tmp, manifest):
    """With --dataset-resampled open_clip would skip a missing shard forever: refuse it first."""
    (manifest.parent / "shards" / "000003.tar").unlink()
    cfg = tiny_config()
    with pytest.raises(train.TrainingError, match=r"1 shard\(s\) missing or empty, e.g. .*000003.tar"):
        train.train(cfg, run_of(cfg, SAMPLES), manifest)


def _bad_shard(small_world: Path, out: Path) -> None:
    """Shard 0 of the small world with every 10th image corrupt (keys ...3) and every 10th
    caption missing (keys ...7): frequent enough that any 128 samples drawn hit both."""
    with tarfile.open(small_world / "pool" / "00000.tar") as src, tarfile.open(out, "w") as dst:
        for member in src.getmembers():
            key, ext = member.name.split(".", 1)
            data = src.extractfile(member).read()
            if ext == "txt" and key.endswith("7"):
                continue
            if ext == "jpg" and key.endswith("3"):
                data = b"this is not a JPEG"
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))


@pytest.mark.slow
def test_skipped_samples_are_recorded(in_tmp, small_world):
    """Corrupt JPEGs and captionless samples are skipped by open_clip's webdataset pipeline in the
    data worker process (workers: 1); run.json counts them, with reasons and examples."""
    shard = in_tmp / "bad.tar"
    _bad_shard(small_world, shard)
    (in_tmp / "manifest.json").write_text(json.dumps(
        {"name": SCALE, "n_samples": 100, "url": "bad.tar", "shards": [{"file": "bad.tar", "n_samples": 100}]}))
    cfg = tiny_config(samples=(128,), checkpoints=1)

    rec = launch(cfg, 128, "manifest.json", in_tmp)

    skipped = rec["skipped_samples"]
    assert set(skipped["by_reason"]) == {"no caption", "decode error: UnidentifiedImageError"}
    assert skipped["total"] == sum(skipped["by_reason"].values())
    assert all(n >= 2 for n in skipped["by_reason"].values())
    examples = {e["reason"]: e for e in skipped["examples"]}
    assert examples["no caption"]["key"].endswith("7")
    assert examples["decode error: UnidentifiedImageError"]["key"].endswith("3")
    assert all(e["url"] == "bad.tar" for e in skipped["examples"])
    assert rec["data_samples"] == 100


class _SignalsWhilePickled:
    """torch.save pickles this as an empty OrderedDict, sending SIGINT to this process meanwhile."""

    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGINT)
        return collections.OrderedDict, ()


def test_stop_signal_waits_for_a_checkpoint_being_saved(tmp_path):
    path = tmp_path / "epoch_1.pt"
    before = signal.getsignal(signal.SIGTERM)
    with train.stop_on_signals() as stop:
        torch.save({"epoch": 1, "w": torch.ones(1000), "x": _SignalsWhilePickled()}, path)
        assert stop.pending  # the save finished first
        with pytest.raises(train.TrainingStopped, match="SIGINT"):
            stop.check()
        with pytest.raises(train.TrainingStopped, match="SIGINT"):  # outside a save: at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) is before
    assert load(path)["epoch"] == 1  # complete


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_term_and_the_walltime_warning_stop_at_the_next_step_with_its_place(sig):
    """SIGTERM (preemption, requeue, scancel) and SIGUSR1 (the walltime warning) do not interrupt
    a step: they ask for a stop at the next step boundary, where the place is saved."""
    with train.stop_on_signals() as stop:
        os.kill(os.getpid(), sig)
        time.sleep(0.2)  # nothing raised
        assert stop.save_requested and stop.signum == sig and not stop.pending
        stop.check()  # not a pending SIGINT: nothing raised either


LAUNCHER = textwrap.dedent("""
    # the rule's script (workflow/scripts/train.py) in miniature
    import json, sys
    from clipscale import grid, train
    from clipscale.logs import job_logging
    cfg = json.loads(open(sys.argv[1]).read())
    with job_logging("train.log"):
        train.launch(cfg, grid.find_run(cfg, *sys.argv[2:5]), sys.argv[5], "run.json", log_file="train.log")
""")
PARENT = "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(600)"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has stopped (nobody may reap it in a container)


def _children() -> dict[int, list[int]]:
    out = collections.defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        out[ppid].append(int(stat.parent.name))
    return out


def _tree(root: int) -> list[int]:
    children, out, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _wait_until(what, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.2)
    return what()


@pytest.mark.slow
def test_interrupted_launcher_stops_training_and_attempts_add_up(in_tmp, manifest, hooks_env):
    """The rule's script (train.launch) loses its parent, then gets SIGINT: both times every
    training process is gone within 15 s, no run.json is written, and the attempt (steps,
    resumed_from, how it ended) is kept; the third attempt completes and run.json lists all.
    The first stop (SIGTERM from the launcher) finishes its step and saves its place there; the
    SIGINT stops at once, and the third attempt resumes from the newer epoch checkpoint."""
    cfg = tiny_config()
    Path("cfg.json").write_text(json.dumps(cfg))
    argv = [sys.executable, "-c", LAUNCHER, "cfg.json", MODEL, SCALE, str(SAMPLES), str(manifest)]
    paused = in_tmp / "paused"
    env = {**os.environ, **{k: v for k, v in hooks_env.items() if v is not None},
           "CLIPSCALE_TEST_PAUSED_FILE": str(paused)}
    pausing = {**env, "CLIPSCALE_TEST_PAUSE_AT_STEP": str(STEPS_PER_EPOCH + 2)}  # 2nd step of epoch 2

    seen: list[int] = []  # killed at the end if still there (a failing test leaves no strays)

    def underway(launcher: int) -> list[int]:
        assert _wait_until(paused.exists, 180), (in_tmp / "train.log").read_text()
        pids = _tree(launcher)
        seen.extend(pids)
        assert int(paused.read_text()) in pids  # the training process, under the launcher
        paused.unlink()
        return pids

    try:
        _interrupt_twice_then_complete(argv, env, pausing, underway, seen)
    finally:
        for pid in seen:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    rec = json.loads(Path("run.json").read_text())
    attempts = rec["attempts"]
    assert [a["ended"] for a in attempts] == ["signal SIGTERM", "signal SIGINT", "completed"]
    assert [a["resumed_from"] for a in attempts] == [0, 1, 2]
    # 1st: paused in the 2nd step of epoch 2, which it finished and saved: 6 steps; 2nd: resumed
    # there, paused in its 6th step (the last of epoch 3), stopped at once: 5 steps, epoch 2 saved
    saved_at = STEPS_PER_EPOCH + 2
    assert attempts[0]["stopped_at"]["global_step"] == attempts[1]["resumed_from_step"] == saved_at
    assert [a["steps"] for a in attempts] == [saved_at, 5, 2 * STEPS_PER_EPOCH]
    assert rec["steps_this_attempt"] == 2 * STEPS_PER_EPOCH
    assert rec["steps_total"] == saved_at + 5 + 2 * STEPS_PER_EPOCH
    assert rec["seconds_total"] == pytest.approx(sum(a["seconds"] for a in attempts), abs=0.05)
    assert all(a["started"] < a["finished"] for a in attempts)
    log = Path("train.log").read_text()
    assert "parent process" in log and "SIGINT" in log
    assert optimizer_steps(load(ckpt_dir(in_tmp, SAMPLES) / f"epoch_{EPOCHS}.pt")) == EPOCHS * STEPS_PER_EPOCH


@pytest.mark.slow
@pytest.mark.parametrize("error", ["unexpected pos", "ENOSPC"])
def test_a_full_disk_while_saving_a_checkpoint_stops_the_job_saying_so(in_tmp, manifest, hooks_env, error):
    """epoch_2.pt meets a full disk (torch's RuntimeError "unexpected pos", or an OSError ENOSPC):
    the job fails within seconds saying "no space left on device" and naming the file, its data
    workers gone (the training process waited on them forever); no half-written epoch_2.pt is
    left, epoch_1.pt is where the job says the run resumes, and the rerun resumes there."""
    cfg = tiny_config(workers=2)
    Path("cfg.json").write_text(json.dumps(cfg))
    argv = [sys.executable, "-c", LAUNCHER, "cfg.json", MODEL, SCALE, str(SAMPLES), str(manifest)]
    env = {**os.environ, **{k: v for k, v in hooks_env.items() if v is not None},
           "CLIPSCALE_TEST_DISK_FULL_AT_SAVE": "2", "CLIPSCALE_TEST_DISK_FULL_ERROR": error}
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the job hangs: {Path('train.log').read_text()[-3000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever it left
    assert proc.returncode != 0
    log = Path("train.log").read_text()
    ckpts = ckpt_dir(in_tmp, SAMPLES)
    written = ckpts.relative_to(in_tmp) / "epoch_2.pt"
    assert re.search(rf"ERROR run {MODEL}/{SCALE}/{SAMPLES}: no space left on device writing {re.escape(str(written))} "
                     r"\(0 bytes free there; ", log), log[-3000:]
    assert "resumes from epoch 1 (" in stderr + log
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch_1.pt"]  # nothing half-written
    attempt = train.read_attempts(run_of(cfg, SAMPLES))[-1]
    assert "no space left on device" in attempt["ended"] and attempt["steps"] == 2 * STEPS_PER_EPOCH
    if error != "ENOSPC":
        return  # the rerun once

    subprocess.run(argv, env={**env, "CLIPSCALE_TEST_DISK_FULL_AT_SAVE": "0"}, check=True, timeout=300)
    rec = json.loads(Path("run.json").read_text())
    assert rec["attempts"][-1]["resumed_from"] == 1 and rec["steps_this_attempt"] == 3 * STEPS_PER_EPOCH


def test_a_save_that_fails_for_space_says_so_and_keeps_the_previous_file(tmp_path, monkeypatch):
    """files.torch_save (every checkpoint of a training process goes through it): torch's zip
    writer on a full disk says only "unexpected pos"; the error names the file and the cause, and
    neither a half-written file nor its temporary one is left."""
    import shutil as shutil_mod

    from clipscale import files

    target = tmp_path / "epoch_2.pt"
    target.write_bytes(b"the previous, good one")

    def full_disk(obj, f):
        Path(f).write_bytes(b"PK" + bytes(700))
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", full_disk)
    usage = shutil_mod.disk_usage
    monkeypatch.setattr(shutil_mod, "disk_usage", lambda path: usage(path)._replace(free=0))
    with pytest.raises(files.WriteError, match=rf"^no space left on device writing {re.escape(str(target))} "
                                               r"\(0 bytes free there; RuntimeError: .*unexpected pos"):
        files.torch_save({"w": torch.zeros(3)}, target)
    assert [p.name for p in tmp_path.iterdir()] == ["epoch_2.pt"]
    assert target.read_bytes() == b"the previous, good one"
    monkeypatch.setattr(shutil_mod, "disk_usage", usage)  # space left: another failure, said as such
    with pytest.raises(files.WriteError, match=rf"^writing {re.escape(str(target))} failed \(RuntimeError"):
        files.torch_save({"w": torch.zeros(3)}, target)


def _interrupt_twice_then_complete(argv, env, pausing, underway, seen):
    # 1. the script's parent exits (snakemake gone) without signalling it
    parent = subprocess.Popen([sys.executable, "-c", PARENT, *argv], env=pausing)
    seen.append(parent.pid)
    assert _wait_until(lambda: _children().get(parent.pid), 30)
    [launcher] = _children()[parent.pid]
    pids = underway(launcher)
    parent.kill()
    parent.wait()
    assert _wait_until(lambda: not any(map(_alive, pids)), 15), [p for p in pids if _alive(p)]
    assert not Path("run.json").exists()

    # 2. SIGINT to the script (Ctrl-C, or snakemake passing it on)
    proc = subprocess.Popen(argv, env=pausing)
    pids = underway(proc.pid)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) != 0
    assert _wait_until(lambda: not any(map(_alive, pids)), 15 - (time.monotonic() - t0))
    assert not Path("run.json").exists()

    # 3. the workflow re-run: resumes from epoch 2 and completes
    subprocess.run(argv, env=env, check=True, timeout=300)


# ---------------------------------------------------------------------------------------------
# 3. divergence
# ---------------------------------------------------------------------------------------------


def test_loss_guard_passes_a_normal_curve():
    g = train.LossGuard("m/s/1k", max_jump=4.0)
    for i in range(200):
        g.check(6.0 * math.exp(-i / 50) + 0.5 + 0.3 * math.sin(i))
    assert g.step == 200


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_loss_guard_stops_on_non_finite_loss(bad):
    g = train.LossGuard("vit-s/12k/30k", max_jump=4.0)
    for _ in range(3):
        g.check(2.0)
    with pytest.raises(train.DivergenceError, match=rf"run vit-s/12k/30k: loss is {bad} at step 4"):
        g.check(bad)


def test_loss_guard_stops_on_a_spike_after_enough_history():
    g = train.LossGuard("r", max_jump=3.0, window=5, min_history=5)
    for v in [100.0, 1.0, 1.0, 1.0]:  # a high first loss is no spike: too little history yet
        g.check(v)
    g.check(1.0)
    g.check(9.0)  # mean of the last 5 is 20.8: no spike
    for _ in range(4):
        g.check(1.0)  # window now 9, 1, 1, 1, 1 -> mean 2.6
    with pytest.raises(train.DivergenceError, match=r"run r: loss spike at step 11: 8.0000 > 3.0 x running mean 2.6000"):
        g.check(8.0)


def test_guard_of_the_latest_run_checks_the_losses():
    """install_guards in one process twice (two runs): the new run's guard must be the one used."""
    import open_clip_train.train as oct_train

    first, second = train.LossGuard("first", 4.0), train.LossGuard("second", 4.0)
    train.install_guards(first)
    train.install_guards(second)
    x = torch.tensor(2.0, requires_grad=True)
    oct_train.backward(x * 3.0, None)
    assert (first.step, second.step) == (0, 1) and x.grad == 3.0
    with pytest.raises(train.DivergenceError, match="run second: loss is nan at step 2"):
        oct_train.backward(x * float("nan"), None)


@pytest.mark.slow
def test_diverging_run_fails_naming_run_and_step(in_tmp, manifest):
    cfg = tiny_config(overrides=[{"model": MODEL, "lr": 1.0e9}])  # AdamW steps of 1e9: NaN at once
    with pytest.raises(train.TrainingError, match="exited with status 1"):
        train.launch(cfg, run_of(cfg, SAMPLES), manifest, "run.json", log_file="train.log")
    log = Path("train.log").read_text()
    assert "run vit-xs/s/480: loss is nan at step 2" in log
    assert not Path("run.json").exists()
    assert not list(train.checkpoint_dir(run_of(cfg, SAMPLES)).glob("*.pt"))


# ---------------------------------------------------------------------------------------------
# 4. distributed: ClipLoss with local loss + gathered features == the global batch (A.3)
# ---------------------------------------------------------------------------------------------

N, D_IN, D_EMB, WORLD = 12, 10, 6, 2
MODES = [(True, True), (False, True), (True, False)]  # (local_loss, gather_with_grad)


class TwoTower(torch.nn.Module):
    """A CLIP in miniature: two linear encoders, normalized features, learned temperature."""

    def __init__(self):
        super().__init__()
        self.image = torch.nn.Linear(D_IN, D_EMB)
        self.text = torch.nn.Linear(D_IN, D_EMB)
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, x_img, x_txt):
        f = torch.nn.functional.normalize
        return f(self.image(x_img), dim=-1), f(self.text(x_txt), dim=-1), self.logit_scale.exp()


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(N, D_IN, generator=g, dtype=torch.float64), torch.randn(N, D_IN, generator=g, dtype=torch.float64)


def _forward_backward(model, x_img, x_txt, loss_fn):
    img, txt, scale = model(x_img, x_txt)
    img.retain_grad()
    txt.retain_grad()
    loss = loss_fn(img, txt, scale)
    loss.backward()
    return {"loss": loss.detach(), "img_grad": img.grad.detach(), "txt_grad": txt.grad.detach(),
            "params": {n.removeprefix("module."): p.grad.detach().clone() for n, p in model.named_parameters()}}


def _clip_loss_rank(rank: int, init_file: str, out_dir: str):
    import torch.distributed as dist
    from open_clip.loss import ClipLoss

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    x_img, x_txt = _batch()
    rows = slice(rank * N // WORLD, (rank + 1) * N // WORLD)
    results = {}
    for local_loss, gather_with_grad in MODES:
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(TwoTower().double())  # gloo, CPU
        loss_fn = ClipLoss(local_loss=local_loss, gather_with_grad=gather_with_grad,
                           rank=rank, world_size=WORLD)
        results[(local_loss, gather_with_grad)] = _forward_backward(model, x_img[rows], x_txt[rows], loss_fn)
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_clip_loss_local_loss_gather_with_grad_equals_global_batch(tmp_path):
    """Supplement A.3: with --local-loss --gather-with-grad each rank computes its rows' loss
    against all ranks' features; the gradients DDP averages are those of the global batch.

    Relations (W ranks, equal local batches): mean_r loss_r = global loss; the feature gradient
    on rank r is W x the global one for its rows (all_gather's backward sums every rank's
    contribution); DDP's averaged parameter gradients equal the global batch's exactly.
    Without gather_with_grad the other ranks' contributions are lost: the gradients differ.
    """
    import torch.multiprocessing as tmp
    from open_clip.loss import ClipLoss

    tmp.start_processes(_clip_loss_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD,
                        join=True, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    torch.manual_seed(0)
    model = TwoTower().double()
    x_img, x_txt = _batch()
    ref = _forward_backward(model, x_img, x_txt, ClipLoss())  # one process, the global batch
    n = N // WORLD
    close = dict(rtol=1e-9, atol=1e-12)
    for mode in MODES:
        local_loss, gather_with_grad = mode
        losses = torch.stack([r[mode]["loss"] for r in ranks])
        if local_loss:
            assert not torch.allclose(losses[0], losses[1])  # each rank: its own rows
        else:
            assert torch.allclose(losses, ref["loss"].expand(WORLD), **close)  # every rank: all rows
        assert torch.allclose(losses.mean(), ref["loss"], **close), mode
        # DDP all-reduced (averaged) the parameter gradients: every rank holds the same
        for name, g in ref["params"].items():
            assert torch.allclose(ranks[0][mode]["params"][name], ranks[1][mode]["params"][name], **close)
        grads_match = all(torch.allclose(ranks[0][mode]["params"][k], g, **close) for k, g in ref["params"].items())
        if gather_with_grad:
            assert grads_match, mode
            for r in range(WORLD):
                rows = slice(r * n, (r + 1) * n)
                assert torch.allclose(ranks[r][mode]["img_grad"], WORLD * ref["img_grad"][rows], **close)
                assert torch.allclose(ranks[r][mode]["txt_grad"], WORLD * ref["txt_grad"][rows], **close)
        else:
            assert not grads_match  # the negative control: this test can tell the difference


@pytest.mark.slow
def test_two_process_pipeline_run(in_tmp, manifest, caplog):
    """train.nproc: 2 -> launch() starts torchrun -> two ranks train with DDP (gloo, CPU)."""
    cfg = tiny_config(samples=(256,), nproc=2)  # 64 samples per epoch = one global batch of 2 x 32
    run = run_of(cfg, 256)
    caplog.set_level(logging.INFO, logger="clipscale.train")
    train.launch(cfg, run, manifest, "run.json", log_file="train.log")
    launched = [r.getMessage() for r in caplog.records if r.getMessage().startswith("launching:")]
    assert len(launched) == 1 and "-m torch.distributed.run" in launched[0]
    assert "--nproc-per-node=2" in launched[0] and "-m clipscale.train --" in launched[0]
    rec = json.loads(Path("run.json").read_text())
    assert (rec["world_size"], rec["global_batch_size"], rec["samples_seen_exact"]) == (2, 64, 256)
    assert rec["steps_this_attempt"] == EPOCHS
    log = Path("train.log").read_text()
    for r in range(2):
        assert f"Process (global: {r}, local {r}), total 2." in log
    final = load(train.checkpoint_dir(run) / f"epoch_{EPOCHS}.pt")
    assert all(k.startswith("module.") for k in final["state_dict"])  # trained wrapped in DDP
    assert optimizer_steps(final) == EPOCHS
    assert final["epoch"] == EPOCHS


@pytest.mark.slow
def test_a_run_in_two_jobs_ends_as_the_run_in_one(baseline, pool_index, hooks_env, tmp_path):
    """train.segments: the first job stops once checkpoint 2 is saved and records the run up to
    it (what evaluating checkpoints 1-2 needs); the last job resumes there and ends with the
    weights of the run made in one job: open_clip's schedule spans the whole run."""
    folder = tmp_path / "segments"
    folder.mkdir()
    manifest = subset_in(pool_index, folder)
    run = run_of(baseline["cfg"], SAMPLES)
    with inside(folder, hooks_env):
        train.launch(baseline["cfg"], run, manifest, "segment.json", log_file="train.log", until=2)
    segment = json.loads((folder / "segment.json").read_text())
    assert segment["segment_end"] == 2 and segment["final_checkpoint"] is None
    assert sorted(segment["checkpoints"]) == ["1", "2"] and segment["epochs"] == EPOCHS
    assert segment["attempts"][-1]["ended"] == "segment done (epoch 2)"
    assert segment["steps_total"] == 2 * STEPS_PER_EPOCH
    assert sorted(p.name for p in ckpt_dir(folder, SAMPLES).iterdir()) == ["epoch_1.pt", "epoch_2.pt"]

    rec = launch(baseline["cfg"], SAMPLES, manifest, folder, hooks_env)  # the run's last job

    assert rec["steps_total"] == EPOCHS * STEPS_PER_EPOCH and rec["segment_end"] is None
    final = load(ckpt_dir(folder, SAMPLES) / f"epoch_{EPOCHS}.pt")
    assert same_weights(final["state_dict"], baseline["final"]["state_dict"])
    assert losses(folder, SAMPLES) == losses(baseline["folder"], SAMPLES)


def test_each_virtual_epoch_draws_other_shards_also_without_data_workers():
    """open_clip_train's ResampledShards2 seeds itself with pytorch_worker_seed(epoch), which
    upstream ignores the epoch in outside a data worker (train.workers 0): every virtual epoch
    drew the same shards. clipscale.resume.install makes it count."""
    import open_clip_train.data as oct_data

    from clipscale import resume

    resume.install(Path("."), "test", 0)
    shards = oct_data.ResampledShards2([f"s{i}.tar" for i in range(100)], deterministic=True, epoch=-1)
    epochs = [[s["url"] for s, _ in zip(iter(shards), range(10))] for _ in range(3)]  # each iter: an epoch
    assert epochs[0] != epochs[1] != epochs[2] != epochs[0]
    again = oct_data.ResampledShards2([f"s{i}.tar" for i in range(100)], deterministic=True, epoch=-1)
    assert [[s["url"] for s, _ in zip(iter(again), range(10))] for _ in range(3)] == epochs  # deterministic


def test_the_shuffle_buffer_reaches_open_clips_pipeline_and_shapes_the_run(monkeypatch):
    """train.shuffle_buffer sizes the sample shuffle of open_clip's training pipeline (a virtual
    epoch reads about that many samples more than it trains on): it is in the run's params (a
    change trains the run again), and a const-cooldown branch takes its trunk's."""
    import argparse

    import open_clip_train.data as oct_data
    import webdataset

    from clipscale import shaping

    for name in ("_SAMPLE_SHUFFLE_SIZE", "_SAMPLE_SHUFFLE_INITIAL"):
        monkeypatch.setattr(oct_data, name, getattr(oct_data, name))
    train.install_shuffle_buffer(300)
    built, real = [], webdataset.shuffle

    def recording(bufsize=1000, initial=100, **kwargs):
        built.append((bufsize, initial))
        return real(bufsize, initial, **kwargs)

    monkeypatch.setattr(webdataset, "shuffle", recording)  # open_clip_train.data calls wds.shuffle
    args = argparse.Namespace(train_data="s-{0..1}.tar", train_data_upsampling_factors=None,
                              dataset_resampled=True, train_num_samples=256, batch_size=32, workers=0,
                              world_size=1, seed=0, distributed=False)
    oct_data.get_wds_dataset(args, lambda img: img, is_train=True, tokenizer=lambda text: [text])
    assert built == [(300, 60)]  # a fifth read before the first draw, upstream's ratio (5,000/1,000)

    cfg = tiny_config()
    run = grid.runs(cfg)[0]
    other = config_mod.validate({**cfg, "train": {**cfg["train"], "shuffle_buffer": 300}}, "changed")
    assert grid.hparams(other, run)["shuffle_buffer"] == 300
    assert shaping.train(cfg, run) != shaping.train(other, run)
    cd = cooldown_config(shuffle_buffer=200)
    cd["train"]["overrides"] = [{"samples_seen": CD_SAMPLES, "shuffle_buffer": 50}]
    cd = config_mod.validate(cd, "branch override")
    assert grid.hparams(cd, cd_run(cd, CD_SAMPLES))["shuffle_buffer"] == 200


# ---------------------------------------------------------------------------------------------
# 5. const-cooldown: one constant-LR trunk per (model, scale), the smaller cells branched from it
# ---------------------------------------------------------------------------------------------

# 320 and 960 samples, cooldown 1/4: branch points 240 and 720, cooldowns 80 and 240 -> one
# virtual epoch of 80 samples (3 batches of 32 = 96 drawn); trunk 12 epochs (checkpoints every 3,
# its cooldown the last 3), branch 4 epochs: the trunk's epoch 3, then 1 epoch of cooldown
CD_SAMPLES, CD_TRUNK = 320, 960
CD_STEPS = 3  # per virtual epoch


def cooldown_config(**train_settings) -> dict:
    cfg = tiny_config(samples=(CD_SAMPLES, CD_TRUNK), **train_settings)
    cfg["grid"]["schedules"] = ["const-cooldown"]
    cfg["train"]["cooldown"] = {"fraction": 0.25, "power": 1.0, "end_lr": 0.0}
    return config_mod.validate(cfg, "tiny const-cooldown config")


def cd_run(cfg: dict, samples: int) -> grid.Run:
    return grid.find_run(cfg, MODEL, SCALE, f"{samples}{grid.COOLDOWN_SUFFIX}")


def test_cooldown_branches_start_at_the_trunk_checkpoint_and_count_exactly():
    cfg = cooldown_config()
    trunk, branch = cd_run(cfg, CD_TRUNK), cd_run(cfg, CD_SAMPLES)
    assert grid.trunk_of(cfg, branch) == (trunk, 3) and grid.trunk_of(cfg, trunk) is None
    assert grid.branches_of(cfg, trunk) == {3: branch}
    ht, hb = grid.hparams(cfg, trunk), grid.hparams(cfg, branch)
    assert (ht["train_num_samples"], ht["epochs"], ht["cooldown_epochs"], ht["save_every"]) == (80, 12, 3, 3)
    assert (hb["train_num_samples"], hb["epochs"], hb["cooldown_epochs"], hb["branch_epoch"]) == (80, 4, 1, 3)
    # samples seen count the trunk's prefix; what the branch's own job trains is its cooldown
    assert hb["samples_seen_exact"] == 4 * CD_STEPS * BATCH and hb["samples_trained_exact"] == CD_STEPS * BATCH
    assert ht["samples_seen_exact"] == ht["samples_trained_exact"] == 12 * CD_STEPS * BATCH
    assert grid.study_samples(cfg) == {"const-cooldown": 13 * CD_STEPS * BATCH}
    cosine = tiny_config(samples=(CD_SAMPLES, CD_TRUNK))
    assert grid.study_samples(cosine) == {"cosine": sum(grid.hparams(cosine, r)["samples_seen_exact"]
                                                        for r in grid.runs(cosine))}
    # with train.branch_jobs (the schema's default) the trunk's job ends at the branch point, so
    # the branch can start from its checkpoint while the trunk goes on
    jobs = config_mod.validate({**cfg, "train": {**cfg["train"], "branch_jobs": True}}, "cfg")
    assert grid.segment_ends(jobs, trunk) == [3] and grid.segment_ends(jobs, branch) == []
    assert grid.segment_of(jobs, trunk, 3) == 3
    # without (the embedded default's): the trunk in one job, whose end the branch waits for
    one_job = config_mod.validate({**cfg, "train": {**cfg["train"], "branch_jobs": False}}, "cfg")
    assert grid.segment_ends(one_job, trunk) == [] and grid.segment_of(one_job, trunk, 3) is None
    # open_clip's own schedule: the branch's learning rate is the trunk's up to the branch point,
    # then falls linearly to 0 over its cooldown (the trunk's is still constant there)
    from open_clip_train.scheduler import const_lr_cooldown

    lrs = {}
    for run, hp in ((trunk, ht), (branch, hb)):
        a = parsed(train.open_clip_args(cfg, run, {"url": "x.tar"}, hp))
        assert a.lr_scheduler == "const-cooldown" and a.save_frequency == hp["save_every"]
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=a.lr)
        steps = a.epochs * CD_STEPS
        sched = const_lr_cooldown(opt, a.lr, a.warmup, steps, a.epochs_cooldown * CD_STEPS,
                                  a.lr_cooldown_power, a.lr_cooldown_end)
        lrs[run] = [sched(s) for s in range(steps)]
    start = 3 * CD_STEPS
    assert lrs[branch][:start] == lrs[trunk][:start]
    assert lrs[branch][start - 1] == lrs[trunk][start] == cfg["train"]["lr"]  # constant at the branch point
    assert lrs[branch][start:] == pytest.approx([cfg["train"]["lr"] * (1 - i / CD_STEPS) for i in range(CD_STEPS)])


def test_cooldown_config_without_a_common_epoch_is_rejected():
    from clipscale import checks  # every domain's checks (config.validate: the schema's)

    cfg = tiny_config(samples=(CD_SAMPLES, CD_TRUNK))
    cfg["grid"]["schedules"] = ["const-cooldown"]
    cfg["train"]["cooldown"] = {"fraction": 0.21}  # cooldowns 67 and 202: a common epoch of 1 sample
    with pytest.raises(config_mod.ConfigError, match=r"const-cooldown.*virtual epochs of 1 samples"):
        checks.validate(cfg, "cfg")


@pytest.fixture(scope="module")
def cooldown_family(request, pool_index, hooks_env, tmp_path_factory) -> dict:
    """The trunk's first job (to its branch point), then the branch, uninterrupted."""
    with scratch(request, tmp_path_factory, "cooldown") as folder:
        cfg = cooldown_config()
        manifest = subset_in(pool_index, folder)
        trunk, branch = cd_run(cfg, CD_TRUNK), cd_run(cfg, CD_SAMPLES)
        with inside(folder, hooks_env):
            train.launch(cfg, trunk, manifest, "segment.json", log_file="trunk.log", until=3)
            train.launch(cfg, branch, manifest, "branch.json", log_file="branch.log")
        yield {"cfg": cfg, "folder": folder, "trunk": trunk, "branch": branch,
               "record": json.loads((folder / "branch.json").read_text()),
               "final": load(ckpt_dir(folder, f"{CD_SAMPLES}-cooldown") / "epoch_4.pt")}


@pytest.mark.slow
def test_a_branch_trains_only_its_cooldown_from_the_trunk_checkpoint(cooldown_family):
    f = cooldown_family
    rec, folder = f["record"], f["folder"]
    start = ckpt_dir(folder, f"{CD_SAMPLES}-cooldown") / "epoch_3.pt"
    trunk_ckpt = ckpt_dir(folder, f"{CD_TRUNK}-cooldown") / "epoch_3.pt"
    assert os.path.samefile(start, trunk_ckpt)  # linked, not trained again
    assert rec["schedule"] == "const-cooldown" and rec["branched_from"]["epoch"] == 3
    assert rec["branched_from"]["run"] == f["trunk"].name
    (attempt,) = rec["attempts"]
    assert attempt["resumed_from"] == 3 and rec["steps_total"] == CD_STEPS
    assert rec["samples_seen_exact"] == 4 * CD_STEPS * BATCH
    assert rec["samples_trained_exact"] == CD_STEPS * BATCH
    assert rec["trained_gmac"] == pytest.approx(rec["gmac_per_sample"] * CD_STEPS * BATCH)
    assert optimizer_steps(f["final"]) == 4 * CD_STEPS  # the trunk's 9 steps, then its own 3
    # the trunk goes on from its own checkpoint, unchanged by the branch
    with inside(folder):
        trunk = train.launch(f["cfg"], f["trunk"], MANIFEST, "trunk.json", log_file="trunk.log")
    done = json.loads((folder / "trunk.json").read_text())
    assert done["attempts"][-1]["resumed_from"] == 3 and done["branched_from"] is None
    assert done["samples_seen_exact"] == done["samples_trained_exact"] == 12 * CD_STEPS * BATCH
    saved = sorted(int(p.stem.split("_")[1]) for p in ckpt_dir(folder, f"{CD_TRUNK}-cooldown").glob("epoch_*.pt"))
    assert saved == [3, 6, 9, 12] and trunk is None


@pytest.mark.slow
def test_a_branch_killed_in_its_cooldown_resumes_to_the_same_weights(cooldown_family, hooks_env, tmp_path):
    f = cooldown_family
    folder = tmp_path / "work"
    shutil.copytree(f["folder"], folder, symlinks=True)
    ckpts = ckpt_dir(folder, f"{CD_SAMPLES}-cooldown")
    for p in ckpts.glob("epoch_*.pt"):
        if p.name != "epoch_3.pt":
            p.unlink()
    (folder / "branch.json").unlink()
    branch = f["branch"]
    with inside(folder, {**hooks_env, "CLIPSCALE_TEST_KILL_AT_STEP": "2"}):
        with pytest.raises(train.TrainingError, match="exited with status -9"):
            train.launch(f["cfg"], branch, MANIFEST, "branch.json", log_file="branch.log")
    with inside(folder, hooks_env):
        train.launch(f["cfg"], branch, MANIFEST, "branch.json", log_file="branch.log")
    rec = json.loads((folder / "branch.json").read_text())
    killed, done = rec["attempts"][-2:]
    assert killed["ended"].startswith("killed") and killed["resumed_from"] == 3
    assert (done["ended"], done["resumed_from"]) == ("completed", 3)
    final = load(ckpts / "epoch_4.pt")
    assert optimizer_steps(final) == 4 * CD_STEPS
    assert same_weights(final["state_dict"], f["final"]["state_dict"])


@pytest.mark.slow
def test_a_branch_of_a_retrained_trunk_starts_afresh(cooldown_family, hooks_env, tmp_path):
    f = cooldown_family
    folder = tmp_path / "work"
    shutil.copytree(f["folder"], folder, symlinks=True)
    trunk_ckpt = ckpt_dir(folder, f"{CD_TRUNK}-cooldown") / "epoch_3.pt"
    data = trunk_ckpt.read_bytes()
    trunk_ckpt.unlink()
    trunk_ckpt.write_bytes(data)  # the trunk's checkpoint written again (another file)
    with inside(folder, hooks_env):
        train.launch(f["cfg"], f["branch"], MANIFEST, "branch.json", log_file="branch.log")
    run_folder = ckpt_dir(folder, f"{CD_SAMPLES}-cooldown").parents[1]
    (old,) = (run_folder / train.SUPERSEDED_NAME).iterdir()
    assert (old / train.OPENCLIP_NAME / "checkpoints" / "epoch_4.pt").exists()
    assert os.path.samefile(ckpt_dir(folder, f"{CD_SAMPLES}-cooldown") / "epoch_3.pt", trunk_ckpt)
    rec = json.loads((folder / "branch.json").read_text())
    assert rec["attempts"][-1]["resumed_from"] == 3 and rec["steps_total"] == CD_STEPS


# ---------------------------------------------------------------------------------------------
# gradient accumulation: the global batch kept on fewer processes
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def baseline_accum(request, pool_index, hooks_env, tmp_path_factory) -> dict:
    """The baseline's global batch as 2 accumulated batches of half its size (train.accum_freq 2)."""
    with scratch(request, tmp_path_factory, "baseline-accum") as folder:
        cfg = tiny_config(batch_size=BATCH // 2, accum_freq=2)
        record = launch(cfg, SAMPLES, subset_in(pool_index, folder), folder, hooks_env)
        yield {"cfg": cfg, "folder": folder, "record": record,
               "final": load(ckpt_dir(folder, SAMPLES) / f"epoch_{EPOCHS}.pt")}


def test_accumulated_batches_keep_the_global_batch_steps_and_samples_seen(baseline_accum, baseline):
    """accum_freq 2 x batch 16 trains the baseline's run of batch 32: the same global batch, steps
    (optimizer steps, one loss line each) and samples seen, and the same shaping params (a change
    of processes and accumulation that keeps the global batch reruns nothing)."""
    from clipscale import shaping

    rec, ref = baseline_accum["record"], baseline["record"]
    for key in ("global_batch_size", "steps_total", "samples_seen_exact", "epochs"):
        assert rec[key] == ref[key], key
    assert rec["accum_freq"] == 2 and rec["global_batch_size"] == BATCH
    assert optimizer_steps(baseline_accum["final"]) == EPOCHS * STEPS_PER_EPOCH
    assert sorted(losses(baseline_accum["folder"], SAMPLES)) == list(range(EPOCHS * STEPS_PER_EPOCH))
    run = run_of(baseline["cfg"], SAMPLES)
    assert shaping.train(baseline_accum["cfg"], run) == shaping.train(baseline["cfg"], run)
    assert shaping.train(tiny_config(batch_size=BATCH // 2), run) != shaping.train(baseline["cfg"], run)


def test_a_walltime_warning_with_accumulation_saves_the_place_and_resumes_exactly(baseline_accum, pool_index,
                                                                                 hooks_env, tmp_path):
    """With accumulated batches the place is saved at a step boundary (never between a step's
    batches) and the resumed run ends with the uninterrupted one's losses and weights, bit for bit."""
    folder = tmp_path / "accum-windows"
    folder.mkdir()
    manifest = subset_in(pool_index, folder)
    signal_at = 2 * (2 * STEPS_PER_EPOCH) + 1  # the 1st batch's backward pass of epoch 3's 1st step
    done = 2 * STEPS_PER_EPOCH + 1
    cfg = baseline_accum["cfg"]
    with pytest.raises(train.TrainingError, match=rf"walltime warning \(SIGUSR1\) after {done} steps, at epoch 2 "
                                                  rf"\+ 1 of 4 steps"):
        launch(cfg, SAMPLES, manifest, folder, {**hooks_env, "CLIPSCALE_TEST_SIGNAL_AT_STEP": str(signal_at)})
    run_folder = folder / "results" / "train" / MODEL / SCALE / str(SAMPLES)
    partial = load(run_folder / "partial.pt")
    assert (partial["epoch"], partial["step_in_epoch"], partial["global_step"]) == (2, 1, done)
    assert optimizer_steps(partial) == done
    rec = launch(cfg, SAMPLES, MANIFEST, folder, hooks_env)
    assert rec["steps_total"] == EPOCHS * STEPS_PER_EPOCH
    assert losses(folder, SAMPLES) == losses(baseline_accum["folder"], SAMPLES)
    final = load(ckpt_dir(folder, SAMPLES) / f"epoch_{EPOCHS}.pt")
    assert same_weights(final["state_dict"], baseline_accum["final"]["state_dict"])


def test_open_clips_adamw_steps_multi_tensor_with_the_same_parameters(monkeypatch):
    """open_clip's AdamW, as its main creates it (two groups, weight decay on the matrices only), on
    the embedded default's ViT-XS: with the multi-tensor steps the parameters after several steps
    are upstream's bit for bit; an explicit foreach is kept; torch.optim itself is untouched."""
    import open_clip
    import open_clip_train.main as oct_main
    import torch

    # as upstream has it (a training run earlier in this process installed the patch), put back after
    monkeypatch.setattr(oct_main, "optim", torch.optim)
    upstream = torch.optim.AdamW
    train.install_multi_tensor_adamw()
    train.install_multi_tensor_adamw()  # a second install wraps once
    patched = oct_main.optim.AdamW
    assert patched.__mro__[1] is upstream and torch.optim.AdamW is upstream
    assert oct_main.optim.SGD is torch.optim.SGD

    spec = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["models"]["vit-xs"]["open_clip"]
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**spec)
    params = [p.detach() for p in model.parameters()]
    grads = torch.Generator().manual_seed(1)
    steps = [[torch.randn(p.shape, generator=grads) * 1e-2 for p in params] for _ in range(4)]

    def stepped(optimizer_class, **kwargs):
        copies = [p.clone().requires_grad_() for p in params]
        groups = [{"params": [p for p in copies if p.ndim < 2], "weight_decay": 0.0},
                  {"params": [p for p in copies if p.ndim >= 2], "weight_decay": 0.2}]
        opt = optimizer_class(groups, lr=5e-3, betas=(0.9, 0.98), eps=1e-6, **kwargs)
        for grad in steps:
            for p, g in zip(copies, grad):
                p.grad = g.clone()
            opt.step()
        return opt, copies

    ours, after = stepped(patched)
    theirs, upstream_after = stepped(upstream)
    assert [g["foreach"] for g in ours.param_groups] == [True, True]
    assert all(torch.equal(a, b) for a, b in zip(after, upstream_after))
    assert not torch.equal(after[-1], params[-1])  # the steps moved the parameters
    assert stepped(patched, foreach=False)[0].param_groups[0]["foreach"] is False


def test_an_open_clip_without_its_optimizer_there_is_named(monkeypatch):
    import types

    import open_clip_train.main as oct_main

    monkeypatch.setattr(oct_main, "optim", types.SimpleNamespace())
    with pytest.raises(train.TrainingError, match="install_multi_tensor_adamw"):
        train.install_multi_tensor_adamw()
