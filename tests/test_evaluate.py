"""Evaluation with clip_benchmark's own code on tiny checkpoints, and the results table.

A session fixture saves a randomly initialised vit-xs as one of our runs (two epochs, with its
run.json) and as a released checkpoint, and evaluates them for real on the small world: zero-shot
classification, retrieval and the linear probe (on CPU, through the patched copy of
clip_benchmark's probe). Each clip_benchmark run takes a few seconds.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from clipscale import config as config_mod
from clipscale import evaluate as E
from clipscale import paths, table

REPO = Path(__file__).resolve().parents[1]
RELEASED_NAME = "Model-XS_Data-3k_Samples-2k_lr-2e-3_bs-256.pt"


def _config(world: Path, released_dir: Path) -> dict:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["grid"] = {"models": ["vit-xs"], "scales": ["3k"], "samples_seen": ["2k"]}
    cfg["fit"].pop("comparisons")  # config.yaml's compare its const-cooldown runs: this grid is cosine
    cfg["train"]["checkpoints"] = 2
    down = world / "downstream"
    cfg["downstream"] = {
        "shapes": {"path": str(down / "shapes"), "tasks": ["zeroshot_classification", "linear_probe"],
                   "group": "main"},
        "colours": {"path": str(down / "colours"), "tasks": ["zeroshot_classification"], "group": "vtab+"},
        "counts": {"path": str(down / "counts"), "tasks": ["zeroshot_classification"], "group": "vtab+"},
        "world_captions": {"path": str(down / "world_captions"), "tasks": ["zeroshot_retrieval"]},
    }
    cfg["evaluate"] = {"device": "cpu", "batch_size": 64, "linear_probe_k": [2, "full", 10],
                       "released": {"dir": str(released_dir), "models": {"XS": "vit-xs"},
                                    "data_prefix": "world"}}
    return config_mod.validate(cfg)


def _save(model, path: Path, epoch: int) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": epoch, "name": "test", "state_dict": model.state_dict()}, path)


@pytest.fixture(scope="session")
def setup(small_world, tmp_path_factory):
    """A working directory with one of our runs (vit-xs/3k/2k, epochs 1-2) and a released
    checkpoint, and the config that names them."""
    import open_clip
    import torch

    root = tmp_path_factory.mktemp("evaluate")
    cfg = _config(small_world, root / "released")
    from clipscale import models

    models.register(cfg)
    run_dir = root / paths.fill(paths.RUN_DIR, model="vit-xs", scale="3k", samples="2k")
    ckpts = {}
    for epoch in (1, 2):
        torch.manual_seed(epoch)
        model = open_clip.create_model("vit-xs")
        rel = Path(paths.fill(paths.RUN_DIR, model="vit-xs", scale="3k", samples="2k")) / "openclip" / \
            "checkpoints" / f"epoch_{epoch}.pt"
        _save(model, root / rel, epoch)
        ckpts[str(epoch)] = str(rel)
    record = {"model": "vit-xs", "scale": "3k", "samples_seen": 2000, "samples_seen_exact": 2000,
              "samples_seen_label": "2k", "data_samples": 3000, "epochs": 2, "train_num_samples": 1000,
              "final_checkpoint": ckpts["2"], "checkpoints": ckpts, "gmac_per_sample": 0.001,
              "total_gmac": 2.0}
    (run_dir / "run.json").write_text(json.dumps(record))
    torch.manual_seed(7)
    _save(open_clip.create_model("vit-xs"), root / "released" / RELEASED_NAME, 9)
    return root, cfg


@pytest.fixture
def in_root(setup, monkeypatch):
    root, cfg = setup
    monkeypatch.chdir(root)
    return root, cfg


def _only(cfg: dict, sets: dict[str, list[str]]) -> dict:
    """The config with only these downstream sets and tasks."""
    cfg = copy.deepcopy(cfg)
    cfg["downstream"] = {name: {**cfg["downstream"][name], "tasks": tasks} for name, tasks in sets.items()}
    return cfg


OURS = {"source": "ours", "model": "vit-xs", "scale": "3k", "samples": "2k", "epoch": "2"}
RELEASED = {"source": "released", "model": "vit-xs", "scale": "3k", "samples": "2k", "epoch": "final"}


@pytest.fixture(scope="session")
def evaluated(setup):
    """Real clip_benchmark runs, one job per checkpoint: {(source, dataset, task): result}."""
    root, cfg = setup
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        out = {}
        ours = _only(cfg, {"shapes": ["zeroshot_classification", "linear_probe"],
                           "world_captions": ["zeroshot_retrieval"]})
        for (d, t), res in E.evaluate_checkpoint(ours, OURS).items():
            out[("ours", d, t)] = res
        released = _only(cfg, {"shapes": ["zeroshot_classification"]})
        for (d, t), res in E.evaluate_checkpoint(released, RELEASED).items():
            out[("released", d, t)] = res
        return out


# --- what to evaluate ---------------------------------------------------------------------------


def test_targets_final_and_all_checkpoints(setup):
    _, cfg = setup
    pairs = E.dataset_tasks(cfg)
    assert len(pairs) == 5
    t = E.targets(cfg)
    assert {(x.source, x.model, x.scale, x.samples, x.epoch) for x in t} == {
        ("ours", "vit-xs", "3k", "2k", "2"), ("released", "vit-xs", "3k", "2k", "final")}
    assert len(t) == 2 * len(pairs)
    assert "results/eval/ours/vit-xs/3k/2k/epoch_2/shapes/linear_probe.json" in E.target_paths(cfg)
    assert "results/eval/released/vit-xs/3k/2k/epoch_final/shapes/zeroshot_classification.json" in E.target_paths(cfg)
    every = copy.deepcopy(cfg)
    every["evaluate"]["all_checkpoints"] = True
    epochs = sorted({x.epoch for x in E.targets(every) if x.source == "ours"})
    assert epochs == ["1", "2"] and len(E.targets(every)) == 3 * len(pairs)


def test_job_inputs(setup):
    _, cfg = setup
    ours = E.job_inputs(cfg, "ours", "vit-xs", "3k", "2k", "2")
    assert ours == {"run": "results/train/vit-xs/3k/2k/run.json"}  # sets with a path: no world
    rel = E.job_inputs(cfg, "released", "vit-xs", "3k", "2k", "final")
    assert Path(rel["checkpoint"]).name == RELEASED_NAME
    # a released checkpoint of a custom model: its GMAC comes from the model's profile, an input
    assert rel["profile"] == "results/models/vit-xs.profile.json"
    world = copy.deepcopy(cfg)
    del world["downstream"]["shapes"]["path"]
    assert E.job_inputs(world, "ours", "vit-xs", "3k", "2k", "2")["world"] == paths.WORLD_DONE
    with pytest.raises(config_mod.ConfigError, match="epoch 1 is not evaluated"):
        E.job_inputs(cfg, "ours", "vit-xs", "3k", "2k", "1")
    with pytest.raises(config_mod.ConfigError, match="epoch_final"):
        E.job_inputs(cfg, "released", "vit-xs", "3k", "2k", "3")
    with pytest.raises(KeyError, match="not a run"):
        E.job_inputs(cfg, "ours", "vit-xs", "3k", "4k", "2")
    with pytest.raises(config_mod.ConfigError, match="unknown source"):
        E.job_inputs(cfg, "theirs", "vit-xs", "3k", "2k", "2")


def test_one_job_per_checkpoint_with_a_result_file_per_set_and_task(setup):
    _, cfg = setup
    patterns = E.output_patterns(cfg)
    assert len(patterns) == len(E.dataset_tasks(cfg)) == 5
    assert "results/eval/{source}/{model}/{scale}/{samples}/epoch_{epoch}/shapes/linear_probe.json" in patterns
    outputs = E.outputs_of(cfg, OURS)
    assert outputs[("shapes", "linear_probe")] == "results/eval/ours/vit-xs/3k/2k/epoch_2/shapes/linear_probe.json"


def test_checkpoint_metadata(in_root):
    _, cfg = in_root
    final = E.our_checkpoint(cfg, "vit-xs", "3k", "2k", 2)
    assert (final.label, final.arch_id, final.data, final.samples_seen, final.final) == (
        "ViT-XS", "vit-xs", "world-3k", 2000, True)
    assert final.total_gmac == pytest.approx(2.0) and final.data_size == 3000
    first = E.our_checkpoint(cfg, "vit-xs", "3k", "2k", 1)
    assert (first.samples_seen, first.samples_seen_label, first.final) == (1000, "1k", False)
    assert first.path.endswith("epoch_1.pt")
    with pytest.raises(config_mod.ConfigError, match="epochs 1..2, not 3"):
        E.our_checkpoint(cfg, "vit-xs", "3k", "2k", 3)
    rel = E.released_checkpoint(cfg, "vit-xs", "3k", "2k")
    assert (rel.source, rel.data, rel.samples_seen, rel.checkpoint, rel.epoch) == (
        "released", "world-3k", 2000, RELEASED_NAME, None)
    assert rel.gmac_per_sample > 0  # measured on the model


# --- real clip_benchmark runs -------------------------------------------------------------------


def _oracle_zero_shot(checkpoint: Path, folder: Path) -> float:
    """Zero-shot top-1 computed directly with open_clip (the test's independent reference)."""
    import open_clip
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from clipscale.shards import iter_samples

    model, _, preprocess = open_clip.create_model_and_transforms("vit-xs", pretrained=str(checkpoint))
    model.eval()
    tokenizer = open_clip.get_tokenizer("vit-xs")
    classes = (folder / "classnames.txt").read_text().splitlines()
    templates = (folder / "zeroshot_classification_templates.txt").read_text().splitlines()
    correct = total = 0
    with torch.no_grad():
        weights = []
        for c in classes:
            e = F.normalize(model.encode_text(tokenizer([t.format(c=c) for t in templates])), dim=-1).mean(0)
            weights.append(e / e.norm())
        w = torch.stack(weights, dim=1)
        for tar in sorted((folder / "test").glob("*.tar")):
            for _, files in iter_samples(tar):
                image = preprocess(Image.open(io.BytesIO(files["jpg"]))).unsqueeze(0)
                pred = (F.normalize(model.encode_image(image), dim=-1) @ w).argmax().item()
                correct += pred == int(files["cls"])
                total += 1
    return 100.0 * correct / total


def test_zero_shot_classification_is_clip_benchmarks_number(evaluated, setup):
    root, cfg = setup
    res = evaluated[("ours", "shapes", "zeroshot_classification")]
    assert res["status"] == "ok" and res["device"] == "cpu"
    assert set(res["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"}
    expected = _oracle_zero_shot(root / res["checkpoint_path"], Path(cfg["downstream"]["shapes"]["path"]))
    assert res["metrics"]["acc1"] == pytest.approx(expected, abs=1e-6)
    assert res["clip_benchmark"][0]["metrics"]["acc1"] * 100 == pytest.approx(res["metrics"]["acc1"])
    assert res["row"]["epoch"] == 2 and res["row"]["final"] is True and res["seconds"] > 0
    on_disk = json.loads((root / E.Target(**res["target"]).path).read_text())
    assert on_disk["metrics"] == res["metrics"]


def test_zero_shot_retrieval(evaluated):
    res = evaluated[("ours", "world_captions", "zeroshot_retrieval")]
    m = res["metrics"]
    assert res["status"] == "ok"
    for side in ("image", "text"):
        r1, r5, r10 = (m[f"{side}_retrieval_recall@{k}"] for k in (1, 5, 10))
        assert 0 <= r1 <= r5 <= r10 <= 100
    # 20 images: recall@10 of a random model is around 50 %, far from 0 and 100
    assert 10 < m["image_retrieval_recall@10"] < 95


KEPT_OUT_JOB = """
import json, sys, yaml
from clipscale import evaluate as E
from clipscale.evaluate import imports
cfg = yaml.safe_load(open("job.yaml"))
ckpt = json.loads(sys.argv[1])
marked = imports.keep_out(E.unused_imports(cfg, ckpt))
outputs = {k: f"kept_out/{k[0]}_{k[1]}.json" for k in E.outputs_of(cfg, ckpt)}
res = E.evaluate_checkpoint(cfg, ckpt, outputs)
print(json.dumps({"marked": marked, "loaded": [m for m in ("wandb", "timm", "transformers") if sys.modules.get(m)],
                  "metrics": {f"{d} {t}": r["metrics"] for (d, t), r in res.items()}}))
"""


def test_an_evaluation_job_without_its_unused_imports_gives_the_same_results(evaluated, in_root):
    """The rule's script keeps wandb, timm and transformers out of a job whose model and sets do not
    use them (issue 33: imports were a third of a job's CPU): the same metrics as with them."""
    root, cfg = in_root
    ours = _only(cfg, {"shapes": ["zeroshot_classification", "linear_probe"],
                       "world_captions": ["zeroshot_retrieval"]})
    (root / "job.yaml").write_text(yaml.safe_dump(ours, sort_keys=False))
    out = subprocess.run([sys.executable, "-c", KEPT_OUT_JOB, json.dumps(OURS)], cwd=root,
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted(got["marked"]) == ["timm", "transformers", "wandb"] and got["loaded"] == []
    for key, metrics in got["metrics"].items():
        assert metrics == evaluated[("ours", *key.split())]["metrics"], key


def test_unused_imports_keep_what_a_model_or_set_needs(setup):
    from clipscale.evaluate import imports

    _, cfg = setup
    assert imports.unused(cfg, "vit-xs", ["wds/shapes"]) == ["wandb", "transformers", "timm"]
    assert imports.unused(cfg, "vit-xs", ["wds/shapes", "vtab/cifar10"]) == ["wandb", "transformers"]
    assert imports.unused(cfg, "ViT-B-32", ["wds/shapes"]) == ["wandb", "transformers", "timm"]  # built-in
    assert imports.unused(cfg, "ViT-B-16-SigLIP", []) == ["wandb"]  # timm image tower, HF tokenizer
    assert imports.unused(cfg, "roberta-ViT-B-32", []) == ["wandb", "timm"]  # HF text tower
    assert imports.unused(cfg, "no-such-model", []) == ["wandb"]
    hf = {**cfg, "models": {"m": {"open_clip": {"text_cfg": {"hf_model_name": "bert-base-uncased"}}}}}
    assert imports.unused(hf, "m", []) == ["wandb", "timm"]


def test_linear_probe_on_cpu_with_cached_features(evaluated, in_root):
    root, cfg = in_root
    res = evaluated[("ours", "shapes", "linear_probe")]
    # 4 training images per class: 2-shot and full work, 10-shot is reported as failed
    assert res["status"] == "partial"
    assert {"lp_acc1_2shot", "lp_acc1_full", "lp_acc5_full", "lp_mean_per_class_recall_full"} <= set(res["metrics"])
    assert [f["metric"] for f in res["failures"]] == ["lp_*_10shot"]
    assert "10-shot linear probe needs 10 training samples of every class" in res["failures"][0]["error"]
    assert "{0: 4," in res["failures"][0]["error"]
    assert [d["metrics"]["fewshot_k"] for d in res["clip_benchmark"] if d["metrics"]] == [2, -1]

    cache = Path(paths.fill(paths.EVAL_FEATURES, **res["target"]))
    feats = list(cache.glob("*/features_train.pt"))
    assert len(feats) == 1 and (feats[0].parent / "targets_test.pt").exists()
    # the test features are the zero-shot ones: the same images, encoded once
    import torch

    test_feats = torch.load(feats[0].parent / "features_test.pt", weights_only=True)
    assert test_feats.shape[0] == 24 and torch.allclose(test_feats.norm(dim=-1), torch.ones(24))
    stamp = feats[0].stat().st_mtime_ns
    cfg2 = _only(cfg, {"shapes": ["linear_probe"]})
    cfg2["evaluate"]["linear_probe_k"] = ["full"]
    again = E.evaluate_checkpoint(cfg2, OURS, {("shapes", "linear_probe"): root / "again.json"})
    assert feats[0].stat().st_mtime_ns == stamp  # features reused
    again = again[("shapes", "linear_probe")]
    assert again["metrics"]["lp_acc1_full"] == pytest.approx(res["metrics"]["lp_acc1_full"])
    # an incomplete cache (job killed while caching) is cleared, not trusted
    (feats[0].parent / "targets_test.pt").unlink()
    E.prepare_feature_cache(cache, res["checkpoint_path"])
    assert not feats[0].parent.exists()
    # a checkpoint rewritten after caching (re-trained run): cache cleared
    (cache / "sub").mkdir()
    ckpt = Path(res["checkpoint_path"])
    os.utime(ckpt, ns=(ckpt.stat().st_atime_ns, ckpt.stat().st_mtime_ns + 10**9))
    E.prepare_feature_cache(cache, ckpt)
    assert not (cache / "sub").exists() and json.loads((cache / "checkpoint.json").read_text())["size"] > 0


def test_released_checkpoint_is_evaluated_like_ours(evaluated):
    res = evaluated[("released", "shapes", "zeroshot_classification")]
    assert res["status"] == "ok"
    row = res["row"]
    assert (row["source"], row["model"], row["arch_id"], row["data"]) == ("released", "ViT-XS", "vit-xs", "world-3k")
    assert (row["samples_seen"], row["samples_seen_label"], row["checkpoint"]) == (2000, "2k", RELEASED_NAME)
    assert row["epoch"] == 9  # read from the checkpoint
    assert res["checkpoint_extra"]["lr"] == pytest.approx(2e-3)
    ours = evaluated[("ours", "shapes", "zeroshot_classification")]
    assert res["checkpoint_path"] != ours["checkpoint_path"]


def test_unreadable_checkpoint_is_recorded(in_root, tmp_path):
    root, cfg = in_root
    cfg = copy.deepcopy(cfg)
    bad = tmp_path / "released"
    bad.mkdir()
    (bad / RELEASED_NAME).write_bytes(b"\x00 truncated")
    cfg["evaluate"]["released"]["dir"] = str(bad)
    res = E.evaluate_checkpoint(cfg, RELEASED, {("shapes", "zeroshot_classification"): tmp_path / "out.json"})
    res = res[("shapes", "zeroshot_classification")]
    assert res["status"] == "failed" and not res["metrics"]
    assert "cannot be read" in res["failures"][0]["error"]
    assert json.loads((tmp_path / "out.json").read_text())["status"] == "failed"


def test_a_missing_checkpoint_fails_the_job_and_keeps_the_results(in_root, tmp_path):
    """A checkpoint deleted after it was evaluated: the job fails naming it, and its result files
    stay as they were (they were overwritten as failed "checkpoint ... does not exist")."""
    root, cfg = in_root
    record = json.loads((root / paths.fill(paths.RUN_DONE, model="vit-xs", scale="3k", samples="2k")).read_text())
    gone = tmp_path / "deleted" / "epoch_2.pt"
    record["checkpoints"]["2"] = record["final_checkpoint"] = str(gone)
    (tmp_path / "run.json").write_text(json.dumps(record))
    kept = {("shapes", "zeroshot_classification"): tmp_path / "shapes.json",
            ("colours", "zeroshot_classification"): tmp_path / "colours.json"}
    for path in kept.values():
        path.write_text('{"status": "ok"}')
    cfg = _only(cfg, {"shapes": ["zeroshot_classification"], "colours": ["zeroshot_classification"]})
    with pytest.raises(E.EvaluationError, match=rf"checkpoint {re.escape(str(gone))} does not exist"):
        E.evaluate_checkpoint(cfg, OURS, kept, run_record=tmp_path / "run.json")
    assert all(path.read_text() == '{"status": "ok"}' for path in kept.values())


def test_a_broken_downstream_set_is_recorded_and_the_others_go_on(in_root, tmp_path):
    _, cfg = in_root
    cfg = _only(cfg, {"shapes": ["zeroshot_classification"], "colours": ["zeroshot_classification"]})
    broken = tmp_path / "shapes"
    shutil.copytree(cfg["downstream"]["shapes"]["path"], broken)
    (broken / "test" / "0.tar").unlink()
    cfg["downstream"]["shapes"]["path"] = str(broken)
    outputs = {("shapes", "zeroshot_classification"): tmp_path / "shapes.json",
               ("colours", "zeroshot_classification"): tmp_path / "colours.json"}
    res = E.evaluate_checkpoint(cfg, OURS, outputs)
    shapes, colours = res[("shapes", "zeroshot_classification")], res[("colours", "zeroshot_classification")]
    assert shapes["status"] == "failed" and re.search(r"shards missing: \[.*test/0.tar", shapes["failures"][0]["error"])
    assert colours["status"] == "ok" and colours["metrics"]["acc1"] >= 0
    assert json.loads((tmp_path / "shapes.json").read_text())["status"] == "failed"
    (broken / "classnames.txt").unlink()
    shutil.copy(Path(cfg["downstream"]["colours"]["path"]) / "test" / "0.tar", broken / "test" / "0.tar")
    res = E.evaluate_checkpoint(cfg, OURS, outputs)
    assert "classnames.txt not found" in res[("shapes", "zeroshot_classification")]["failures"][0]["error"]
    with pytest.raises(config_mod.ConfigError, match="needs dataset_type.txt = retrieval"):
        E.check_downstream(cfg["downstream"]["colours"]["path"], "colours", "zeroshot_retrieval")


def test_a_rerun_keeps_unchanged_results_and_computes_the_rest(in_root, tmp_path):
    """A set added to the config, or one set's settings changed: the checkpoint's job computes
    only what is new or changed (the others' fingerprints match) and rewrites nothing else."""
    _, cfg = in_root
    first = _only(cfg, {"colours": ["zeroshot_classification"]})
    outputs = {("colours", "zeroshot_classification"): tmp_path / "colours.json",
               ("counts", "zeroshot_classification"): tmp_path / "counts.json",
               ("shapes", "linear_probe"): tmp_path / "shapes_lp.json"}
    E.evaluate_checkpoint(first, OURS, {k: v for k, v in outputs.items() if k[0] == "colours"})
    mtime = (tmp_path / "colours.json").stat().st_mtime_ns
    more = _only(cfg, {"colours": ["zeroshot_classification"], "counts": ["zeroshot_classification"],
                       "shapes": ["linear_probe"]})
    res = E.evaluate_checkpoint(more, OURS, outputs)
    assert (tmp_path / "colours.json").stat().st_mtime_ns == mtime  # kept, not recomputed
    assert res[("counts", "zeroshot_classification")]["status"] == "ok"
    lp_mtime = (tmp_path / "shapes_lp.json").stat().st_mtime_ns
    counts_mtime = (tmp_path / "counts.json").stat().st_mtime_ns
    more["evaluate"]["linear_probe_k"] = [2]  # shapes' linear probe changes, nothing else
    res = E.evaluate_checkpoint(more, OURS, outputs)
    assert (tmp_path / "shapes_lp.json").stat().st_mtime_ns != lp_mtime
    assert set(res[("shapes", "linear_probe")]["metrics"]) == {"lp_acc1_2shot", "lp_acc5_2shot",
                                                               "lp_mean_per_class_recall_2shot"}
    assert (tmp_path / "counts.json").stat().st_mtime_ns == counts_mtime
    assert (tmp_path / "colours.json").stat().st_mtime_ns == mtime


# --- the CPU patch of clip_benchmark's linear probe ---------------------------------------------


def test_cpu_patch_applies_to_the_installed_version_and_edits_nothing():
    import clip_benchmark.metrics.linear_probe as upstream

    path = Path(upstream.__file__)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    source = E.cpu_linear_probe_source(path.read_text())
    assert ".cuda(" not in source and "assert device == 'cpu'" in source
    module = E.cpu_linear_probe()
    assert module.evaluate is not upstream.evaluate and module.accuracy is upstream.accuracy
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


@pytest.mark.parametrize("old, new", [
    ("x, y = x.cuda(), y.cuda()", "x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)"),
    ("    assert device == 'cuda' # need to use cuda for this else too slow\n", ""),
    ("featurizer = Featurizer(model, normalize).cuda()", "featurizer = Featurizer(model, normalize).cuda()\n    x = 1 .cuda()"),
])
def test_cpu_patch_fails_loudly_when_upstream_changes(old, new):
    import clip_benchmark.metrics.linear_probe as upstream

    changed = Path(upstream.__file__).read_text().replace(old, new)
    assert changed != Path(upstream.__file__).read_text()
    with pytest.raises(E.UpstreamChanged, match="changed"):
        E.cpu_linear_probe_source(changed)


def test_upstream_change_fails_loudly(monkeypatch, in_root, tmp_path):
    import clip_benchmark.metrics.zeroshot_retrieval as retrieval

    _, cfg = in_root
    monkeypatch.delattr(retrieval, "evaluate")
    with pytest.raises(E.UpstreamChanged, match="zeroshot_retrieval has no evaluate"):
        E.evaluate_checkpoint(_only(cfg, {"world_captions": ["zeroshot_retrieval"]}), OURS,
                              {("world_captions", "zeroshot_retrieval"): tmp_path / "r.json"})


def test_device_setting():
    import torch

    assert E.resolve_device("cpu") == "cpu"
    assert E.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(config_mod.ConfigError, match="no CUDA device"):
            E.resolve_device("cuda")


# --- aggregation --------------------------------------------------------------------------------


def _fake_result(path: Path, target: E.Target, metrics: dict, status="ok", failures=(), undefined=None,
                 samples=2000, epoch=2):
    row = {"source": target.source, "model": "ViT-XS", "arch_id": "vit-xs", "data": "world-3k",
           "samples_seen": samples, "samples_seen_label": "2k", "gmac_per_sample": 0.001,
           "total_gmac": 0.001 * samples, "epoch": epoch, "final": True, "checkpoint": f"c{epoch}.pt",
           "data_size": 3000}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"target": target.__dict__, "row": row, "status": status, "metrics": metrics,
                                "failures": list(failures), "undefined": undefined or {}}))
    return path


