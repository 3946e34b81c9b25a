"""Mode embedding of the dedup step: CLIP image features compared by cosine similarity (faiss)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from clipscale import checks
from clipscale import config as config_mod
from clipscale import dedup
from clipscale.dedup import embedding

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def _features(path: Path, name: str, keys: list[str], feats: np.ndarray) -> Path:
    feats = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    np.savez(path, key=np.array(keys), shard=np.array([f"{name}.tar"] * len(keys)),
             features=feats.astype(np.float16), report=np.array(json.dumps({"name": name})))
    return path


def test_range_search_finds_exactly_the_pairs_at_or_above_the_threshold(tmp_path):
    """faiss's search gives the pairs a brute-force cosine gives (float16 features), every one
    with its similarity, mode embedding and no hash; a pool file of other dimensions is named."""
    rng = np.random.default_rng(0)
    test = rng.normal(size=(40, 16))
    pool = np.concatenate([test[:10] + 0.05 * rng.normal(size=(10, 16)), rng.normal(size=(300, 16))])
    t = _features(tmp_path / "t.npz", "shapes", [f"t{i}" for i in range(40)], test)
    p1 = _features(tmp_path / "p1.npz", "g0", [f"p{i}" for i in range(200)], pool[:200])
    p2 = _features(tmp_path / "p2.npz", "g1", [f"p{i}" for i in range(200, 310)], pool[200:])
    out = tmp_path / "pairs.parquet"
    report = dedup.match_embeddings([t], [p1, p2], 0.9, out)
    pairs = pd.read_parquet(out)
    a = np.load(t)["features"].astype(np.float32)
    b = np.concatenate([np.load(p)["features"].astype(np.float32) for p in (p1, p2)])
    sims = b @ a.T
    expected = {(f"t{j}", f"p{i}") for i, j in zip(*np.nonzero(sims >= 0.9))}
    assert set(zip(pairs["test_key"], pairs["pool_key"])) == expected and len(expected) >= 10
    assert report["n_pairs"] == len(pairs) and report["n_pool"] == 310
    assert (pairs["mode"] == "embedding").all() and (pairs["distance"] == 0).all()
    assert pairs["test_phash"].isna().all() and (pairs["similarity"] >= 0.9 - 1e-6).all()
    assert set(pairs["dataset"]) == {"shapes"} and set(pairs["pool_shard"]) <= {"g0.tar", "g1.tar"}
    other = _features(tmp_path / "p3.npz", "g2", ["q"], rng.normal(size=(1, 8)))
    with pytest.raises(dedup.DedupError, match="p3.npz: features of 8 dimensions, the test sets' have"):
        dedup.match_embeddings([t], [other], 0.9, out)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[dict, Path]:
    """The CI config's tiny ViT (random weights) saved as a user's open_clip checkpoint."""
    import open_clip
    import torch

    from clipscale import models

    cfg = yaml.safe_load((REPO / "tests" / "data" / "ci.yaml").read_text())
    models.register(cfg)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("encoder") / "vit-xs.pt"
    torch.save({"epoch": 1, "state_dict": open_clip.create_model("vit-xs").state_dict()}, path)
    return cfg, path


def _copy_shard(src: Path, out: Path, keep: int, corrupt: str) -> list[str]:
    """A pool shard of the first ``keep`` samples of a test shard (the same image bytes) under
    pool keys, and one sample whose .jpg is not an image; returns the copied test keys."""
    copied = []
    with tarfile.open(src) as tin, tarfile.open(out, "w") as tout:
        members = [m for m in tin.getmembers() if m.isfile()]
        keys = sorted({m.name.split(".", 1)[0] for m in members})[:keep]
        for m in members:
            key, ext = m.name.split(".", 1)
            if key in keys:
                info = tarfile.TarInfo(f"pool_{key}.{ext}")
                data = tin.extractfile(m).read()
                info.size = len(data)
                tout.addfile(info, io.BytesIO(data))
        copied = keys
        for ext, data in (("jpg", b"not a jpeg"), ("txt", b"a caption")):
            info = tarfile.TarInfo(f"{corrupt}.{ext}")
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))
    return copied


def test_copies_of_test_images_are_found_and_a_corrupt_image_is_counted(small_world, checkpoint, tmp_path):
    """Encoding a pool shard that holds copies of test images and a corrupt one: the copies
    match their test images at cosine ~1, the corrupt image is counted, not fatal."""
    cfg, path = checkpoint
    tars = dedup.downstream_test_shards(small_world / "downstream" / "shapes", "test")
    enc = dedup.load_encoder(cfg, "vit-xs", path, "cpu")
    test = dedup.embed_shards(enc, tars, tmp_path / "shapes.npz", "shapes", batch_size=16)
    copied = _copy_shard(Path(tars[0]), tmp_path / "pool.tar", 5, "broken")
    pool = dedup.embed_shards(enc, [tmp_path / "pool.tar"], tmp_path / "pool.npz", "g0")
    assert test["n_embedded"] == test["n_samples"] > 5 and test["dim"] == 32
    assert (pool["n_samples"], pool["n_embedded"], pool["skipped"]["total"]) == (6, 5, 1)
    assert "broken" in json.dumps(pool["skipped"]["examples"])
    feats = dedup.read_embeddings(tmp_path / "shapes.npz")["features"]
    assert np.allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-2)
    dedup.match_embeddings([tmp_path / "shapes.npz"], [tmp_path / "pool.npz"], 0.999, tmp_path / "m.parquet")
    pairs = pd.read_parquet(tmp_path / "m.parquet")
    found = set(zip(pairs["test_key"], pairs["pool_key"]))
    assert {(k, f"pool_{k}") for k in copied} <= found


def test_the_encoder_is_the_grids_largest_run_or_a_users_checkpoint():
    cfg = config_mod.load(REPO / "tests" / "data" / "ci.yaml")
    cfg["dedup"]["modes"] = ["phash", "embedding"]
    enc = dedup.encoder(config_mod.validate(cfg))
    assert (enc["model"], enc["run"].name) == ("vit-s", "vit-s/3k/4k")
    cfg["dedup"]["embedding"] = {"run": {"model": "vit-xs", "scale": "1k", "samples_seen": "2k"}}
    assert dedup.encoder(config_mod.validate(cfg))["run"].name == "vit-xs/1k/2k"
    cfg["dedup"]["embedding"] = {"checkpoint": "elsewhere.pt"}
    with pytest.raises(config_mod.ConfigError, match="dedup.embedding.checkpoint needs dedup.embedding.model"):
        checks.validate(cfg)
    cfg["dedup"]["embedding"] = {"run": {"model": "vit-xs", "scale": "1k", "samples_seen": "9k"}}
    with pytest.raises(config_mod.ConfigError, match="dedup.embedding.run: vit-xs/1k/9k is not a run of the grid"):
        checks.validate(cfg)
    # subsets filtered by the features of a run trained on them: a loop, refused before any job
    cfg["dedup"]["embedding"] = {}
    cfg["dedup"]["remove_duplicates"] = ["phash", "embedding"]
    with pytest.raises(config_mod.ConfigError, match="dedup.remove_duplicates: removing mode embedding's matches"):
        checks.validate(cfg)


@pytest.mark.slow
def test_the_pipeline_reports_mode_embedding_beside_phash(checkpoint, tmp_path):
    """The CI world's dedup with a user's checkpoint (no training): the pool and the test sets
    are encoded, their pairs join pHash's in matches.parquet, the overlap table has the mode's
    columns, the planted recall its section, and the paper's pHash columns are those of a run
    without the mode."""
    _, path = checkpoint
    extra = tmp_path / "embedding.yaml"
    extra.write_text(yaml.safe_dump({"dedup": {"modes": ["phash", "embedding"],
                                               "embedding": {"checkpoint": str(path), "model": "vit-xs",
                                                             "threshold": 0.99, "device": "cpu"}}}))
    targets = ["results/dedup/overlap.csv", "results/dedup/planted_recall.json"]
    proc = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--cores", "2", *targets,
                           "--configfile", str(REPO / "tests" / "data" / "ci.yaml"), str(extra)],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    for rule in ("dedup_embed_pool", "dedup_embed_downstream", "dedup_match_embedding"):
        assert f"rule {rule}" in log
    assert "rule train" not in log  # a user's checkpoint: nothing to train
    matches = dedup.read_matches(tmp_path / "results" / "dedup" / "matches.parquet")
    emb = matches[matches["mode"] == "embedding"]
    assert len(emb) and (emb["similarity"] >= 0.99 - 1e-6).all()
    assert matches.loc[matches["mode"] == "phash", "similarity"].isna().all()
    overlap = pd.read_csv(tmp_path / "results" / "dedup" / "overlap.csv")
    assert {"overlap_pct_embedding", "n_matched_embedding", "overlap_pct_any"} <= set(overlap.columns)
    recall = json.loads((tmp_path / "results" / "dedup" / "planted_recall.json").read_text())
    assert "embedding" in recall["modes"] and recall["modes"]["embedding"]["n_pairs"] == len(emb)
    # the paper's columns count pHash's pairs only: those of the same pairs without the mode
    phash = matches[matches["mode"] == "phash"]
    tests = sorted((tmp_path / "results" / "dedup" / "hashes" / "downstream").glob("*.parquet"))
    alone = dedup.overlap_table(phash, tests, radius=4)
    pd.testing.assert_frame_equal(overlap[alone.columns].sort_values("dataset", ignore_index=True),
                                  alone.sort_values("dataset", ignore_index=True), check_dtype=False)
