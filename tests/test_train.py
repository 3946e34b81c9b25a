"""Training (issue "Train"): open_clip's command line, resume, divergence, distributed.

Runs go through the pipeline's own entry point ``clipscale.train.launch`` (a subprocess, like
the Snakemake rule) on a small world, inside a temporary directory (paths are relative:
results/train/...). The slow tests train a 2-layer ViT for 4 virtual epochs of 4 steps.

Bit-exact resume: open_clip's data order is not reproducible by itself (webdataset's sample
shuffle buffer is seeded from the clock, and a persistent data worker's augmentation RNG runs
on across epochs), so two uninterrupted runs already differ. The test processes get a
``sitecustomize`` (``HOOKS`` below, on PYTHONPATH) that seeds the shuffle and the worker's RNG at
the start of every epoch; with that, a run SIGKILLed in epoch 3 and resumed ends with the same
weights, bit for bit, as one never interrupted. The same hook kills the process at a chosen
step (CLIPSCALE_TEST_KILL_AT_STEP): a real SIGKILL, at a deterministic point.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import textwrap
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from clipscale import config as config_mod
from clipscale import grid, subsets, train

REPO = Path(__file__).resolve().parents[1]
MODEL, SCALE = "vit-xs", "s"
BATCH, EPOCHS = 32, 4

HOOKS = textwrap.dedent('''
    """Test-only hooks (tests/test_train.py), active when CLIPSCALE_TEST_HOOKS is set."""
    import os

    if os.environ.get("CLIPSCALE_TEST_HOOKS"):
        import random
        import signal

        import torch
        import webdataset
        from webdataset.filters import _shuffle

        def seeded_shuffle(bufsize=1000, initial=100, **kwargs):
            def stage(src):  # called in the data worker at the start of each epoch
                seed = torch.initial_seed()  # the worker's seed, from open_clip's --seed
                torch.manual_seed(seed)      # augmentation RNG restarts every epoch
                return _shuffle(src, bufsize, initial, rng=random.Random(seed))
            return stage

        webdataset.shuffle = seeded_shuffle  # open_clip_train.data calls wds.shuffle(...)

        kill_at = int(os.environ.get("CLIPSCALE_TEST_KILL_AT_STEP", "0"))
        if kill_at:
            import open_clip_train.train as oct_train

            original = oct_train.backward
            calls = [0]

            def backward(total_loss, scaler):
                calls[0] += 1
                if calls[0] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                return original(total_loss, scaler)

            oct_train.backward = backward
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
    cfg["train"].update(device="cpu", precision="fp32", batch_size=BATCH, checkpoints=EPOCHS,
                        warmup=2, workers=1, threads=1, nproc=1)
    cfg["train"].update(train_settings)
    return config_mod.validate(cfg, "tiny test config")


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


@pytest.fixture(scope="module")
def manifest(small_world, tmp_path_factory) -> Path:
    """A 600-sample subset of the small world (6 shards), as the pipeline's subset rule makes it."""
    out = tmp_path_factory.mktemp("subset")
    index = subsets.build_index(small_world / "pool")
    subsets.write_subset(index, SCALE, 600, 0, out)
    return out / "manifest.json"


