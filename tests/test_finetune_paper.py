"""The paper's fine-tuning recipe as config/paper.yaml states it, against the published tables
(shared/reference: Tables 9-11): every recipe value of Tables 10 and 11 per model, the EMA's
decay from the first to the last step, Table 9's robustness sets with ImageNet-ReaL (and its
multi-label accuracy), the ImageNet-12k step; patching's a chosen on a validation split carved
from the training data (10%, at most 5,000) with gradients clipped at norm 1 (Ilharco et al.)."""

from __future__ import annotations

import json
import math
import re
import tarfile
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from clipscale import checks
from clipscale import config as config_mod
from clipscale import reference
from clipscale.finetune import job, plan
from clipscale.finetune import recipe as rc

REPO = Path(__file__).resolve().parents[1]
PAPER_MODELS = ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-H-14")
IMAGENET_TRAIN = 1_281_167  # ImageNet-1k's train split


@pytest.fixture(scope="module")
def paper():
    return config_mod.load(REPO / "config" / "paper.yaml")


def _table(name: str) -> dict[str, dict[str, str]]:
    """A recipe table of the reference (hyper-parameter rows, one column per model): {column:
    {hyper-parameter: value}}."""
    df = pd.read_csv(reference.REFERENCE_DIR / name, dtype=str)
    return {col: dict(zip(df["Hyperparameter"], df[col])) for col in df.columns[1:]}


def _expected(col: dict[str, str]) -> dict:
    """A published column as our recipe keys (RandAugment "M=U(0, 8), N=2": timm's
    rand-m8-n2-mstd101, magnitude uniform in [0, M])."""
    m, n = (int(x) for x in re.fullmatch(r"M=U\(0, (\d+)\), N=(\d+)", col["Rand Augment (Uniform)"]).groups())
    return {"lr": float(col["Peak Learning-rate"]), "batch_size": int(col["Batch Size"]),
            "epochs": float(col["Epochs"]), "warmup_epochs": float(col["Warmup Epochs"]),
            "layer_decay": float(col["Layer-wise LR Decay"]), "ema": float(col["EMA Weight Smoothing"]),
            "weight_decay": float(col["Weight Decay"]), "label_smoothing": float(col["Label Smoothing"]),
            "drop_path": float(col["Stoch. Depth"]), "clip_grad": float(col["Gradient Clipping"]),
            "random_erase": float(col["Random Erase Prob"]), "rand_augment": f"rand-m{m}-n{n}-mstd101"}


def _column(paper, model: str) -> str:
    return paper["models"][model]["label"].removeprefix("ViT-")


@pytest.mark.parametrize("table, settings", [("table10_imagenet_finetune_hparams.csv", "classification"),
                                             ("table11_imagenet12k_finetune_hparams.csv", "intermediate")])
def test_the_recipes_are_tables_10_and_11_value_by_value(paper, table, settings):
    published = _table(table)
    for model in PAPER_MODELS:
        col = published[_column(paper, model)]
        got = (plan.recipe_settings(paper, "classification", model) if settings == "classification"
               else plan.intermediate_settings(paper, model))
        want = _expected(col)
        assert got["rand_augment"].startswith(want.pop("rand_augment") + "-"), (model, got["rand_augment"])
        assert {k: got[k] for k in want} == pytest.approx(want), (table, model)
        # the rest of the column: random resized crop, no mixup, cutmix, colour jitter nor dropout
        assert col["Random Resize Crop"] == "Yes" and tuple(got["crop_scale"]) == (0.08, 1.0), model
        assert all(float(col[k]) == 0 for k in ("Mixup Alpha", "Cutmix Alpha", "Color Jitter", "Dropout"))
        assert got["ema_warmup_epochs"] == 0  # the stated decay from the first step
    # classification_in12k: Table 11 on ImageNet-12k first (its path in finetune.sets), then Table 10
    assert "classification_in12k" in paper["finetune"]["protocols"]
    assert paper["finetune"]["intermediate"]["dataset"] == "imagenet12k"
    assert plan.dataset_dir(paper, "imagenet12k") == paper["finetune"]["sets"]["imagenet12k"]["path"]
    assert plan.recipe_settings(paper, "classification_in12k", "ViT-L-14") == plan.recipe_settings(
        paper, "classification", "ViT-L-14")


