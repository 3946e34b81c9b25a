import json
import os
import tarfile
import tracemalloc

import pandas as pd
import pytest

from clipscale import subsets
from clipscale.shards import ShardWriter, iter_samples


def keys_of(manifest):
    return subsets.subset_keys(manifest)


@pytest.fixture(scope="module")
def index(small_world):
    return subsets.build_index(small_world / "pool")


def test_index_counts_every_shard(index):
    assert len(index) == 6
    assert index["n_samples"].tolist() == [100] * 6
    assert set(index["counted_from"]) == {"parquet"}


def test_nested_exact_and_deterministic(index, tmp_path):
    sizes = {"S": 130, "M": 250, "L": 600}
    manifests = {n: subsets.write_subset(index, n, s, 7, tmp_path / n) for n, s in sizes.items()}
    keys = {n: keys_of(m) for n, m in manifests.items()}
    for n, size in sizes.items():
        assert manifests[n]["n_samples"] == size == len(keys[n]) == len(set(keys[n]))
    assert set(keys["S"]) < set(keys["M"]) < set(keys["L"])
    again = subsets.write_subset(index, "S", 130, 7, tmp_path / "again")
    assert keys_of(again) == keys["S"]
    others = [keys_of(subsets.write_subset(index, "S", 130, seed, tmp_path / f"s{seed}"))
              for seed in (8, 9, 10)]
    assert any(k != keys["S"] for k in others)  # another seed, another subset
    # the manifest's brace URL is what open_clip's --train-data takes
    import braceexpand

    urls = list(braceexpand.braceexpand(manifests["M"]["url"]))
    assert len(urls) == manifests["M"]["n_shards"] == 3
    assert all(os.path.exists(u) for u in urls)


def test_whole_shards_are_linked_not_copied(index, tmp_path):
    m = subsets.write_subset(index, "M", 250, 0, tmp_path / "M")
    files = sorted((tmp_path / "M" / "shards").iterdir())
    links = [f for f in files if f.is_symlink()]
    assert len(links) == 2 and len(files) == 3  # 2 whole shards + 1 cut shard
    cut = [f for f in files if not f.is_symlink()][0]
    assert sum(1 for _ in iter_samples(cut)) == 50
    assert json.loads((tmp_path / "M" / "manifest.json").read_text())["n_samples"] == 250


def test_too_large_subset_is_a_clear_error(index, tmp_path):
    with pytest.raises(subsets.PoolError, match="pool has only 600"):
        subsets.write_subset(index, "XL", 601, 0, tmp_path / "XL")


def test_user_pool_without_parquet_and_a_truncated_shard(tmp_path):
    pool = tmp_path / "pool"
    for s in range(3):
        with ShardWriter(pool / f"{s:05d}.tar") as w:
            for i in range(10):
                w.write(f"{s:05d}{i:04d}", {"jpg": b"x" * 100, "txt": "a caption"})
    data = (pool / "00002.tar").read_bytes()
    (pool / "00002.tar").write_bytes(data[: len(data) // 2])  # cut mid-way
    index = subsets.build_index(pool)
    assert index["counted_from"].tolist() == ["tar"] * 3
    assert index["n_samples"].tolist()[:2] == [10, 10]
    assert 0 < index["n_samples"].iloc[2] < 10 and index["skipped"].iloc[2] >= 1
    with pytest.raises(subsets.PoolError, match="no .tar shards"):
        subsets.build_index(tmp_path)
    with pytest.raises(subsets.PoolError, match="not found"):
        subsets.build_index(tmp_path / "nope")


def test_subsetting_streams(tmp_path):
    """Memory stays flat: cutting a shard of 40 MB holds one sample at a time."""
    pool = tmp_path / "pool"
    blob = os.urandom(400_000)
    for s in range(2):
        with ShardWriter(pool / f"{s:05d}.tar") as w:
            for i in range(100):
                w.write(f"{s:05d}{i:04d}", {"jpg": blob, "txt": "t"})
    index = subsets.build_index(pool)
    tracemalloc.start()
    subsets.write_subset(index, "S", 150, 0, tmp_path / "S")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 5_000_000, f"peak {peak / 1e6:.1f} MB while cutting a 40 MB shard"
    with tarfile.open(tmp_path / "S" / "shards" / "000001.tar") as tar:
        assert len([m for m in tar if m.name.endswith(".jpg")]) == 50