@pytest.fixture(scope="module")
def hooks_env(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("hooks")
    (folder / "sitecustomize.py").write_text(HOOKS)
    path = os.pathsep.join([str(folder)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return {"PYTHONPATH": path, "CLIPSCALE_TEST_HOOKS": "1", "CLIPSCALE_TEST_KILL_AT_STEP": None}


def launch(cfg, samples, manifest, folder: Path, env=None) -> dict:
    """train.launch in `folder` (the rule's call); returns the record it wrote to run.json."""
    run = run_of(cfg, samples)
    with inside(folder, env):
        train.launch(cfg, run, manifest, "run.json", log_file="train.log")
    return json.loads((folder / "run.json").read_text())


def ckpt_dir(folder: Path, samples) -> Path:
    return folder / "results" / "train" / MODEL / SCALE / str(samples) / train.OPENCLIP_NAME / "checkpoints"


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


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
def baseline(manifest, hooks_env, tmp_path_factory) -> dict:
    """One uninterrupted run (deterministic data order), for the resume tests to compare with."""
    folder = tmp_path_factory.mktemp("baseline")
    cfg = tiny_config()
    record = launch(cfg, SAMPLES, manifest, folder, hooks_env)
    return {"cfg": cfg, "folder": folder, "record": record,
            "final": load(ckpt_dir(folder, SAMPLES) / f"epoch_{EPOCHS}.pt")}


@pytest.fixture(scope="module")
def killed(manifest, hooks_env, tmp_path_factory) -> Path:
    """The same run SIGKILLed at its 2nd step of epoch 3 (after epoch_2.pt was written)."""
    folder = tmp_path_factory.mktemp("killed")
    cfg = tiny_config()
    kill_at = 2 * STEPS_PER_EPOCH + 2
    with pytest.raises(train.TrainingError, match=r"exited with status -9.*resumes from the latest"):
        launch(cfg, SAMPLES, manifest, folder, {**hooks_env, "CLIPSCALE_TEST_KILL_AT_STEP": str(kill_at)})
    return folder


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
    assert a.report_to == ""


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
    cfg = tiny_config(samples=(100,), nproc=2)  # 25 samples per checkpoint < 2 x 32
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


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(baseline, killed, manifest, hooks_env, tmp_path):
    folder = resume_copy(killed, tmp_path)
    ckpts = ckpt_dir(folder, SAMPLES)
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch_1.pt", "epoch_2.pt"]
    assert not (folder / "run.json").exists()
    before = {p.name: p.read_bytes() for p in ckpts.iterdir()}

    rec = launch(baseline["cfg"], SAMPLES, manifest, folder, hooks_env)  # the workflow, re-run

    assert rec["steps_this_attempt"] == (EPOCHS - 2) * STEPS_PER_EPOCH  # epochs 3 and 4 only
    assert rec["samples_seen_exact"] == baseline["record"]["samples_seen_exact"]
    assert rec["final_checkpoint"] == baseline["record"]["final_checkpoint"]
    final = load(ckpts / f"epoch_{EPOCHS}.pt")
    assert optimizer_steps(final) == EPOCHS * STEPS_PER_EPOCH
    assert same_weights(final["state_dict"], baseline["final"]["state_dict"])
    assert {p: (ckpts / p).read_bytes() for p in before} == before  # epochs 1-2 not redone
    log = (ckpts.parent / "out.log").read_text()
    assert "resuming checkpoint" in log and "epoch_2.pt' (epoch 2)" in log


@pytest.mark.slow
def test_truncated_latest_checkpoint_is_moved_aside(baseline, killed, manifest, hooks_env, tmp_path):
    folder = resume_copy(killed, tmp_path)
    ckpts = ckpt_dir(folder, SAMPLES)
    latest = ckpts / "epoch_2.pt"
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 3])  # the job died while torch.save wrote it

    rec = launch(baseline["cfg"], SAMPLES, manifest, folder, hooks_env)

    assert (ckpts / "epoch_2.pt.corrupt").stat().st_size == len(data) // 3
    assert rec["steps_this_attempt"] == (EPOCHS - 1) * STEPS_PER_EPOCH  # resumed from epoch 1
    final = load(ckpts / f"epoch_{EPOCHS}.pt")
    assert optimizer_steps(final) == EPOCHS * STEPS_PER_EPOCH
    assert same_weights(final["state_dict"], baseline["final"]["state_dict"])
    assert "is unreadable" in (folder / "train.log").read_text()


def _fake_checkpoints(run, epochs):
    folder = train.checkpoint_dir(run)
    folder.mkdir(parents=True)
    for e in epochs:
        torch.save({"epoch": e, "state_dict": {"w": torch.full((64,), float(e))}}, folder / f"epoch_{e}.pt")
    return folder


def test_drop_corrupt_latest_keeps_the_newest_readable(in_tmp):
    run = grid.Run(MODEL, SCALE, SAMPLES)
    folder = _fake_checkpoints(run, [1, 2, 9, 10])
    for e in (9, 10):  # two unreadable: a truncated one and an empty one
        p = folder / f"epoch_{e}.pt"
        p.write_bytes(p.read_bytes()[:50] if e == 10 else b"")
    assert list(train.checkpoints(run)) == [1, 2, 9, 10]  # numeric order, not 1, 10, 2, 9
    train.drop_corrupt_latest(run)
    assert list(train.checkpoints(run)) == [1, 2]
    assert sorted(p.name for p in folder.glob("*.corrupt")) == ["epoch_10.pt.corrupt", "epoch_9.pt.corrupt"]
    train.drop_corrupt_latest(run)  # nothing more to do: readable files are never moved
    assert list(train.checkpoints(run)) == [1, 2]


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
    m = json.loads(manifest.read_text())
    shard = Path(m["shards"][1]["file"])
    local = Path("subset")
    shutil.copytree(manifest.parent, local, symlinks=True)
    m["url"] = str((local / "shards").absolute() / "{000000..000005}.tar")
    (local / "manifest.json").write_text(json.dumps(m))
    (local / "shards" / "000003.tar").unlink()
    cfg = tiny_config()
    with pytest.raises(train.TrainingError, match=r"1 shard\(s\) missing or empty, e.g. .*000003.tar"):
        train.train(cfg, run_of(cfg, SAMPLES), local / "manifest.json")
    assert shard.exists()  # the test did not touch the shared subset


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
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]

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