def test_the_ema_decays_by_table_10s_smoothing_from_the_first_to_the_last_step(paper):
    """At update step 1 and at the last step of 50 ImageNet epochs (15,640 steps of 4,096 for
    ViT-B/32) the decay is Table 10's (Table 11's for the ImageNet-12k step); timm's own warm-up
    (use_warmup=True, what the jobs used before) is 0.9984 at step 15,600."""
    from timm.utils import ModelEmaV3

    published = {"classification": _table("table10_imagenet_finetune_hparams.csv"),
                 "intermediate": _table("table11_imagenet12k_finetune_hparams.csv")}
    for model in PAPER_MODELS:
        for which, settings in (("classification", plan.recipe_settings(paper, "classification", model)),
                                ("intermediate", plan.intermediate_settings(paper, model))):
            recipe = rc.Recipe.of(settings)
            stated = float(published[which][_column(paper, model)]["EMA Weight Smoothing"])
            last = recipe.steps(IMAGENET_TRAIN)
            assert last == math.ceil(recipe.epochs * IMAGENET_TRAIN / recipe.batch_size)
            assert rc.ema_decay(recipe, 1, IMAGENET_TRAIN) == stated == rc.ema_decay(recipe, last, IMAGENET_TRAIN)
    b32 = rc.Recipe.of(plan.recipe_settings(paper, "classification", "ViT-B-32"))
    assert b32.steps(IMAGENET_TRAIN) == 15_640
    timm_warmup = ModelEmaV3(nn.Linear(2, 2), decay=0.9998, use_warmup=True)
    assert timm_warmup.get_decay(15_600) == pytest.approx(0.9984, abs=1e-4)
    # the EMA itself: after the first step, 0.9998 of the initial weights and 0.0002 of the new
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ema = rc.ema(net, b32, IMAGENET_TRAIN)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update(net, step=1)
    for k, v in ema.module.state_dict().items():
        assert torch.allclose(v, 0.9998 * before[k] + 0.0002 * net.state_dict()[k], atol=1e-7), k


def test_an_ema_warmup_reaches_the_stated_decay_within_the_recipe():
    """ema_warmup_epochs (the embedded default's short runs): the EMA's horizon grows linearly
    from one step to 1/(1 - ema) at the end of the warm-up, the decay then the stated one to the
    last step; a warm-up longer than the recipe is refused before any job."""
    recipe = rc.Recipe.of({**config_mod.section({}, "finetune")["recipe"], "ema": 0.99, "ema_warmup_epochs": 5,
                           "epochs": 10, "batch_size": 64})
    n = 240  # the embedded default's smallest set: 38 steps, 19 of warm-up
    assert (recipe.steps(n), recipe.ema_warmup_steps(n)) == (38, 19)
    decays = [rc.ema_decay(recipe, k, n) for k in range(1, 39)]
    assert decays[0] == pytest.approx(1 - 1 / (1 + 99 / 19))  # 0.839: a short average at first
    assert all(a <= b for a, b in zip(decays, decays[1:]))
    assert decays[18] == decays[-1] == 0.99 and decays[17] < 0.99
    assert 1 / (1 - rc.ema_decay(recipe, 10, n)) == pytest.approx(1 + 99 * 10 / 19)
    import yaml

    bad = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert bad["finetune"]["recipe"]["ema_warmup_epochs"] == 5 and bad["finetune"]["recipe"]["epochs"] == 10
    bad["finetune"]["recipe"]["ema_warmup_epochs"] = 12
    with pytest.raises(config_mod.ConfigError, match=r"finetune.recipe.ema_warmup_epochs: 12 for \S+ "
                                                     r"\(classification, with its overrides\) is longer than its 10"):
        checks.validate(bad)


