"""The paper's published numbers as a tidy results table (clipscale.reference)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from clipscale import cli, reference
from clipscale.table import RESULTS_COLUMNS, read_table


@pytest.fixture(scope="module")
def published() -> pd.DataFrame:
    return reference.load_published()


def row(df, **where):
    mask = np.ones(len(df), dtype=bool)
    for k, v in where.items():
        mask &= df[k].to_numpy() == v
    assert mask.sum() == 1, f"{mask.sum()} rows match {where}"
    return df[mask].iloc[0]


def test_shape_and_sources(published):
    assert list(published.columns[: len(RESULTS_COLUMNS)]) == RESULTS_COLUMNS
    # 7 zero-shot metrics x 29 OpenCLIP runs, 7 x 3 OpenAI models, Table 5: 70 rows, and the
    # fine-tuning Tables 6-9 as printed: 10 models x 9 sets (zero-shot; ImageNet's are Table 19's
    # and OpenAI's reference's), 10 x 8 (fine-tuned), 10 x 9 (patched), 19 x 6 (ImageNet)
    finetune = (10 * 9 - 10) + 10 * 8 + 10 * 9 + 19 * 6
    assert len(published) == 7 * 29 + 7 * 3 + 70 + finetune
    counts = published.groupby("source").size().to_dict()
    # OpenAI: 3 of the 10 models of Tables 6-8, 6 of the 19 rows of Table 9
    openai_ft = 3 * 8 + 3 * 8 + 3 * 9 + 6 * 6
    assert counts == {"published": 7 * 29 + 7 * 7 + finetune - openai_ft, "openai": 7 * 3 + 7 * 3 + openai_ft}
    assert published["final"].all()
    assert published["epoch"].isna().all()


def test_metric_mapping(published):
    combos = set(zip(published["task"], published["dataset"], published["metric"]))
    assert ("zeroshot_classification", "imagenet1k", "acc1") in combos
    assert ("zeroshot_classification", "imagenet_robustness", "acc1") in combos
    assert ("zeroshot_retrieval", "mscoco_captions", "image_retrieval_recall@5") in combos
    assert ("zeroshot_retrieval", "flickr30k", "text_retrieval_recall@5") in combos
    assert ("linear_probe", "imagenet1k", "lp_acc1_10shot") in combos
    assert ("linear_probe", "cifar100", "lp_acc1_full") in combos
    assert ("linear_probe", "vtab", "lp_acc1") in combos


def test_exact_compute_axis(published):
    r = row(published, source="published", model="ViT-H/14", dataset="imagenet1k", metric="acc1")
    assert r["samples_seen"] == 34_725_395_968  # exact, not the nominal 34B
    assert r["samples_seen_label"] == "34B"
    assert r["gmac_per_sample"] == pytest.approx(190.97)
    assert r["total_gmac"] == pytest.approx(190.97 * 34_725_395_968, rel=1e-12)
    assert r["value"] == pytest.approx(77.97)
    assert r["error"] == pytest.approx(0.2203)
    assert r["checkpoint"] == "Model-H-14_Data-2B_Samples-34B_lr-5e-4_bs-79k.pt"
    assert r["data_size"] == 2_000_000_000
    r = row(published, source="published", model="ViT-B/32", data="LAION-80M", samples_seen_label="3B",
            dataset="mscoco_captions", metric="image_retrieval_recall@5")
    assert r["samples_seen"] == 2_560_013_280
    assert r["error"] == pytest.approx(0.4896)


def test_openai_rows(published):
    r = row(published, source="openai", model="ViT-L/14", dataset="imagenet1k", metric="acc1")
    assert r["arch_id"] == "ViT-L-14"
    assert r["data"] == "CLIP-WIT"
    assert r["samples_seen"] == 12_800_000_000
    assert r["samples_seen_label"] == "12.8B"
    assert r["value"] == pytest.approx(75.49)
    assert r["checkpoint"] == "openai/ViT-L-14"


def test_linear_probe_rows(published):
    r = row(published, source="published", model="ViT-B/32", data="LAION-400M", dataset="imagenet1k",
            metric="lp_acc1_10shot")
    assert r["task"] == "linear_probe"
    assert r["value"] == pytest.approx(59.36)
    assert r["samples_seen"] == 13_216_000_000
    # the checkpoint comes from Table 18 (same model, data, samples seen)
    assert r["checkpoint"] == "Model-B-32_Data-400M_Samples-13B_lr-1e-3_bs-86k.pt"
    r = row(published, source="openai", model="ViT-B/16", dataset="cifar100", metric="lp_acc1_full")
    assert r["value"] == pytest.approx(82.4)


def test_finetuning_rows_sit_at_their_pretraining_compute(published):
    """Tables 6-9 (Sec. 4.4): zero-shot, jointly fine-tuned and patched top-1 on the eight tasks,
    and ImageNet fine-tuning with its robustness sets, each at the compute of the pre-training
    run it started from (Table 18's exact samples seen; OpenAI's 12.8B)."""
    ft = published[published["task"].isin(["finetune", "patching"])]
    assert set(ft["dataset"]) == {"cars", "dtd", "eurosat", "gtsrb", "mnist", "resisc45", "sun397", "svhn",
                                  "imagenet1k", "imagenet-real", "imagenetv2", "imagenet-a", "imagenet-r",
                                  "imagenet_sketch"}
    r = row(published, source="published", model="ViT-g/14", dataset="cars", metric="ft_acc1")
    assert (r["task"], r["samples_seen"], r["checkpoint"]) == (
        "finetune", 12_208_147_020, "Model-g-14_Data-2B_Samples-13B_lr-5e-4_bs-64k.pt")
    assert r["total_gmac"] == pytest.approx(290.74 * 12_208_147_020, rel=1e-12)
    r = row(published, source="openai", model="ViT-B/32", dataset="imagenet1k", metric="patched_acc1")
    assert (r["task"], r["value"], r["samples_seen"]) == ("patching", pytest.approx(62.36), 12_800_000_000)
    r = row(published, source="published", model="ViT-H/14", dataset="imagenet-a",
            metric="imagenet_ft_acc1_336px_in12k")
    assert r["value"] == pytest.approx(75.68) and r["samples_seen_label"] == "34B"
    r = row(published, source="published", model="ViT-L/14", data="LAION-400M", dataset="svhn", metric="acc1")
    assert r["task"] == "zeroshot_classification"
    # ImageNet zero-shot stays one row per run (Table 19's 75.2, not Table 6's 75.26)
    r = row(published, source="published", model="ViT-L/14", data="LAION-2B", samples_seen_label="34B",
            dataset="imagenet1k", metric="acc1")
    assert r["value"] == pytest.approx(75.2)


def test_a_finetuning_row_without_its_pretraining_run_is_named(ref_copy):
    path = ref_copy / reference.FINETUNE_JOINT
    path.write_text(path.read_text().replace("ViT-g/14,13B,LAION-2B", "ViT-g/14,99B,LAION-2B", 1))
    with pytest.raises(reference.ReferenceError, match=r"table07.*no pre-training run ViT-g/14 LAION-2B 99B"):
        reference.load_finetune(ref_copy)


def test_side_tables():
    arch = reference.load_architectures()
    assert set(arch["arch_id"]) >= {"ViT-B-32", "ViT-H-14", "ViT-G-14"}
    g = reference.gmac_lookup()
    assert g["ViT-H/14"] == g["ViT-H-14"] == pytest.approx(190.97)
    hp = reference.load_hparams()
    assert len(hp) == 29 and "Total" not in set(hp["model"])
    ov = reference.load_overlap()
    assert list(ov.columns) == ["dataset", "overlap_pct"]
    assert ov.set_index("dataset").loc["ImageNet", "overlap_pct"] == pytest.approx(1.02)


def test_cli_writes_valid_tables(tmp_path, published):
    pq, csv = tmp_path / "p.parquet", tmp_path / "p.csv"
    assert cli.main(["published-table", "--out", str(pq), str(csv)]) == 0
    a, b = read_table(pq), read_table(csv)
    assert len(a) == len(b) == len(published)
    pd.testing.assert_frame_equal(a[RESULTS_COLUMNS], b[RESULTS_COLUMNS], check_dtype=False)


@pytest.fixture
def ref_copy(tmp_path):
    out = tmp_path / "ref"
    shutil.copytree(reference.REFERENCE_DIR, out)
    return out


def test_bad_reference_is_named(ref_copy, capsys):
    path = ref_copy / reference.ZEROSHOT
    df = pd.read_csv(path)
    df.loc[3, "error"] = 12.0  # no longer 100 - value
    df.to_csv(path, index=False)
    with pytest.raises(reference.ReferenceError, match=r"zeroshot_tables_long.csv: error != 100 - value \(lines 5\)"):
        reference.load_published(ref_copy)
    assert cli.main(["published-table", "--out", str(ref_copy / "x.parquet"), "--reference-dir", str(ref_copy)]) == 1
    assert "zeroshot_tables_long.csv" in capsys.readouterr().err


def test_unknown_metric_and_missing_column(ref_copy):
    path = ref_copy / reference.OPENAI
    df = pd.read_csv(path)
    df.loc[0, "task"] = "imagenet_sketch"
    df.to_csv(path, index=False)
    with pytest.raises(reference.ReferenceError, match="unknown tasks.*imagenet_sketch"):
        reference.load_openai(ref_copy)
    path = ref_copy / reference.LINEAR_PROBE
    pd.read_csv(path).drop(columns="top1").to_csv(path, index=False)
    with pytest.raises(reference.ReferenceError, match=r"table05_linear_probe.csv: missing columns \['top1'\]"):
        reference.load_linear_probe(ref_copy)
    (ref_copy / reference.ARCHITECTURES).unlink()
    with pytest.raises(reference.ReferenceError, match="not found"):
        reference.load_architectures(ref_copy)
