"""A pool written by img2dataset itself (issue 31): what every user's pool is.

Images are served from a local HTTP server: the small world's pool images and real photographs
shipped in wheels (scikit-image's data and its LFW faces, scikit-learn's two photos, matplotlib's
Grace Hopper), with captions, and some URLs that answer 404. img2dataset downloads them into
webdataset shards (its NNNNN.tar, NNNNN.parquet, NNNNN_stats.json; its own keys, sample order
and json sidecars). ``pool.source`` then points at that folder and Snakemake indexes it, cuts a
subset, runs the dedup against the world's test sets, trains one tiny model and evaluates it.
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from clipscale.shards import iter_samples
from clipscale.subsets import build_index, pool_problems

from conftest import CI_CONFIG, run_snakemake, scratch

# img2dataset's download and the DAG take minutes on a loaded 2-core machine (CLIPSCALE_FAST skips
# them; the index's reading of failed downloads is unit-tested in test_subsets.py)
pytestmark = pytest.mark.slow

IMG2DATASET = Path(sys.executable).with_name("img2dataset")  # requirements.txt installs it
N_MISSING = 30  # URLs that answer 404
# 5 shards: img2dataset's multiprocessing pool replaces its worker process after 5 shards, a new
# process and its imports (~20 s on a loaded 2-core machine)
PER_SHARD = 200


def wheel_photos() -> list[tuple[str, bytes, str]]:
    """(name, encoded bytes, caption) of the real photographs shipped in the venv's wheels."""
    import matplotlib
    import skimage
    import sklearn

    photos = []
    skdata = Path(skimage.__file__).parent / "data"
    for f in sorted(skdata.glob("*.png")) + sorted(skdata.glob("*.jpg")):
        photos.append((f.name, f.read_bytes(), f"a picture of {f.stem.replace('_', ' ')}"))
    for i, face in enumerate(np.load(skdata / "lfw_subset.npy")):  # 200 faces, 25x25 in [0, 1]
        buf = io.BytesIO()
        Image.fromarray((face * 255).astype(np.uint8)).save(buf, format="PNG")
        photos.append((f"lfw_{i:03d}.png", buf.getvalue(), "a photo of a face"))
    for f in sorted((Path(sklearn.__file__).parent / "datasets" / "images").glob("*.jpg")):
        photos.append((f.name, f.read_bytes(), f"a photo of {f.stem}"))
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    photos.append((hopper.name, hopper.read_bytes(), "a portrait of grace hopper"))
    return photos


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    # img2dataset's 8 threads connect at once: with the default backlog of 5 a loaded machine
    # drops connections, whose retries then stall a shard for tens of seconds
    request_queue_size = 128
    daemon_threads = True


@pytest.fixture(scope="module")
def img2dataset_pool(request, small_world, tmp_path_factory):
    """img2dataset's output folder for the world's 600 pool images, ~230 photographs and 30
    URLs that 404; with the expected successes and failures."""
    assert IMG2DATASET.exists(), f"{IMG2DATASET} not found: run scripts/setup.sh (requirements.txt)"
    with scratch(request, tmp_path_factory, "img2dataset") as root:
        www = root / "www"
        www.mkdir()
        rows = []
        for shard in sorted((small_world / "pool").glob("*.tar")):
            for key, files in iter_samples(shard):
                (www / f"world_{key}.jpg").write_bytes(files["jpg"])
                rows.append((f"world_{key}.jpg", files["txt"].decode()))
        for name, data, caption in wheel_photos():
            (www / name).write_bytes(data)
            rows.append((name, caption))
        n_served = len(rows)
        rows += [(f"gone/{i}.jpg", f"a picture that is gone {i}") for i in range(N_MISSING)]
        order = np.random.default_rng(0).permutation(len(rows))  # the 404s spread over the shards

        server = _Server(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(www)))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            base = f"http://127.0.0.1:{server.server_address[1]}"
            urls = pd.DataFrame([{"url": f"{base}/{rows[i][0]}", "caption": rows[i][1]} for i in order])
            urls.to_parquet(root / "urls.parquet", index=False)
            pool = root / "pool"
            cmd = [str(IMG2DATASET), "--url_list", str(root / "urls.parquet"), "--input_format", "parquet",
                   "--url_col", "url", "--caption_col", "caption", "--output_format", "webdataset",
                   "--output_folder", str(pool), "--image_size", "32", "--resize_mode", "center_crop",
                   "--number_sample_per_shard", str(PER_SHARD), "--processes_count", "1",
                   "--thread_count", "8", "--distributor", "multiprocessing", "--retries", "0",
                   "--enable_wandb", "False"]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=root,
                                  env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
            assert proc.returncode == 0, proc.stderr[-4000:]
        finally:
            server.shutdown()
            server.server_close()
        yield {"pool": pool, "served": n_served, "missing": N_MISSING, "total": len(rows)}