def test_table_9s_robustness_sets_with_imagenet_real(paper):
    """Table 9's columns: ImageNet and ImageNet-ReaL, -V2, -A, -R, -Sketch (no ObjectNet); the
    rows of our two classification protocols carry the published table's metric names."""
    columns = pd.read_csv(reference.REFERENCE_DIR / reference.FINETUNE_IMAGENET, nrows=0).columns
    table9 = [reference.IMAGENET_FINETUNE_SETS[c] for c in columns if c in reference.IMAGENET_FINETUNE_SETS]
    assert plan.datasets(paper, "classification") == table9
    assert "objectnet" not in plan.datasets(paper, "classification")
    assert plan.dataset_dir(paper, "imagenet-real") == paper["finetune"]["sets"]["imagenet-real"]["path"]
    # every LAION-2B row of Table 9 (image size x ImageNet-12k step) is a protocol of paper.yaml
    table9 = pd.read_csv(reference.REFERENCE_DIR / reference.FINETUNE_IMAGENET)
    ours = {(m, plan.classification_metric(paper, p, m)) for m in PAPER_MODELS for p in paper["finetune"]["protocols"]
            if p.startswith("classification")}
    labels = {paper["models"][m]["label"]: m for m in PAPER_MODELS}
    published = set(reference.load_finetune()["metric"])
    rows = table9[table9["data"] == "LAION-2B"]
    assert len(rows) == 13
    for model, size, extra in zip(rows["model"], rows["image_size"], rows["extra_ft"]):
        metric = "imagenet_ft_acc1" + ("" if size == 224 else f"_{size}px") + ("_in12k" if extra == "IN-12k" else "")
        assert (labels[model], metric) in ours and metric in published, (model, size, extra)
    assert paper["finetune"]["classification"]["high_res"] == {"ViT-B-32": 384, "ViT-B-16": 384, "ViT-L-14": 336,
                                                               "ViT-H-14": 336}


