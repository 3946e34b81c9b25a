"""The paper's fourth protocol (clipscale.finetune): timm's recipe parts on open_clip's vision
transformer (layer-decay groups, stochastic depth, EMA), patching's interpolation and its choice
of a, and the jobs for real on a tiny checkpoint and the small world: ImageNet-style fine-tuning,
joint fine-tuning with patching (its a = 0 is clip_benchmark's zero-shot accuracy), a job killed
and resumed, a corrupt training image counted, the rows in the results table."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
import yaml

from clipscale import config as config_mod
from clipscale import paths
from clipscale.finetune import plan
from clipscale.finetune import recipe as rc

REPO = Path(__file__).resolve().parents[1]
SETS = ("shapes", "shapes_shifted", "colours", "digits")


def _config(world: Path) -> dict:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["grid"] = {"models": ["vit-xs"], "scales": ["3k"], "samples_seen": ["2k"]}
    cfg["fit"].pop("comparisons")  # config.yaml's compare its const-cooldown runs: this grid is cosine
    cfg["train"]["checkpoints"] = 2
    cfg["downstream"] = {name: {"path": str(world / "downstream" / name), "tasks": ["zeroshot_classification"]}
                         for name in SETS}
    cfg["evaluate"] = {"device": "cpu", "batch_size": 64}
    cfg["finetune"] = {"enabled": True, "device": "cpu",
                       "patching": {"tasks": ["colours", "digits"], "control": "shapes", "alphas": 6},
                       "recipe": {"batch_size": 16, "epochs": 2, "warmup_epochs": 0.5, "ema": 0.9, "hflip": 0.0,
                                  "crop_scale": [0.8, 1.0], "rand_augment": "rand-m3-n1-mstd101-inc1",
                                  "random_erase": 0.1}}
    return config_mod.validate(cfg)


@pytest.fixture(scope="module")
def setup(small_world, tmp_path_factory):
    """A working directory with one of our runs (vit-xs/3k/2k: a randomly initialised model saved
    as its final checkpoint, with its run.json) and the config that fine-tunes it."""
    import open_clip

    from clipscale import models

    root = tmp_path_factory.mktemp("finetune")
    cfg = _config(small_world)
    models.register(cfg)
    run_dir = Path(paths.fill(paths.RUN_DIR, model="vit-xs", scale="3k", samples="2k"))
    ckpt = run_dir / "openclip" / "checkpoints" / "epoch_2.pt"
    (root / ckpt).parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save({"epoch": 2, "name": "test", "state_dict": open_clip.create_model("vit-xs").state_dict()}, root / ckpt)
    record = {"model": "vit-xs", "scale": "3k", "samples_seen": 2000, "samples_seen_exact": 2000,
              "samples_seen_label": "2k", "data_samples": 3000, "epochs": 2, "train_num_samples": 1000,
              "final_checkpoint": str(ckpt), "checkpoints": {"2": str(ckpt)}, "gmac_per_sample": 0.001,
              "total_gmac": 2.0}
    (root / run_dir / "run.json").write_text(json.dumps(record))
    return root, cfg


@pytest.fixture
def in_root(setup, monkeypatch):
    root, cfg = setup
    monkeypatch.chdir(root)
    return root, copy.deepcopy(cfg)


def _tiny_classifier(n_classes: int = 3):
    import open_clip

    from clipscale import models

    models.register(_config(Path("/nonexistent")))
    clip = open_clip.create_model("vit-xs")
    heads = {"a": torch.randn(clip.visual.output_dim, n_classes)}
    return rc.Classifier(clip.visual, heads, 100.0)


def _recipe(**over) -> rc.Recipe:
    settings = config_mod.section({}, "finetune")["recipe"]
    settings.update(over)
    return rc.Recipe.of(settings)


# --- the recipe's parts -------------------------------------------------------------------------


def test_layer_decay_gives_each_block_its_learning_rate_scale():
    """timm's layer-decay groups with our group matcher: the stem (patch embedding, class and
    position embeddings, ln_pre) is layer 0, block i layer i + 1, the final norm and projection
    with the last block (timm groups its ViT's final norm so), the heads the top layer (scale 1);
    scales decay**(top - layer); no weight decay on 1-d parameters and the embeddings; timm's
    scheduler sets each group's lr to its value times the scale."""
    model = _tiny_classifier()
    decay = 0.5
    recipe = _recipe(layer_decay=decay, lr=0.01, weight_decay=0.05, epochs=10, warmup_epochs=0, batch_size=10)
    opt = rc.optimizer(model, recipe)
    scale_of, wd_of = {}, {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            scale_of[names[id(p)]] = group["lr_scale"]
            wd_of[names[id(p)]] = group["weight_decay"]
    n_blocks = len(model.visual.transformer.resblocks)  # 2
    top = n_blocks + 1
    assert scale_of["visual.conv1.weight"] == pytest.approx(decay ** top)
    assert scale_of["visual.class_embedding"] == pytest.approx(decay ** top)
    for i in range(n_blocks):
        assert scale_of[f"visual.transformer.resblocks.{i}.mlp.c_fc.weight"] == pytest.approx(decay ** (top - i - 1))
    for name in ("visual.ln_post.weight", "visual.proj"):
        assert scale_of[name] == pytest.approx(decay), name
    assert scale_of["heads.a"] == 1.0
    assert wd_of["visual.transformer.resblocks.0.mlp.c_fc.weight"] == 0.05
    for name in ("visual.class_embedding", "visual.positional_embedding", "visual.ln_post.bias",
                 "visual.transformer.resblocks.0.ln_1.weight"):
        assert wd_of[name] == 0.0, name
    sched = rc.scheduler(opt, recipe, n_train=100)  # 100 steps, cosine
    sched.step_update(num_updates=50)
    for group in opt.param_groups:
        assert group["lr"] == pytest.approx(0.01 * 0.5 * group["lr_scale"], rel=1e-6)


def test_stochastic_depth_keeps_the_state_dict_and_acts_only_in_training():
    model = _tiny_classifier()
    keys = list(model.state_dict())
    rates = rc.add_stochastic_depth(model.visual, 0.5)
    assert rates == [0.0, 0.5] and list(model.state_dict()) == keys
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        a, b = model(x, "a"), model(x, "a")
    assert torch.equal(a, b)
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        outs = [model(x, "a") for _ in range(8)]
    assert any(not torch.allclose(outs[0], o) for o in outs[1:]), "drop path never dropped a branch"
    ema = copy.deepcopy(model).eval()  # an EMA copy: its own paths, off in eval whatever the model does
    with torch.no_grad():
        assert torch.equal(ema(x, "a"), ema(x, "a"))


def test_interpolation_gives_the_two_models_exactly_at_0_and_1():
    torch.manual_seed(0)
    zs = {"w": torch.randn(5, 3), "b": torch.randn(3), "n": torch.tensor(7)}
    ft = {"w": torch.randn(5, 3), "b": torch.randn(3), "n": torch.tensor(9)}
    assert all(torch.equal(rc.interpolate(zs, ft, 0)[k], zs[k]) for k in zs)
    assert all(torch.equal(rc.interpolate(zs, ft, 1)[k], ft[k]) for k in zs)
    half = rc.interpolate(zs, ft, 0.5)
    assert torch.allclose(half["w"], (zs["w"] + ft["w"]) / 2)
    with pytest.raises(ValueError, match="differ in keys"):
        rc.interpolate(zs, {"w": ft["w"]}, 0.5)


def test_the_chosen_alpha_keeps_the_control_within_its_tolerance():
    sweep = [{"alpha": a, "tasks_mean": 50 + 40 * a, "control": 70 - 10 * a} for a in (0, 0.1, 0.2, 0.5, 1.0)]
    assert rc.choose_alpha(sweep, tolerance=1.0)["alpha"] == 0.1  # 0.2 costs 2 points of control
    assert rc.choose_alpha(sweep, tolerance=5.0)["alpha"] == 0.5
    assert rc.choose_alpha(sweep, tolerance=100)["alpha"] == 1.0
    flat = [{"alpha": a, "tasks_mean": 50, "control": 70} for a in (0, 0.5, 1.0)]
    assert rc.choose_alpha(flat, 1.0)["alpha"] == 0  # ties: the model closest to zero-shot


def test_config_problems_are_named_before_any_job(small_world):
    cfg = _config(small_world)
    bad = copy.deepcopy(cfg)
    bad["finetune"]["models"] = {"vit-xs": {"learning_rate": 1e-3}, "vit-zz": {"lr": 1e-3}}
    bad["finetune"]["patching"]["recipe"] = {"layer_decay": 2}
    bad["finetune"]["patching"]["tasks"] = ["colours", "shapes", "letters"]
    with pytest.raises(config_mod.ConfigError) as e:
        config_mod.validate(bad)
    msg = str(e.value)
    assert "finetune.models.vit-xs: ['learning_rate'] are not recipe keys" in msg
    assert "finetune.models: 'vit-zz' is not defined" in msg
    assert "finetune.patching.recipe.layer_decay" in msg
    assert "the control 'shapes' is also a joint task" in msg
    assert "finetune.patching: 'letters' is not under downstream and the world makes no set of that name" in msg
    none = copy.deepcopy(cfg)
    none["finetune"]["runs"] = {"scales": ["12k"]}  # not in the grid (changed since): a warning
    assert plan.target_paths(config_mod.validate(none)) == []


# --- the jobs, for real -------------------------------------------------------------------------


def _run(cfg, protocol, out, **kw):
    from clipscale.finetune import finetune_checkpoint

    return finetune_checkpoint(cfg, "vit-xs", "3k", "2k", protocol, out, device="cpu", threads=1, **kw)


@pytest.fixture(scope="module")
def results(setup):
    """Both protocols run once on the tiny checkpoint: {protocol: result}."""
    root, cfg = setup
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        return {p: _run(cfg, p, plan.result_path(plan.runs(cfg)[0], p)) for p in plan.PROTOCOLS}


def test_classification_fine_tunes_and_evaluates_the_main_set_and_its_robustness_set(results, setup):
    res = results["classification"]
    rows = {(r["task"], r["dataset"], r["metric"]): r["value"] for r in res["rows"]}
    assert set(rows) == {("finetune", "shapes", "imagenet_ft_acc1"), ("finetune", "shapes_shifted", "imagenet_ft_acc1")}
    assert all(0 <= v <= 100 for v in rows.values())
    assert res["steps"] == rc.Recipe.of(plan.recipe_settings(setup[1], "classification", "vit-xs")).steps(24)
    assert res["row"]["model"] == "ViT-XS" and res["row"]["samples_seen"] == 2000
    assert res["skipped"]["train"] == 0 and res["skipped"]["test"] == 0


def test_patching_at_0_is_clip_benchmarks_zero_shot_and_the_sweep_is_recorded(results, in_root):
    from clipscale import evaluate as E

    root, cfg = in_root
    res = results["patching"]
    assert [p["alpha"] for p in res["sweep"]] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    chosen = next(p for p in res["sweep"] if p["alpha"] == res["alpha"])
    assert chosen["control"] >= res["sweep"][0]["control"] - 1.0
    assert all(p["tasks_mean"] <= chosen["tasks_mean"] for p in res["sweep"]
               if p["control"] >= res["sweep"][0]["control"] - 1.0)
    rows = {(r["task"], r["dataset"], r["metric"]): r["value"] for r in res["rows"]}
    for d in ("colours", "digits", "shapes"):
        assert {("patching", d, "zeroshot_acc1"), ("finetune", d, "ft_acc1"), ("patching", d, "patched_acc1")} <= set(rows)
    # the fixed heads are clip_benchmark's zero-shot classifiers: at a = 0 the same accuracy
    ev = copy.deepcopy(cfg)
    ev["downstream"] = {d: {**cfg["downstream"][d], "tasks": ["zeroshot_classification"]} for d in ("colours", "shapes")}
    bench = E.evaluate_checkpoint(ev, {"source": "ours", "model": "vit-xs", "scale": "3k", "samples": "2k",
                                       "epoch": "2"}, outputs={(d, "zeroshot_classification"): str(root / f"zs_{d}.json")
                                                               for d in ("colours", "shapes")})
    for d in ("colours", "shapes"):
        assert rows[("patching", d, "zeroshot_acc1")] == pytest.approx(
            bench[(d, "zeroshot_classification")]["metrics"]["acc1"], abs=1e-3), d


def test_fine_tuning_rows_join_the_results_table(results, in_root, tmp_path):
    from clipscale.evaluate.aggregate import build_table

    root, cfg = in_root
    files = [plan.result_path(plan.runs(cfg)[0], p) for p in plan.PROTOCOLS] + [str(tmp_path / "missing.json")]
    df, lines, _ = build_table(cfg, [], files)
    assert set(df["task"]) == {"finetune", "patching"}
    assert set(df[df["task"] == "finetune"]["metric"]) == {"imagenet_ft_acc1", "ft_acc1"}
    assert (df["error"] == 1 - df["value"] / 100).all() and (df["source"] == "ours").all()
    assert any(line.startswith("MISSING") and "missing.json" in line for line in lines)


def test_a_rerun_resumes_the_finished_training_and_other_settings_start_afresh(results, in_root, tmp_path):
    root, cfg = in_root
    out = plan.result_path(plan.runs(cfg)[0], "classification")
    again = _run(cfg, "classification", out)
    assert again["resumed_from_step"] == again["steps"]  # nothing trained again
    assert again["rows"] == results["classification"]["rows"]
    other = copy.deepcopy(cfg)
    other["finetune"]["recipe"]["lr"] = 0.0005
    fresh = _run(other, "classification", tmp_path / "other" / "result.json")
    assert fresh["resumed_from_step"] is None


def test_a_killed_job_resumes_from_its_saved_place(in_root, tmp_path):
    root, cfg = in_root
    cfg["finetune"]["recipe"].update(epochs=120, batch_size=8)  # 360 steps
    cfg["finetune"]["save_minutes"] = 0.0001  # its place after (nearly) every step
    out = tmp_path / "killed" / "result.json"
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    code = ("import json, sys; from clipscale import models; from clipscale.finetune import finetune_checkpoint; "
            f"cfg = json.load(open({str(cfg_path)!r})); models.register(cfg); "
            f"finetune_checkpoint(cfg, 'vit-xs', '3k', '2k', 'classification', {str(out)!r}, device='cpu', threads=1)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state, step, deadline = out.parent / "state.pt", 0, time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if state.exists():
                try:
                    step = torch.load(state, weights_only=True)["step"]
                except Exception:  # noqa: BLE001 - replaced while we read it
                    step = 0
                if step >= 20:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, f"the job ended before it was killed: {proc.stderr.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not out.exists()
    res = _run(cfg, "classification", out)
    assert 20 <= res["resumed_from_step"] < res["steps"] == 360
    assert json.loads(out.read_text())["resumed_from_step"] == res["resumed_from_step"]


def test_a_corrupt_training_image_is_counted_and_reported(in_root, tmp_path):
    import shutil

    root, cfg = in_root
    broken = tmp_path / "colours"
    shutil.copytree(cfg["downstream"]["colours"]["path"], broken)
    shard = sorted((broken / "train").glob("*.tar"))[0]
    with tarfile.open(shard, "a") as tar:
        for suffix, data in (("jpg", b"not a jpeg at all"), ("cls", b"0")):
            info = tarfile.TarInfo(f"zz_broken.{suffix}")
            info.size = len(data)
            import io

            tar.addfile(info, io.BytesIO(data))
    cfg["downstream"]["colours"]["path"] = str(broken)
    res = _run(cfg, "patching", tmp_path / "out" / "result.json")
    assert res["skipped"]["train"] >= 1
    assert any("zz_broken" in e or "Error" in e for e in res["skipped"]["examples"])