def test_aggregate_table_groups_and_log(tmp_path, setup):
    _, cfg = setup
    t = lambda d, task="zeroshot_classification": E.Target("ours", "vit-xs", "3k", "2k", "2", d, task)  # noqa: E731
    files = [
        _fake_result(tmp_path / "a.json", t("colours"), {"acc1": 50.0, "acc5": 90.0, "mean_per_class_recall": 49.0}),
        _fake_result(tmp_path / "b.json", t("counts"), {"acc1": 30.0}, undefined={"acc5": "fewer than 5 classes"}),
        _fake_result(tmp_path / "c.json", t("shapes", "linear_probe"), {"lp_acc1_2shot": 20.0}, status="partial",
                     failures=[{"metric": "lp_*_10shot", "error": "needs 10 per class"}]),
        _fake_result(tmp_path / "d.json", t("shapes"), {}, status="failed",
                     failures=[{"metric": "*", "error": "checkpoint x cannot be read"}]),
        tmp_path / "results/eval/ours/vit-xs/3k/2k/epoch_2/world_captions/zeroshot_retrieval.json",  # missing
        tmp_path / "e.json",  # unreadable
    ]
    files[-1].write_text("{not json")
    out = tmp_path / "out"
    df = E.aggregate(cfg, files, out / "results.parquet", out / "results.csv", out / "results_log.txt")
    back = table.read_table(out / "results.parquet")
    assert len(back) == len(df) == 6  # 5 metrics + the vtab+ mean of acc1
    assert table.read_table(out / "results.csv").shape == back.shape
    mean = back[back["dataset"] == "vtab+"]
    assert mean["metric"].tolist() == ["acc1"] and mean["value"].item() == pytest.approx(40.0)
    assert mean["error"].item() == pytest.approx(0.6)
    lp = back[back["metric"] == "lp_acc1_2shot"]
    assert lp["task"].item() == "linear_probe" and lp["value"].item() == 20.0
    assert back["data_size"].eq(3000).all()
    text = (out / "results_log.txt").read_text()
    assert "evaluations expected: 6; ok: 2, partial: 1, failed: 1, missing: 1, unreadable: 1" in text
    assert "MISSING    ours vit-xs/3k/2k epoch 2 world_captions zeroshot_retrieval" in text
    assert "UNREADABLE" in text and "e.json" in text
    assert "FAILED     ours vit-xs/3k/2k epoch 2 shapes linear_probe [lp_*_10shot]: needs 10 per class" in text
    assert "FAILED     ours vit-xs/3k/2k epoch 2 shapes zeroshot_classification [*]: checkpoint x cannot be read" in text
    assert "UNDEFINED  ours vit-xs/3k/2k epoch 2 counts zeroshot_classification [acc5]" in text
    # counts has no mean_per_class_recall (and no reason): logged; its acc5 is UNDEFINED: not again
    assert "zeroshot_classification mean_per_class_recall: group vtab+ lacks ['counts']" in text
    assert text.count("NO MEAN    ") == 1


