"""Released checkpoint names: every name of the paper's Table 18 parses and resolves; bad names
and unmappable models are clear errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest

from clipscale import config as config_mod
from clipscale import released
from clipscale.models import table25
from clipscale.reference import REFERENCE_DIR, load_hparams

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base_config() -> dict:
    return config_mod.load(REPO / "config" / "config.yaml")


@pytest.fixture(scope="module")
def paper_config() -> dict:
    return config_mod.load(REPO / "config" / "paper.yaml")


def test_parse_the_papers_names():
    n = released.parse_name("Model-H-14_Data-2B_Samples-34B_lr-5e-4_bs-79k.pt")
    assert (n.model_token, n.data_token, n.samples_label) == ("H-14", "2B", "34B")
    assert n.samples_nominal == 34_000_000_000 and n.data_size == 2_000_000_000
    assert n.lr == pytest.approx(5e-4) and n.batch_size == 79_000 and n.batch_label == "79k"
    n = released.parse_name("/some/dir/Model-B-32_Data-400M_Samples-13B_lr-1e-3_bs-88k.pt")
    assert n.file == "Model-B-32_Data-400M_Samples-13B_lr-1e-3_bs-88k.pt"
    assert (n.model_token, n.data_size, n.lr) == ("B-32", 400_000_000, pytest.approx(1e-3))
    assert released.format_name("B-32", "400M", "13B", "1e-3", "88k") == n.file


@pytest.mark.parametrize("name, fragment", [
    ("ViT-B-32_laion400m.pt", "does not follow"),
    ("Model-B-32_Data-400M_Samples-13B_lr-1e-3_bs-88k.safetensors", "does not follow"),
    ("Model-B-32_Data-lots_Samples-13B_lr-1e-3_bs-88k.pt", "data 'lots' is not a count"),
    ("Model-B-32_Data-400M_Samples-13B_lr-fast_bs-88k.pt", "lr 'fast'"),
    ("Model-B-32_Data-400M_Samples-13X_lr-1e-3_bs-88k.pt", "samples '13X'"),
])
def test_bad_names_are_clear_errors(name, fragment):
    with pytest.raises(released.ReleasedNameError, match=fragment):
        released.parse_name(name)


def test_every_table18_checkpoint_resolves(base_config):
    """All 29 released names: the arch is open_clip's (Table 25's arch_id), exact samples seen
    and global batch come from Table 18, data is LAION-<size>."""
    hp = load_hparams()
    arch = table25()
    assert len(hp) == 29
    for row in hp.itertuples():
        ckpt = released.resolve(base_config, f"/x/{row.checkpoint}")
        assert ckpt.model == arch.loc[arch["model"] == row.model, "arch_id"].item()
        assert ckpt.label == row.model  # "ViT-B/32" as in the published tables
        assert ckpt.data == row.data
        assert ckpt.samples_seen == round(row.samples_seen_exact) and ckpt.samples_seen_source == "table18"
        assert ckpt.batch_size == row.global_bs and ckpt.table18
        assert ckpt.name.samples_label == row.samples_seen
        assert ckpt.wildcards == {"source": "released", "model": ckpt.model, "scale": ckpt.name.data_token,
                                  "samples": row.samples_seen, "epoch": "final"}


def test_paper_config_maps_to_its_own_models(paper_config):
    ckpt = released.resolve(paper_config, "Model-L-14_Data-80M_Samples-3B_lr-1e-3_bs-88k.pt")
    assert ckpt.model == "ViT-L-14" and ckpt.label == "ViT-L/14"


def test_names_outside_table18_use_the_label(base_config):
    ckpt = released.resolve(base_config, "Model-B-32_Data-2B_Samples-50B_lr-2e-3_bs-32k.pt")
    assert not ckpt.table18 and ckpt.samples_seen_source == "name"
    assert ckpt.samples_seen == 50_000_000_000 and ckpt.batch_size == 32_000


def test_model_mapping_rules(base_config):
    cfg = copy.deepcopy(base_config)
    # a config model name as token
    assert released.resolve_model(cfg, "vit-xs") == "vit-xs"
    # unknown token: error names the fix
    with pytest.raises(released.ReleasedNameError, match=r"evaluate.released.models: \{XS: <model"):
        released.resolve_model(cfg, "XS")
    cfg["evaluate"]["released"] = {"models": {"XS": "vit-xs"}, "data_prefix": "world"}
    ckpt = released.resolve(cfg, "Model-XS_Data-12k_Samples-16k_lr-2e-3_bs-256.pt")
    assert (ckpt.model, ckpt.label, ckpt.data, ckpt.samples_seen) == ("vit-xs", "ViT-XS", "world-12k", 16000)
    assert ckpt.name.data_size == 12000
    cfg["evaluate"]["released"]["models"] = {"XS": "no-such-model"}
    with pytest.raises(released.ReleasedNameError, match="no-such-model"):
        released.resolve_model(cfg, "XS")
    # other open_clip architectures work by their own name
    assert released.resolve_model(base_config, "RN50") == "RN50"


def test_files_and_dir(tmp_path, base_config):
    cfg = copy.deepcopy(base_config)
    names = ["Model-B-32_Data-400M_Samples-13B_lr-1e-3_bs-86k.pt", "Model-B-16_Data-2B_Samples-3B_lr-1e-3_bs-88k.pt"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    cfg["evaluate"]["released"] = {"dir": str(tmp_path)}
    found = released.checkpoints(cfg)
    assert sorted(c.file for c in found) == sorted(names)
    assert all(Path(c.path).parent == tmp_path for c in found)
    cfg["evaluate"]["released"] = {"dir": str(tmp_path), "files": [names[0]]}
    assert [c.path for c in released.checkpoints(cfg)] == [str(tmp_path / names[0])]
    assert released.find(cfg, "ViT-B-32", "400M", "13B").file == names[0]
    with pytest.raises(released.ReleasedNameError, match="no released checkpoint"):
        released.find(cfg, "ViT-B-32", "400M", "34B")
    # same model/data/samples twice: refused (they would share one result folder)
    cfg["evaluate"]["released"] = {"files": [str(tmp_path / names[0]),
                                             str(tmp_path / "Model-B-32_Data-400M_Samples-13B_lr-5e-4_bs-32k.pt")]}
    with pytest.raises(released.ReleasedNameError, match="same model, data and samples"):
        released.checkpoints(cfg)
    # a folder without checkpoints, or that does not exist
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg["evaluate"]["released"] = {"dir": str(empty)}
    with pytest.raises(released.ReleasedNameError, match="no \\*.pt"):
        released.checkpoints(cfg)
    cfg["evaluate"]["released"] = {"dir": str(tmp_path / "nope")}
    with pytest.raises(released.ReleasedNameError, match="evaluate.released.dir: .*/nope does not exist"):
        released.checkpoints(cfg)
    # nothing configured: nothing released
    cfg["evaluate"]["released"] = {}
    assert released.checkpoints(cfg) == []


def test_problems_name_the_key(base_config):
    """What check-config reports: without the filesystem (names, model maps) and with it."""
    cfg = copy.deepcopy(base_config)
    good = "Model-vit-xs_Data-3k_Samples-2k_lr-2e-3_bs-256.pt"
    cfg["evaluate"]["released"] = {"files": [good, "Model-QQ-9_Data-3k_Samples-2k_lr-2e-3_bs-256.pt",
                                             "ViT-B-32.pt"], "models": {}}
    problems = released.problems(cfg)
    assert len(problems) == 2
    assert problems[0].startswith("evaluate.released.files[1]: released checkpoint Model-QQ-9_")
    assert "model 'QQ-9' is not a model of the config" in problems[0]
    assert problems[1].startswith("evaluate.released.files[2]: released checkpoint ViT-B-32.pt: the name")
    cfg["evaluate"]["released"] = {"files": [good, "Model-vit-xs_Data-3k_Samples-2k_lr-1e-3_bs-128.pt"]}
    assert released.problems(cfg) == [
        f"evaluate.released: released checkpoints {good} and Model-vit-xs_Data-3k_Samples-2k_lr-1e-3_bs-128.pt "
        "have the same model, data and samples seen (vit-xs, 3k, 2k); evaluate them in separate result "
        "folders (list only one in evaluate.released)"]
    cfg["evaluate"]["released"] = {"models": {"XS": "vit-xl"}}
    assert released.problems(cfg)[0].startswith("evaluate.released.models.XS: 'vit-xl' is neither")
    cfg["evaluate"]["released"] = {}
    assert released.problems(cfg) == released.path_problems(cfg) == []


def test_path_problems(tmp_path, base_config):
    cfg = copy.deepcopy(base_config)
    good = "Model-vit-xs_Data-3k_Samples-2k_lr-2e-3_bs-256.pt"
    cfg["evaluate"]["released"] = {"dir": str(tmp_path), "files": [good]}
    assert released.path_problems(cfg) == [f"evaluate.released.files[0]: {tmp_path / good} does not exist"]
    (tmp_path / good).write_bytes(b"")
    assert released.path_problems(cfg) == []
    # a dir without a file list: the names found in it are checked here (problems cannot list them)
    (tmp_path / "Model-QQ-9_Data-3k_Samples-2k_lr-2e-3_bs-256.pt").write_bytes(b"")
    cfg["evaluate"]["released"] = {"dir": str(tmp_path)}
    assert released.problems(cfg) == []
    [problem] = released.path_problems(cfg)
    assert problem.startswith(f"evaluate.released.dir: released checkpoint {tmp_path}/Model-QQ-9_")
    cfg["evaluate"]["released"] = {"dir": str(tmp_path / good), "files": [good]}
    assert released.path_problems(cfg) == [f"evaluate.released.dir: {tmp_path / good} is not a directory"]


def test_schema_accepts_released_settings(base_config):
    cfg = copy.deepcopy(base_config)
    cfg["evaluate"]["released"] = {"dir": "ckpts", "models": {"XS": "vit-xs"}, "data_prefix": "world"}
    config_mod.validate(cfg)
    cfg["evaluate"]["released"]["colour"] = "blue"
    with pytest.raises(config_mod.ConfigError, match="colour"):
        config_mod.validate(cfg)


def test_table18_csv_is_the_reference_one():
    df = pd.read_csv(REFERENCE_DIR / "table18_training_hparams_resources.csv")
    names = df.loc[df["model"] != "Total", "checkpoint"]
    for name in names:
        assert released.table18_row(name) is not None
    assert released.table18_row("Model-B-32_Data-2B_Samples-50B_lr-2e-3_bs-32k.pt") is None