def test_patching_is_ilharco_et_als_validation_split_and_gradient_clipping(paper, small_world):
    """Patching's a on a validation split carved from each training split, int(10%) and at most
    5,000 samples, drawn at random and the same each time; the joint fine-tuning trains on the
    rest (the training stream never yields a held-out sample); gradients clipped at norm 1."""
    p = paper["finetune"]["patching"]
    assert p["validation"] == {"fraction": 0.1, "max_samples": 5000}
    settings = plan.recipe_settings(paper, "patching", "ViT-B-32")
    assert (settings["clip_grad"], settings["lr"], settings["batch_size"]) == (1.0, 1e-5, 128)

    class Sized(job.TaskData):
        def members(self, split):
            return [("shard.tar", f"s{i:07d}") for i in range(self.n)]

    for n, size in ((IMAGENET_TRAIN, 5000), (45_000, 4500), (24, 2)):
        task = Sized("t", Path("."))
        task.n = n
        held = job.validation_split(task, 0.1, 5000, seed=0)
        assert len(held) == size
        assert held == job.validation_split(task, 0.1, 5000, seed=0) != job.validation_split(task, 0.1, 5000, seed=1)
    tiny = Sized("t", Path("."))
    tiny.n = 9
    with pytest.raises(job.FinetuneError, match="too few for a validation split"):
        job.validation_split(tiny, 0.1, 5000, seed=0)

    colours = job.TaskData("colours", small_world / "downstream" / "colours")
    members = colours.members("train")
    held = job.validation_split(colours, 0.1, 5000, seed=0)
    assert len(held) == int(0.1 * len(members)) and held <= set(members)
    colours = job.TaskData("colours", colours.root, held_out=held)
    assert colours.count("train") == len(members) - len(held)
    skipped = job.Skipped("test")
    stream = job._train_batches(colours, 4, skipped, seed=0)
    rest = len(members) - len(held)
    seen = {(s["__url__"], s["__key__"]) for _ in range(rest // 4) for s in next(stream)}  # one pass
    assert seen <= set(members) - held and len(seen) == rest // 4 * 4
    got = job.held_out_samples(colours, skipped)
    assert {(s["__url__"], s["__key__"]) for s in got} == held and not skipped.n

    net = nn.Linear(4, 3)
    net(torch.randn(8, 4)).pow(2).sum().mul(1e3).backward()
    rc.clip_gradients(net, rc.Recipe.of(settings))
    assert torch.cat([p.grad.flatten() for p in net.parameters()]).norm() == pytest.approx(1.0, rel=1e-5)


class _Stub(nn.Module):
    """Features: an image's mean colour (red, green, blue); the head: the identity (class k is
    channel k)."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.heads = nn.ParameterDict({"main": nn.Parameter(torch.eye(3)[:, :classes].clone())})

    def features(self, images):
        return images.mean((2, 3))


def _image(colour: int) -> bytes:
    import io

    from PIL import Image

    rgb = [0, 0, 0]
    rgb[colour] = 255
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), tuple(rgb)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_imagenet_real_is_made_from_the_validation_images_and_scored_with_its_labels(tmp_path):
    """clipscale.finetune.real writes ReaL's labels beside ImageNet's validation images; a
    prediction counts when it is one of an image's labels, images without labels are left out
    (timm's RealLabelsImagenet): here 3 right of the 4 with labels."""
    import torchvision.transforms as T

    from clipscale.finetune import real

    val = tmp_path / "val"
    colours = [0, 1, 2, 2, 0, 1]  # the top class of each image (its colour)
    labels = [[0], [1, 2], [], [0, 1], [0, 2], []]  # ReaL: right, right, none, wrong, right, none
    wnids = ["n01440764", "n01443537", "n01484850"]
    for i, c in enumerate(colours):
        (val / wnids[c]).mkdir(parents=True, exist_ok=True)
        (val / wnids[c] / f"ILSVRC2012_val_{i + 1:08d}.JPEG").write_bytes(_image(c))
    (tmp_path / "real.json").write_text(json.dumps(labels))
    classes = tmp_path / "imagenet1k"
    classes.mkdir()
    (classes / "classnames.txt").write_text("red\ngreen\nblue\n")
    (classes / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")
    counts = real.make_real_set(val, tmp_path / "real.json", classes, tmp_path / "imagenet-real", shard_size=4)
    assert counts == {"images": 6, "with_labels": 4, "without_labels": 2}
    task = job.TaskData("imagenet-real", tmp_path / "imagenet-real")
    assert len(task.shards("test")) == 2 and task.classes == ["red", "green", "blue"]
    with tarfile.open(task.shards("test")[0]) as tar:
        assert tar.extractfile("ILSVRC2012_val_00000002.cls").read() == b"1"  # its class folder
    acc = job.accuracy(_Stub(), "main", task, T.ToTensor(), 4, job.Skipped("test"))
    assert acc == pytest.approx(75.0)


def test_a_robustness_set_of_a_subset_of_the_classes_predicts_among_them(tmp_path):
    """ImageNet-A and -R hold 200 of ImageNet's classes: the fine-tuned head's columns of those
    classes, in their order (timm's class mask); a set with a class the main set lacks is refused."""
    def task(name, classes):
        root = tmp_path / name
        root.mkdir()
        (root / "classnames.txt").write_text("\n".join(classes) + "\n")
        return job.TaskData(name, root)

    main = task("main", ["red", "green", "blue", "grey"])
    assert job.class_columns(main, task("same", ["red", "green", "blue", "grey"])) is None
    assert job.class_columns(main, task("sub", ["blue", "red"])) == [2, 0]
    with pytest.raises(job.FinetuneError, match="robustness set other has other classes than main: 'pink'"):
        job.class_columns(main, task("other", ["red", "pink"]))


def test_the_fine_tuning_sets_paths_are_checked_before_any_job(tmp_path, monkeypatch, capsys, paper):
    """config/paper.yaml's ImageNet-ReaL and ImageNet-12k folders (finetune.sets): checked with
    the other paths; a folder without class names is named too."""
    from clipscale.cli import main as cli_main

    monkeypatch.chdir(tmp_path)
    assert cli_main(["check-config", str(REPO / "config" / "paper.yaml")]) == 2
    err = capsys.readouterr().err
    assert "finetune.sets.imagenet-real.path: data/wds/imagenet-real does not exist" in err
    assert "finetune.sets.imagenet12k.path: data/wds/imagenet12k does not exist" in err
    (tmp_path / "data" / "wds" / "imagenet12k").mkdir(parents=True)
    assert plan.path_problems(paper)[-2:] == [
        "finetune.sets.imagenet12k.path: data/wds/imagenet12k has no classnames.txt",
        "finetune.sets.imagenet12k.path: data/wds/imagenet12k has no zeroshot_classification_templates.txt"]