def test_results_log_shows_pool_problems_skipped_samples_and_rejected_checkpoints(tmp_path, setup):
    """What the data behind the table lacks is in the results log, not only in job logs."""
    import pandas as pd

    _, cfg = setup
    index = pd.DataFrame([
        {"shard": "00000", "path": "pool/00000.tar", "n_samples": 100, "skipped": 0, "counted_from": "tar",
         "n_parquet": 100, "n_readable": 100, "problem": "", "n_missing": 2,
         "missing_reasons": "HTTP Error 404: Not Found: 2"},
        {"shard": "00001", "path": "pool/00001.tar", "n_samples": 59, "skipped": 0, "counted_from": "tar",
         "n_parquet": 100, "n_readable": 59, "problem": "truncated tar; parquet says 100 samples, the tar has 59 readable",
         "n_missing": 0, "missing_reasons": ""},
    ])
    index.to_parquet(tmp_path / "pool_index.parquet")
    record = {"model": "vit-xs", "scale": "3k", "samples_seen_label": "2k",
              "skipped_samples": {"total": 3, "by_reason": {"no caption": 1, "decode error: OSError": 2}},
              "rejected_checkpoints": [{"file": "x/epoch_9.pt", "moved_to": "x/epoch_9.pt.rejected",
                                        "reason": "epoch 9 is beyond the run's 2 epochs"}]}
    (tmp_path / "run.json").write_text(json.dumps(record))
    clean = {**record, "skipped_samples": {"total": 0, "by_reason": {}}, "rejected_checkpoints": []}
    (tmp_path / "clean.json").write_text(json.dumps(clean))
    out = tmp_path / "out"
    E.aggregate(cfg, [], out / "r.parquet", out / "r.csv", out / "log.txt",
                run_records=[tmp_path / "run.json", tmp_path / "clean.json"],
                pool_index=tmp_path / "pool_index.parquet")
    text = (out / "log.txt").read_text()
    assert "POOL       pool/00001.tar: truncated tar; parquet says 100 samples, the tar has 59 readable" in text
    assert "00000" not in text
    # img2dataset's failed downloads: the pool's total, not a problem shard
    assert ("DOWNLOAD   2 samples missing in 1 of 2 shards (listed by img2dataset, not written: "
            "HTTP Error 404: Not Found: 2)") in text
    assert ("SKIPPED    vit-xs/3k/2k: training skipped 3 samples (decode error: OSError: 2, no caption: 1)"
            in text)
    assert "CHECKPOINT vit-xs/3k/2k: x/epoch_9.pt moved to x/epoch_9.pt.rejected: epoch 9 is beyond" in text
    assert text.count("SKIPPED    ") == 1 and text.count("CHECKPOINT ") == 1


