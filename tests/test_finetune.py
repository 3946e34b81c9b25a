"""The paper's fourth protocol (clipscale.finetune): timm's recipe parts on open_clip's vision
transformer (layer-decay groups, stochastic depth, EMA), patching's interpolation and its choice
of a, and the jobs for real on a tiny checkpoint and the small world: ImageNet-style fine-tuning,
joint fine-tuning with patching (its a = 0 is clip_benchmark's zero-shot accuracy), a job killed
and resumed, a corrupt training image counted, the rows in the results table."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from clipscale import checks
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
    cfg["downstream"]["shapes"]["group"] = "main"  # the main set (the bottleneck figures')
    cfg["evaluate"] = {"device": "cpu", "batch_size": 64}
    cfg["finetune"] = {"enabled": True, "device": "cpu", "protocols": list(plan.PROTOCOLS),
                       "patching": {"tasks": ["colours", "digits"], "control": "shapes", "alphas": 6},
                       # classification_in12k's intermediate step: digits stands in for ImageNet-12k
                       "intermediate": {"dataset": "digits", "recipe": {"epochs": 1, "warmup_epochs": 0.5}},
                       "classification": {"high_res": {"vit-xs": 48}},  # the ..._hires protocols: 48 px
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
        checks.validate(bad)
    msg = str(e.value)
    assert "finetune.models.vit-xs: ['learning_rate'] are not recipe keys" in msg
    assert "finetune.models: 'vit-zz' is not defined" in msg
    assert "finetune.patching.recipe.layer_decay" in msg
    assert "the control 'shapes' is also a joint task" in msg
    assert "finetune.patching: 'letters' is not under downstream and the world makes no set of that name" in msg
    none = copy.deepcopy(cfg)
    none["finetune"]["runs"] = {"scales": ["12k"]}  # not in the grid (changed since)
    with pytest.raises(config_mod.ConfigError, match="finetune.runs.scales: '12k' is not in grid.scales"):
        checks.validate(none)


def test_a_batch_smaller_than_the_processes_and_a_bad_micro_batch_are_refused(small_world):
    cfg = _config(small_world)
    bad = copy.deepcopy(cfg)
    bad["finetune"].update(nproc=4, nodes=5)  # 20 processes for batches of 16
    bad["finetune"]["models"] = {"vit-xs": {"micro_batch_size": 0}}
    bad["finetune"]["patching"]["recipe"] = {"micro_batch_size": 4}
    with pytest.raises(config_mod.ConfigError) as e:
        checks.validate(bad)
    msg = str(e.value)
    assert ("finetune.recipe.batch_size: 16 for vit-xs (classification, with its overrides) is smaller than "
            "the job's 20 processes (finetune.nproc x finetune.nodes)") in msg
    assert "finetune.models.vit-xs.micro_batch_size: 0 is not a positive integer" in msg
    assert "finetune.patching.recipe: ['micro_batch_size'] are not recipe keys" in msg
    ok = copy.deepcopy(cfg)
    ok["finetune"]["models"] = {"vit-xs": {"micro_batch_size": 4, "lr": 0.002}}
    ok = config_mod.validate(ok)
    assert plan.micro_batch_size(ok, "vit-xs") == 4 and plan.micro_batch_size(ok, "vit-s") is None
    assert "micro_batch_size" not in plan.recipe_settings(ok, "classification", "vit-xs")  # not the recipe


def test_a_fine_tuning_job_is_shaped_per_node_like_training():
    """resources.finetune: --nodes, --ntasks-per-node, --gres=gpu:G per node, CPUs per task, as
    training's job; config/paper.yaml's jobs: 2 nodes x 4 GPUs, Table 10's batch of 2,048 in
    micro-batches that fit an 80 GB GPU."""
    from clipscale import resources

    paper = config_mod.load(REPO / "config" / "paper.yaml")
    job = resources.finetune(paper)
    assert (job["nodes"], job["tasks_per_node"], job["gres"], job["cpus_per_task"], job["mpi"]) == (
        2, 4, "gpu:4", 8, "srun")
    assert job["tasks_per_gpu"] == 0 and "gpu" not in job and "tasks" not in job
    world = plan.world_size(paper)
    steps = {m: math.ceil(plan.recipe_settings(paper, "classification", m)["batch_size"] / world
                          / plan.micro_batch_size(paper, m)) for m in ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-H-14")}
    assert steps == {"ViT-B-32": 1, "ViT-B-16": 1, "ViT-L-14": 2, "ViT-H-14": 4}
    one = resources.finetune(yaml.safe_load((REPO / "config" / "config.yaml").read_text()) | {
        "finetune": config_mod.section({}, "finetune")})  # the embedded default: one process, no GPU
    assert (one["nodes"], one["tasks"], one["mpi"]) == (1, 1, "") and "gres" not in one


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
    recipe = rc.Recipe.of(plan.recipe_settings(setup[1], "classification", "vit-xs"))
    assert res["steps"] == recipe.steps(24)
    assert res["ema_decay"] == {"first": 0.9, "last": 0.9}  # the stated decay from the first step
    assert res["row"]["model"] == "ViT-XS" and res["row"]["samples_seen"] == 2000
    assert res["skipped"]["train"] == 0 and res["skipped"]["test"] == 0


def test_classification_after_an_intermediate_step(results, setup, in_root):
    """classification_in12k: the intermediate set (digits standing in for ImageNet-12k) with its
    recipe first, its own saved place, then the classification recipe from its weights; rows of
    metric imagenet_ft_acc1_in12k (the published Table 9's name). The second step starts from
    the first's weights, not the checkpoint's."""
    from clipscale.finetune import job

    res = results["classification_in12k"]
    rows = {(r["dataset"], r["metric"]) for r in res["rows"]}
    assert rows == {("shapes", "imagenet_ft_acc1_in12k"), ("shapes_shifted", "imagenet_ft_acc1_in12k")}
    step = res["intermediate"]
    n_digits = job.TaskData("digits", Path(setup[1]["downstream"]["digits"]["path"])).count("train")
    inter = rc.Recipe.of(plan.intermediate_settings(setup[1], "vit-xs"))
    assert (step["dataset"], step["steps"], step["train_samples"]) == ("digits", inter.steps(n_digits), n_digits)
    assert res["steps"] == results["classification"]["steps"]
    out = Path(plan.result_path(plan.runs(setup[1])[0], "classification_in12k"))
    first = torch.load(out.parent / "state_intermediate.pt", weights_only=True)
    assert first["done"] and first["step"] == step["steps"]
    # stage two's first step began from the intermediate EMA: its saved first loss differs from
    # classification's, which began from the checkpoint (same data, same seed)
    second = torch.load(out.parent / "state.pt", weights_only=True)
    plain = torch.load(Path(plan.result_path(plan.runs(setup[1])[0], "classification")).parent / "state.pt",
                       weights_only=True)
    assert second["losses"][0] != pytest.approx(plain["losses"][0], abs=1e-6)


def test_patching_at_0_is_clip_benchmarks_zero_shot_and_the_sweep_is_recorded(results, in_root):
    """a is chosen on the validation splits (10% of each training split: the joint fine-tuning
    trains on the rest), the rows are the test splits' at a = 0, the chosen a and 1."""
    from clipscale import evaluate as E
    from clipscale.finetune import job

    root, cfg = in_root
    res = results["patching"]
    assert [p["alpha"] for p in res["sweep"]] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    chosen = next(p for p in res["sweep"] if p["alpha"] == res["alpha"])
    assert chosen["control"] >= res["sweep"][0]["control"] - 1.0
    assert all(p["tasks_mean"] <= chosen["tasks_mean"] for p in res["sweep"]
               if p["control"] >= res["sweep"][0]["control"] - 1.0)
    assert res["alpha_chosen_on"] == "validation"
    sizes = {d: len(job.TaskData(d, Path(cfg["downstream"][d]["path"])).members("train"))
             for d in ("colours", "digits", "shapes")}
    assert res["validation_samples"] == {d: int(0.1 * n) for d, n in sizes.items()}
    assert res["train_samples"] == sum(n - int(0.1 * n) for d, n in sizes.items() if d != "shapes")
    test = {p["alpha"]: p["accuracy"] for p in res["test_accuracy"]}
    assert set(test) == {0.0, res["alpha"], 1.0}
    rows = {(r["task"], r["dataset"], r["metric"]): r["value"] for r in res["rows"]}
    for d in ("colours", "digits", "shapes"):
        assert {("patching", d, "zeroshot_acc1"), ("finetune", d, "ft_acc1"), ("patching", d, "patched_acc1")} <= set(rows)
        assert (rows[("patching", d, "zeroshot_acc1")], rows[("finetune", d, "ft_acc1")],
                rows[("patching", d, "patched_acc1")]) == (test[0.0][d], test[1.0][d], test[res["alpha"]][d])
    # the fixed heads are clip_benchmark's zero-shot classifiers: at a = 0 the same accuracy
    ev = copy.deepcopy(cfg)
    ev["downstream"] = {d: {**cfg["downstream"][d], "tasks": ["zeroshot_classification"]} for d in ("colours", "shapes")}
    bench = E.evaluate_checkpoint(ev, {"source": "ours", "model": "vit-xs", "scale": "3k", "samples": "2k",
                                       "epoch": "2"}, outputs={(d, "zeroshot_classification"): str(root / f"zs_{d}.json")
                                                               for d in ("colours", "shapes")})
    for d in ("colours", "shapes"):
        assert rows[("patching", d, "zeroshot_acc1")] == pytest.approx(
            bench[(d, "zeroshot_classification")]["metrics"]["acc1"], abs=1e-3), d


def test_fine_tuning_makes_its_own_table_and_its_log_lists_a_failed_job(results, in_root, tmp_path):
    """The fine-tuning table (the results table's columns) of the jobs' result files; a failed
    job (its result records why) and a missing one are lines of its log, as a failed evaluation
    is in the results log."""
    from clipscale.finetune import results as ft_results

    root, cfg = in_root
    failed = tmp_path / "vit-s" / "3k" / "2k" / "patching" / "result.json"
    ft_results.write_failure(failed, "vit-s", "3k", "2k", "patching", "FinetuneError: no decodable test image")
    files = [plan.result_path(plan.runs(cfg)[0], p) for p in plan.PROTOCOLS] + [
        str(failed), str(tmp_path / "vit-m" / "3k" / "2k" / "classification" / "result.json")]
    df = ft_results.aggregate(cfg, files, tmp_path / "ft.parquet", tmp_path / "ft.csv", tmp_path / "ft_log.txt")
    assert set(df["task"]) == {"finetune", "patching"}
    assert set(df[df["task"] == "finetune"]["metric"]) == {
        "imagenet_ft_acc1", "imagenet_ft_acc1_in12k", "imagenet_ft_acc1_48px", "imagenet_ft_acc1_48px_in12k", "ft_acc1"}
    assert (df["error"] == 1 - df["value"] / 100).all() and (df["source"] == "ours").all()
    log_text = (tmp_path / "ft_log.txt").read_text()
    assert "# fine-tuning jobs expected: 7; ok: 5, failed: 1, missing: 1, unreadable: 0" in log_text
    assert ("FAILED     fine-tuning vit-s/3k/2k patching: FinetuneError: no decodable test image"
            in log_text)
    assert "MISSING    fine-tuning vit-m/3k/2k classification" in log_text
    assert len(pd.read_csv(tmp_path / "ft.csv")) == len(df)


def test_classification_at_a_larger_image_size(results, setup, in_root):
    """The ..._hires protocols: vit-xs (32 px, patches of 8: 16 + 1 positions) fine-tuned at
    finetune.classification.high_res's 48 px (36 + 1 positions, interpolated from the
    checkpoint's); the intermediate step of classification_in12k_hires at the checkpoint's 32 px;
    metrics imagenet_ft_acc1_48px[_in12k], the published Table 9's names."""
    for protocol, metric in (("classification_hires", "imagenet_ft_acc1_48px"),
                             ("classification_in12k_hires", "imagenet_ft_acc1_48px_in12k")):
        res = results[protocol]
        assert {(r["dataset"], r["metric"]) for r in res["rows"]} == {("shapes", metric), ("shapes_shifted", metric)}
        assert res["image_size"] == 48 and all(0 <= r["value"] <= 100 for r in res["rows"])
        out = Path(plan.result_path(plan.runs(setup[1])[0], protocol))
        state = torch.load(out.parent / "state.pt", weights_only=True)
        assert state["model"]["visual.positional_embedding"].shape[0] == 37, protocol
    first = torch.load(Path(plan.result_path(plan.runs(setup[1])[0], "classification_in12k_hires")).parent
                       / "state_intermediate.pt", weights_only=True)
    assert first["model"]["visual.positional_embedding"].shape[0] == 17
    assert results["classification_in12k_hires"]["intermediate"]["steps"] == results["classification_in12k"][
        "intermediate"]["steps"]


def test_a_failing_job_writes_its_reason_as_its_result(in_root, tmp_path):
    """A job that cannot fine-tune (here: a robustness set with other classes) ends normally with
    a failed result, so that the fine-tuning table lists it and nothing waits on it."""
    from clipscale.finetune import run_job

    root, cfg = in_root
    cfg["finetune"]["classification"]["robustness"] = ["colours"]
    out = tmp_path / "failing" / "result.json"
    res = run_job(cfg, "vit-xs", "3k", "2k", "classification", out, threads=1)
    assert res["status"] == "failed" and "robustness set colours has other classes than shapes" in res["error"]
    assert json.loads(out.read_text())["error"] == res["error"]


def _state(out: Path) -> dict:
    return torch.load(out.parent / "state.pt", weights_only=True)


def test_two_processes_and_accumulation_are_the_same_optimisation_as_one_batch(in_root, tmp_path):
    """One batch of 8 in one process; in micro-batches of at most 3 (2 + 3 + 3, gradients
    accumulated); over 2 processes started as the rule starts them (torchrun, gloo on CPU), each
    in micro-batches of 2: the same losses, weights and accuracies up to floating point, with
    RandAugment, random erasing and crops on (each sample's augmentation has its own random
    state) and stochastic depth off (it draws per process)."""
    from clipscale.finetune import run_job

    root, cfg = in_root
    cfg["finetune"]["recipe"].update(batch_size=8, epochs=2, drop_path=0.0)  # 24 samples: 6 steps
    outs = {}
    for name, over in (("one", {}), ("micro", {"micro_batch_size": 3}), ("two", {"nproc": 2, "micro_batch_size": 2})):
        c = copy.deepcopy(cfg)
        c["finetune"].update(over)
        outs[name] = tmp_path / name / "result.json"
        res = run_job(config_mod.validate(c), "vit-xs", "3k", "2k", "classification", outs[name], threads=1,
                      log_file=tmp_path / f"{name}.log")
        assert res["status"] == "ok", (res.get("error"), (tmp_path / f"{name}.log").read_text()[-3000:]
                                       if (tmp_path / f"{name}.log").exists() else "")
        assert res["processes"] == (2 if name == "two" else 1) and res["steps"] == 6
    ref = _state(outs["one"])
    for name in ("micro", "two"):
        state = _state(outs[name])
        assert state["losses"] == pytest.approx(ref["losses"], abs=2e-4), name
        for which in ("model", "ema"):
            for key, value in ref[which].items():
                got = state[which][key]
                if key.endswith("attn.in_proj_bias"):
                    # the key bias: its gradient is zero (softmax ignores a shift), and AdamW turns
                    # its rounding noise into steps of the learning rate; the others: 1e-6 apart
                    third = len(value) // 3
                    got, value = torch.cat([got[:third], got[2 * third:]]), torch.cat([value[:third], value[2 * third:]])
                assert torch.allclose(got, value, atol=1e-6, rtol=1e-4), (name, which, key, (got - value).abs().max())
        rows, ref_rows = (json.loads(outs[n].read_text())["rows"] for n in (name, "one"))
        assert [r["value"] for r in rows] == pytest.approx([r["value"] for r in ref_rows]), name
    assert max(ref["losses"]) - min(ref["losses"]) > 1e-3  # it trained


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
    assert res["skipped"]["train"] + res["skipped"]["validation"] >= 1  # (wherever the split put it)
    assert any("zz_broken" in e or "Error" in e for e in res["skipped"]["examples"])
