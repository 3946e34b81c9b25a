import copy
from pathlib import Path

import pytest
import yaml

from clipscale import config, grid
from clipscale.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]


def base():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = config.load(REPO / "config" / name)
    assert grid.runs(cfg)


def test_defaults_are_filled():
    cfg = base()
    del cfg["dedup"]
    cfg = config.validate(cfg)
    assert cfg["dedup"]["radius"] == 4
    assert cfg["train"]["checkpoints"] == 4


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["train"].update(colour=1), "train: Additional properties are not allowed"),
        (lambda c: c["train"].update(precision="fp8"), "train.precision"),
        (lambda c: c.update(seed=-1), "seed"),
        (lambda c: c["grid"].update(models=["nope"]), "grid.models: 'nope' is not defined"),
        (lambda c: c["grid"].update(scales=["huge"]), "grid.scales: 'huge' is not defined"),
        (lambda c: c["grid"].update(samples_seen=["12x"]), "grid.samples_seen"),
        (lambda c: c["scales"].update({"48k": 10**9}), "scales.48k"),
        (lambda c: c["downstream"].update(imagenet={"tasks": ["zeroshot_classification"]}),
         "downstream.imagenet: no path given"),
        (lambda c: c["downstream"]["shapes"].update(tasks=["zeroshot"]), "downstream.shapes.tasks"),
        (lambda c: c["train"].update(overrides=[{"model": "vit-xs", "lrr": 1}]),
         "train.overrides[0]: unknown keys ['lrr']"),
    ],
)
def test_bad_config_is_rejected_with_the_key(edit, message):
    cfg = base()
    edit(cfg)
    with pytest.raises(config.ConfigError) as err:
        config.validate(cfg, source="my.yaml")
    assert "my.yaml" in str(err.value)
    assert message in str(err.value)


def test_unreadable_config_files(tmp_path):
    with pytest.raises(config.ConfigError, match="not found"):
        config.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        config.load(bad)
    bad.write_text("- 1\n")
    with pytest.raises(config.ConfigError, match="must hold a mapping"):
        config.load(bad)


def test_check_config_command(tmp_path, capsys):
    assert cli_main(["check-config", str(REPO / "config" / "config.yaml")]) == 0
    cfg = base()
    cfg["train"]["lr"] = -1
    bad = tmp_path / "c.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    assert cli_main(["check-config", str(bad)]) == 2
    assert "train.lr" in capsys.readouterr().err


@pytest.mark.parametrize("text, n", [("24k", 24000), ("3B", 3 * 10**9), ("12.8B", 12_800_000_000),
                                     (500, 500), ("80M", 80 * 10**6)])
def test_counts_round_trip(text, n):
    assert config.parse_count(text) == n
    assert config.parse_count(config.format_count(n)) == n


def test_grid_and_overrides():
    cfg = config.validate(base())
    runs = grid.runs(cfg)
    assert len(runs) == 27 and len(set(runs)) == 27
    cfg2 = copy.deepcopy(cfg)
    cfg2["grid"]["exclude"] = [{"model": "vit-m", "scale": "3k"}]
    cfg2["train"]["overrides"] = [{"model": "vit-xs", "lr": 0.5}, {"samples_seen": "90k", "batch_size": 64}]
    cfg2 = config.validate(cfg2)
    runs2 = grid.runs(cfg2)
    assert len(runs2) == 24
    hp = grid.hparams(cfg2, grid.Run("vit-xs", "3k", 90000))
    assert hp["lr"] == 0.5 and hp["batch_size"] == 64
    # open_clip draws whole global batches per virtual epoch: 22500 -> 352 batches of 64
    assert (hp["epochs"], hp["train_num_samples"]) == (4, 22500)
    assert hp["samples_seen_exact"] == 4 * 352 * 64
    assert grid.hparams(cfg2, grid.Run("vit-s", "3k", 10000))["lr"] == cfg["train"]["lr"]


def test_paper_grid_matches_table18():
    cfg = config.load(REPO / "config" / "paper.yaml")
    runs = grid.runs(cfg)
    assert len(runs) == 29  # the runs of the paper's Table 18
    hp = grid.hparams(cfg, grid.Run("ViT-H-14", "2B", 34 * 10**9))
    assert (hp["batch_size"], hp["lr"], hp["nodes"] * hp["nproc"]) == (96, 0.0005, 824)