def test_aggregate_with_nothing(tmp_path, setup):
    _, cfg = setup
    df = E.aggregate(cfg, [tmp_path / "none.json"], tmp_path / "r.parquet", tmp_path / "r.csv", tmp_path / "log.txt")
    assert len(df) == 0 and list(df.columns[:len(table.RESULTS_COLUMNS)]) == table.RESULTS_COLUMNS
    assert "missing: 1" in (tmp_path / "log.txt").read_text()


def test_aggregate_real_results(evaluated, in_root):
    root, cfg = in_root
    files = [E.Target(*k[:1], "vit-xs", "3k", "2k", "2" if k[0] == "ours" else "final", *k[1:]).path
             for k in evaluated]
    df = E.aggregate(cfg, files, root / "t.parquet", root / "t.csv", root / "t.txt")
    assert set(df["source"]) == {"ours", "released"}
    ours = df[(df["source"] == "ours") & (df["metric"] == "acc1")]
    assert ours["value"].item() == pytest.approx(evaluated[("ours", "shapes", "zeroshot_classification")]["metrics"]["acc1"])
    assert ours["total_gmac"].item() == pytest.approx(2.0) and ours["data"].item() == "world-3k"
    assert "FAILED     ours vit-xs/3k/2k epoch 2 shapes linear_probe [lp_*_10shot]" in (root / "t.txt").read_text()