def test_img2dataset_wrote_its_own_layout(img2dataset_pool):
    """What the rest relies on is img2dataset's layout, not the world writer's."""
    pool = img2dataset_pool["pool"]
    n_shards = -(-img2dataset_pool["total"] // PER_SHARD)
    assert sorted(p.name for p in pool.glob("*.tar")) == [f"{i:05d}.tar" for i in range(n_shards)]
    stats = [json.loads((pool / f"{i:05d}_stats.json").read_text()) for i in range(n_shards)]
    assert sum(s["successes"] for s in stats) == img2dataset_pool["served"]
    assert sum(s["failed_to_download"] for s in stats) == img2dataset_pool["missing"]
    meta = pd.read_parquet(pool / "00000.parquet")
    assert {"key", "status", "error_message", "caption", "url"} <= set(meta.columns)
    with tarfile.open(pool / "00000.tar") as tar:
        exts = {m.name.split(".", 1)[1] for m in tar.getmembers()}
    assert exts == {"jpg", "txt", "json"}


def test_index_counts_404s_as_missing_not_as_problems(img2dataset_pool, in_tmp):
    index = build_index(img2dataset_pool["pool"])
    assert index["n_samples"].sum() == index["n_readable"].sum() == img2dataset_pool["served"]
    assert index["n_parquet"].sum() == img2dataset_pool["served"]
    assert index["n_missing"].sum() == img2dataset_pool["missing"]
    assert pool_problems(index) == []  # failed downloads are not errors
    reasons = [r for r in index["missing_reasons"] if r]
    assert reasons and all("404" in r for r in reasons)


def test_snakemake_indexes_subsets_dedups_trains_and_evaluates_an_img2dataset_pool(
        img2dataset_pool, small_world, tmp_path):
    cfg = yaml.safe_load(CI_CONFIG.read_text())
    cfg.update({
        "pool": {"source": str(img2dataset_pool["pool"]), "name": "i2d"},
        "scales": {"s": 500},
        "grid": {"models": ["vit-xs"], "scales": ["s"], "samples_seen": ["1k"]},
        "dedup": {"radius": 4, "shards_per_job": 3, "remove_duplicates": False},
        "finetune": {"enabled": False},
        "downstream": {
            "shapes": {"path": str(small_world / "downstream" / "shapes"),
                       "tasks": ["zeroshot_classification"], "group": "main"},
            "digits": {"path": str(small_world / "downstream" / "digits"),
                       "tasks": ["zeroshot_classification"], "group": "vtab+"}}})
    config = tmp_path / "img2dataset.yaml"
    config.write_text(yaml.safe_dump(cfg))
    results = "results/results/results.parquet"
    targets = ["results/data/pool_index.parquet", "results/data/subsets/s/manifest.json",
               "results/dedup/overlap.csv", "results/dedup/contact_sheet.png", results]
    run_snakemake(tmp_path, *targets, configfile=config)

    index = pd.read_parquet(tmp_path / "results/data/pool_index.parquet")
    assert index["n_samples"].sum() == img2dataset_pool["served"]
    assert index["n_missing"].sum() == img2dataset_pool["missing"]
    log = (tmp_path / "results/logs/index_pool/pool.log").read_text()
    assert f"{img2dataset_pool['missing']} samples missing" in log and "404" in log
    assert "WARNING" not in log  # failed downloads are reported, not warned of as broken shards

    manifest = json.loads((tmp_path / "results/data/subsets/s/manifest.json").read_text())
    assert manifest["n_samples"] == 500
    report = json.loads((tmp_path / "results/dedup/hash_report.json").read_text())
    assert report["pool"]["n_hashed"] == img2dataset_pool["served"]
    # the dedup finds the world's planted copies of test images under img2dataset's keys (its
    # parquet's url names the world's key), and nothing else
    pool = img2dataset_pool["pool"]
    meta = pd.concat(pd.read_parquet(p, columns=["key", "url"]) for p in sorted(pool.glob("*.parquet")))
    world_key = {k: u.rsplit("/world_", 1)[1].removesuffix(".jpg")
                 for k, u in zip(meta["key"], meta["url"]) if "/world_" in u}
    planted = pd.read_csv(small_world / "planted_duplicates.csv", dtype=str)
    planted = set(zip(planted["dataset"], planted["test_key"], planted["pool_key"]))
    matches = pd.read_parquet(tmp_path / "results/dedup/matches.parquet")
    found = set(zip(matches["dataset"], matches["test_key"], matches["pool_key"].map(world_key)))
    assert found and found <= planted
    sheet_log = (tmp_path / "results/logs/dedup_contact_sheet/contact_sheet.log").read_text()
    assert "not found" not in sheet_log  # the pairs' images, read from img2dataset's shards

    table = pd.read_parquet(tmp_path / results)
    ours = table[table["dataset"].isin(["shapes", "digits"])]
    assert set(ours["dataset"]) == {"shapes", "digits"} and ours["value"].notna().all()