# --- the command line and the workflow rules ----------------------------------------------------


def test_command_line(in_root):
    root, cfg = in_root
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    clipscale = str(Path(sys.executable).with_name("clipscale"))  # the package's one command line
    out = subprocess.run([clipscale, "eval-targets", "--config", "cfg.yaml"],
                         capture_output=True, text=True, cwd=root)
    assert out.returncode == 0 and out.stdout.split() == E.target_paths(cfg)
    bad = subprocess.run([clipscale, "evaluate", "--config", "cfg.yaml",
                          "--model", "vit-xs", "--scale", "3k", "--samples", "2k", "--epoch", "5",
                          "--dataset", "shapes", "--task", "zeroshot_classification"],
                         capture_output=True, text=True, cwd=root)
    assert bad.returncode == 1 and "epochs 1..2, not 5" in bad.stderr


@pytest.mark.slow
def test_snakemake_rules(setup, tmp_path):
    """evaluate + aggregate_results through Snakemake (a process per job): one job per
    checkpoint (our run's and the released one), two sets each; then a set added to the config
    is evaluated for both checkpoints without recomputing the others."""
    root, cfg = setup
    work = tmp_path / "work"
    shutil.copytree(root / "results" / "train", work / "results" / "train")  # not the session's results
    shutil.copytree(root / "released", work / "released")
    cfg = _only(cfg, {"shapes": ["zeroshot_classification"], "world_captions": ["zeroshot_retrieval"]})
    cfg["evaluate"]["released"]["dir"] = str(work / "released")
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (work / "Snakefile").write_text(
        'configfile: "config.yaml"\n'
        f'include: "{REPO}/workflow/rules/common.smk"\n'
        f'include: "{REPO}/workflow/rules/train_functions.smk"\n'
        f'include: "{REPO}/workflow/rules/finetune_functions.smk"\n'
        f'include: "{REPO}/workflow/rules/evaluate.smk"\n'
        "rule all:\n    input: evaluate_targets()\n")
    (work / "results" / "data").mkdir(parents=True)
    import pandas as pd

    pd_index = pd.DataFrame([{"shard": "0", "path": "x.tar", "n_samples": 1, "skipped": 0,
                                    "counted_from": "tar", "n_parquet": 1, "n_readable": 1, "problem": ""}])
    pd_index.to_parquet(work / paths.POOL_INDEX)
    # the released checkpoint's custom model: its profile (measured GMAC), an input of its
    # evaluation, made by the model_profile rule of train.smk (not included here)
    from clipscale import models

    models.register(cfg)
    profile = work / paths.fill(paths.MODEL_PROFILE, model="vit-xs")
    profile.parent.mkdir(parents=True, exist_ok=True)
    profile.write_text(json.dumps(models.measure_gmac("vit-xs")))

    def run() -> subprocess.CompletedProcess:
        out = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "--cores", "2"],
                             cwd=work, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        return out

    first = run()
    assert first.stderr.count("rule evaluate:") == 2  # one job per checkpoint
    df = table.read_table(work / paths.RESULTS_TABLE)
    assert set(df["source"]) == {"ours", "released"}
    assert set(df["dataset"]) == {"shapes", "world_captions"}
    logs = sorted((work / paths.LOGS / "evaluate").rglob("*.log"))
    assert len(logs) == 2 and all("checkpoint done" in p.read_text() for p in logs)
    assert len(list((work / paths.BENCHMARKS / "evaluate").rglob("*.tsv"))) == 2
    assert "ok: 4" in (work / paths.RESULTS_LOG).read_text()

    # Snakemake touches kept outputs after the job (newer than its inputs): compare contents
    kept = {p: p.read_text() for p in (work / "results" / "eval").rglob("*.json")}
    cfg["downstream"]["colours"] = copy.deepcopy(setup[1]["downstream"]["colours"])
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    second = run()
    assert second.stderr.count("rule evaluate:") == 2
    assert {p: p.read_text() for p in kept} == kept  # nothing recomputed
    assert all("1 evaluations to run, 2 kept" in p.read_text() for p in logs)
    df = table.read_table(work / paths.RESULTS_TABLE)
    assert set(df["dataset"]) >= {"shapes", "world_captions", "colours"}
    assert "ok: 6" in (work / paths.RESULTS_LOG).read_text()

    # a deleted result is computed again (Snakemake did nothing: the table was up to date), by
    # its checkpoint's job, which keeps the others; the table follows
    deleted = work / E.Target(**OURS, dataset="colours", task="zeroshot_classification").path
    deleted.unlink()
    third = run()
    assert third.stderr.count("rule evaluate:") == 1 and third.stderr.count("rule aggregate_results:") == 1
    assert json.loads(deleted.read_text())["status"] == "ok"
    assert "1 evaluations to run, 2 kept" in (work / paths.LOGS / "evaluate" / "ours").rglob("*.log").__next__().read_text()
    assert "ok: 6" in (work / paths.RESULTS_LOG).read_text()
