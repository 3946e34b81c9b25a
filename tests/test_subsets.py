import gzip
import io
import json
import os
import runpy
import shutil
import subprocess
import sys
import tarfile
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import braceexpand
import pandas as pd
import pytest

from clipscale import subsets
from clipscale.shards import ShardWriter, is_complete, iter_samples

REPO = Path(__file__).resolve().parents[1]


def keys_of(manifest):
    return subsets.subset_keys(manifest)


@pytest.fixture(scope="module")
def index(small_world):
    return subsets.build_index(small_world / "pool")


def test_index_counts_every_shard(index):
    assert len(index) == 6
    assert index["n_samples"].tolist() == [100] * 6
    assert index["n_readable"].tolist() == index["n_parquet"].tolist() == [100] * 6
    assert set(index["problem"]) == {""} and index["skipped"].sum() == 0
    assert subsets.pool_problems(index) == []


def test_nested_exact_and_deterministic(index, in_tmp):
    sizes = {"S": 130, "M": 250, "L": 600}
    manifests = {n: subsets.write_subset(index, n, s, 7, n) for n, s in sizes.items()}
    keys = {n: keys_of(m) for n, m in manifests.items()}
    for n, size in sizes.items():
        assert manifests[n]["n_samples"] == size == len(keys[n]) == len(set(keys[n]))
    assert set(keys["S"]) < set(keys["M"]) < set(keys["L"])
    again = subsets.write_subset(index, "S", 130, 7, "again")
    assert keys_of(again) == keys["S"]
    others = [keys_of(subsets.write_subset(index, "S", 130, seed, f"s{seed}"))
              for seed in (8, 9, 10)]
    assert any(k != keys["S"] for k in others)  # another seed, another subset
    # the manifest's brace URL is what open_clip's --train-data takes
    import braceexpand

    urls = list(braceexpand.braceexpand(manifests["M"]["url"]))
    assert len(urls) == manifests["M"]["n_shards"] == 3
    assert all(os.path.exists(u) for u in urls)


def test_whole_shards_are_linked_not_copied(index, in_tmp):
    m = subsets.write_subset(index, "M", 250, 0, "M")
    files = sorted((in_tmp / "M" / "shards").iterdir())
    links = [f for f in files if f.is_symlink()]
    assert len(links) == 2 and len(files) == 3  # 2 whole shards + 1 cut shard
    cut = [f for f in files if not f.is_symlink()][0]
    assert sum(1 for _ in iter_samples(cut)) == 50
    assert json.loads((in_tmp / "M" / "manifest.json").read_text())["n_samples"] == 250
    assert m["n_shards"] == 3


def test_too_large_subset_is_a_clear_error(index, in_tmp):
    with pytest.raises(subsets.PoolError, match="pool has only 600"):
        subsets.write_subset(index, "XL", 601, 0, "XL")


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


def test_subsetting_streams(in_tmp):
    """Memory stays flat: cutting a shard of 40 MB holds one sample at a time."""
    pool = in_tmp / "pool"
    blob = os.urandom(400_000)
    for s in range(2):
        with ShardWriter(pool / f"{s:05d}.tar") as w:
            for i in range(100):
                w.write(f"{s:05d}{i:04d}", {"jpg": blob, "txt": "t"})
    index = subsets.build_index(pool)
    tracemalloc.start()
    subsets.write_subset(index, "S", 150, 0, "S")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 5_000_000, f"peak {peak / 1e6:.1f} MB while cutting a 40 MB shard"
    with tarfile.open(in_tmp / "S" / "shards" / "000001.tar") as tar:
        assert len([m for m in tar if m.name.endswith(".jpg")]) == 50


# the pool index checks each tar against its parquet (issue 10, defect 3) ------------------------


def readable_through_url(manifest) -> list[str]:
    """Keys of the complete samples open_clip would read: every shard the brace URL names."""
    return [key for url in braceexpand.braceexpand(manifest["url"])
            for key, files in iter_samples(url) if is_complete(files)]


def test_index_verifies_tars_against_their_parquet(small_world, in_tmp):
    """A tar cut to 60% next to its full parquet is indexed with what it really holds, and
    subsets promise only readable samples."""
    pool = in_tmp / "pool"
    pool.mkdir()
    for s in range(3):
        for ext in (".tar", ".parquet"):
            shutil.copy(small_world / "pool" / f"{s:05d}{ext}", pool)
    data = (pool / "00001.tar").read_bytes()
    (pool / "00001.tar").write_bytes(data[: len(data) * 6 // 10])
    meta = pd.read_parquet(pool / "00002.parquet")
    meta.iloc[:90].to_parquet(pool / "00002.parquet", index=False)  # the parquet says fewer
    index = subsets.build_index(pool)
    assert list(index.columns) == subsets.INDEX_COLUMNS
    pd.testing.assert_frame_equal(subsets.build_index(pool, workers=2), index)
    readable = sum(1 for _k, files in iter_samples(pool / "00001.tar") if is_complete(files))
    assert 0 < readable < 100
    assert index["n_parquet"].tolist() == [100, 100, 90]
    assert index["n_readable"].tolist() == index["n_samples"].tolist() == [100, readable, 100]
    assert index["problem"].iloc[0] == ""
    assert "truncated" in index["problem"].iloc[1] and "parquet says 100" in index["problem"].iloc[1]
    assert "parquet says 90" in index["problem"].iloc[2]
    problems = subsets.pool_problems(index)
    assert len(problems) == 2
    assert "00001.tar" in problems[0] and "truncated" in problems[0]
    assert "00002.tar" in problems[1]
    # a subset of the whole pool promises exactly what can be read
    manifest = subsets.write_subset(index, "all", 200 + readable, 0, "all")
    assert manifest["n_samples"] == len(readable_through_url(manifest)) == 200 + readable
    with pytest.raises(subsets.PoolError, match=f"pool has only {200 + readable}"):
        subsets.write_subset(index, "more", 201 + readable, 0, "more")


def test_index_counts_complete_samples_only(in_tmp):
    """Readable = a key with a (non-empty) image and a caption, what open_clip trains on."""
    pool = in_tmp / "pool"
    with ShardWriter(pool / "00000.tar") as w:
        w.write("a", {"jpg": b"x" * 10, "txt": "ok", "json": "{}"})
        w.write("b", {"txt": "no image"})
        w.write("c", {"jpg": b"x" * 10})  # no caption
        w.write("d", {"jpg": b"", "txt": "empty image"})
        w.write("e", {"png": b"x" * 10, "txt": "a png"})
        w.write("f", {"webp": b"x" * 10, "txt": "", "json": "{}"})  # empty caption
        w.write("g", {"jpg": b"x" * 10, "txt": "ok", "json": ""})  # an empty json does not matter
    (pool / "00001.tar").write_bytes(b"this is not a tar" * 100)
    (pool / "00002.tar").write_bytes(b"")
    with ShardWriter(pool / "00003.tar") as w:
        w.write("z", {"jpg": b"x" * 10, "txt": "ok"})
    (pool / "00003.parquet").write_bytes(b"not a parquet")
    index = subsets.build_index(pool)
    assert index["n_readable"].tolist() == [3, 0, 0, 1]
    assert index["skipped"].tolist()[0] == 4
    assert "4 samples without" in index["problem"].iloc[0]
    assert "unreadable tar" in index["problem"].iloc[1]
    assert "unreadable tar" in index["problem"].iloc[2]
    assert "parquet" in index["problem"].iloc[3] and pd.isna(index["n_parquet"].iloc[3])
    assert index["n_parquet"].isna().tolist()[:3] == [True] * 3
    # the cut shard of a subset holds complete samples only, as many as the manifest says
    manifest = subsets.write_subset(index, "s", 2, 0, "s")
    assert sum(e["n_samples"] for e in manifest["shards"]) == 2
    assert len(readable_through_url(manifest)) == 2
    part = [e for e in manifest["shards"] if e["partial"]]
    for e in part:
        assert [k for k, f in iter_samples(e["file"])] == ["a", "e"][: e["n_samples"]]


def test_header_scan_agrees_with_reading_the_tar_at_every_cut(tmp_path):
    """scan_tar counts, from headers, the complete samples iter_samples reads, however the tar is
    cut; the fast header reader and tarfile agree; pax and compressed tars are read too."""
    from clipscale import shards

    shard = tmp_path / "s.tar"
    with ShardWriter(shard) as w:
        for i in range(8):
            files = {"jpg": os.urandom(700 + 300 * i), "txt": f"caption {i}", "json": "{}"}
            if i == 3:
                del files["txt"]
            if i == 5:
                files["jpg"] = b""
            w.write(f"k{i}", files)
    data = shard.read_bytes()

    def read(path):
        return sum(1 for _k, files in iter_samples(path) if is_complete(files))

    full = shards.scan_tar(shard)
    assert (full.n_complete, full.n_incomplete, full.problem) == (6, 2, "")
    slow = shards.TarScan()
    shards._count_samples(shards._tarfile_headers(shard, slow), slow)
    assert slow == full
    with tarfile.open(shard) as tar:
        last = tar.getmembers()[-1]
    marker_end = last.offset_data + -(-last.size // 512) * 512 + 2 * 512  # the rest is padding
    cut = tmp_path / "cut.tar"
    for n in list(range(0, len(data), 101)) + [marker_end - 1, marker_end]:
        cut.write_bytes(data[:n])
        scan = shards.scan_tar(cut)
        assert scan.n_complete == read(cut), n
        assert bool(scan.problem) == (n < marker_end), (n, scan)
    # a long name (pax header) and a gzip-compressed tar: read through tarfile
    with tarfile.open(tmp_path / "pax.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        for ext, payload in (("jpg", b"x" * 10), ("txt", b"a caption")):
            info = tarfile.TarInfo("d" * 150 + f"/key.{ext}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    assert shards.scan_tar(tmp_path / "pax.tar") == shards.TarScan(1, 0, "")
    (tmp_path / "gz.tar").write_bytes(gzip.compress(data))
    assert shards.scan_tar(tmp_path / "gz.tar") == full


def test_index_pool_script_warns_naming_the_shard(in_tmp):
    pool = in_tmp / "pool"
    for s in range(2):
        with ShardWriter(pool / f"{s:05d}.tar") as w:
            for i in range(20):
                w.write(f"{s:05d}{i:04d}", {"jpg": b"x" * 1000, "txt": "a caption"})
    data = (pool / "00001.tar").read_bytes()
    (pool / "00001.tar").write_bytes(data[: len(data) // 3])
    sm = SimpleNamespace(input=[], params=SimpleNamespace(pool=str(pool)),
                         output=["index.parquet"], log=["index.log"], threads=2)
    runpy.run_path(str(REPO / "workflow" / "scripts" / "index_pool.py"),
                   init_globals={"snakemake": sm})
    log_text = Path("index.log").read_text()
    warnings = [line for line in log_text.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "00001.tar" in warnings[0] and "truncated" in warnings[0]
    index = pd.read_parquet("index.parquet")
    assert index["problem"].tolist()[0] == "" and index["n_readable"].iloc[1] < 20


# manifests and links are relative to the working directory (issue 10, defect 5) --------------


def test_copied_workdir_reads_its_own_shards(world_workdir, monkeypatch):
    index = subsets.build_index("results/world/pool")
    assert index["path"].iloc[0] == "results/world/pool/00000.tar"  # inside the workdir: relative
    manifest = subsets.write_subset(index, "s", 250, 0, "results/data/subsets/s")
    assert manifest["url"] == "results/data/subsets/s/shards/{000000..000002}.tar"
    assert all(e["file"] == f"results/data/subsets/s/shards/{i:06d}.tar"
               for i, e in enumerate(manifest["shards"]))
    links = [p for p in Path("results/data/subsets/s/shards").iterdir() if p.is_symlink()]
    assert len(links) == 2 and not any(os.path.isabs(os.readlink(p)) for p in links)
    keys = readable_through_url(manifest)
    assert len(keys) == 250
    # cp -a of the whole workdir, then the original is gone
    copy = world_workdir.parent / (world_workdir.name + "-copy")
    shutil.copytree(world_workdir, copy, symlinks=True)
    monkeypatch.chdir(copy)
    shutil.rmtree(world_workdir)
    again = subsets.read_manifest("results/data/subsets/s/manifest.json")
    assert readable_through_url(again) == keys
    assert subsets.subset_keys(again) == keys


def test_pool_outside_the_workdir_is_linked_absolute(small_world, in_tmp):
    index = subsets.build_index(small_world / "pool")
    assert Path(index["path"].iloc[0]).is_absolute()
    manifest = subsets.write_subset(index, "s", 250, 0, "s")
    assert manifest["url"] == "s/shards/{000000..000002}.tar"
    links = [p for p in Path("s/shards").iterdir() if p.is_symlink()]
    assert len(links) == 2 and all(os.path.isabs(os.readlink(p)) for p in links)
    assert len(readable_through_url(subsets.read_manifest("s/manifest.json"))) == 250
    with pytest.raises(subsets.PoolError, match="outside the working directory"):
        subsets.write_subset(index, "s", 250, 0, in_tmp.parent / "elsewhere")


@pytest.mark.parametrize("field, value", [
    ("url", "/abs/shards/{000000..000002}.tar"),
    ("url", "../../other/shards/{000000..000002}.tar"),
    ("url", "s/../../shards/{000000..000002}.tar"),
    ("file", "/abs/shards/000000.tar"),
    ("file", "../shards/000000.tar"),
])
def test_manifest_pointing_outside_is_rejected(index, in_tmp, field, value):
    subsets.write_subset(index, "s", 250, 0, "s")
    path = in_tmp / "s" / "manifest.json"
    manifest = json.loads(path.read_text())
    if field == "url":
        manifest["url"] = value
    else:
        manifest["shards"][1]["file"] = value
    path.write_text(json.dumps(manifest))
    with pytest.raises(subsets.PoolError) as e:
        subsets.read_manifest(path)
    assert str(path) in str(e.value) and value in str(e.value)


# duplicate keys and parquets that name other keys (issue 29) --------------------------------


def _shard(path, keys, tag):
    with ShardWriter(path) as w:
        for key in keys:
            w.write(key, {"jpg": b"x" * 100, "txt": f"{tag} {key}"})


@pytest.fixture
def pool_with_duplicates(in_tmp):
    """00000: a00..a19; 00001: b00..b19 and b05 again (its second copy); 00002: a copy of 00000
    under another name; 00003: b00..b09 again (other samples under the same keys) and c00..c09."""
    pool = in_tmp / "pool"
    a = [f"a{i:02d}" for i in range(20)]
    b = [f"b{i:02d}" for i in range(20)]
    _shard(pool / "00000.tar", a, "first")
    _shard(pool / "00001.tar", b + ["b05"], "first")
    shutil.copy(pool / "00000.tar", pool / "00002.tar")
    _shard(pool / "00003.tar", b[:10] + [f"c{i:02d}" for i in range(10)], "second")
    return pool


def test_duplicate_keys_are_reported_per_shard_and_counted_once(pool_with_duplicates):
    index = subsets.build_index(pool_with_duplicates)
    assert index["n_readable"].tolist() == [20, 21, 20, 20]
    assert index["n_samples"].tolist() == [20, 20, 0, 10]  # what subsets draw: first occurrences
    assert index["n_duplicates"].tolist() == [0, 1, 20, 10]
    pd.testing.assert_frame_equal(subsets.build_index(pool_with_duplicates, workers=2), index)
    problems = subsets.pool_problems(index)
    assert len(problems) == 3
    assert "00001.tar" in problems[0] and "1 sample repeats a key earlier in this shard" in problems[0]
    assert "00002.tar" in problems[1] and "20 samples repeat keys of 00000.tar" in problems[1]
    assert "00003.tar" in problems[2] and "10 samples repeat keys of 00001.tar" in problems[2]
    assert "first occurrence" in problems[1]


@pytest.mark.parametrize("size", [13, 37, 50])
def test_a_subset_of_n_samples_holds_n_unique_samples(pool_with_duplicates, size):
    index = subsets.build_index(pool_with_duplicates)
    for seed in range(4):
        manifest = subsets.write_subset(index, f"s{seed}", size, seed, f"s{size}_{seed}")
        keys = readable_through_url(manifest)  # what open_clip reads
        assert manifest["n_samples"] == size == len(keys) == len(set(keys)) == len(keys_of(manifest))
        # the first occurrence in shard order is the one kept: b00..b09 and b05 from 00001
        captions = [files["txt"].decode() for url in braceexpand.braceexpand(manifest["url"])
                    for _k, files in iter_samples(url)]
        assert not any(c.startswith("second b") for c in captions)
    whole = subsets.write_subset(index, "all", 50, 0, "all")
    assert sorted(readable_through_url(whole)) == sorted(
        [f"a{i:02d}" for i in range(20)] + [f"b{i:02d}" for i in range(20)] + [f"c{i:02d}" for i in range(10)])
    with pytest.raises(subsets.PoolError, match="pool has only 50"):
        subsets.write_subset(index, "more", 51, 0, "more")


def test_index_pool_script_warns_of_duplicates_naming_the_shards(pool_with_duplicates):
    sm = SimpleNamespace(input=[], params=SimpleNamespace(pool=str(pool_with_duplicates)),
                         output=["index.parquet"], log=["index.log"], threads=1)
    runpy.run_path(str(REPO / "workflow" / "scripts" / "index_pool.py"),
                   init_globals={"snakemake": sm})
    log_text = Path("index.log").read_text()
    assert "50 distinct samples, 31 duplicates left out" in log_text
    warnings = [line for line in log_text.splitlines() if "WARNING" in line]
    assert [w for w in warnings if "00002.tar" in w and "repeat keys of 00000.tar" in w]
    assert [w for w in warnings if "00003.tar" in w and "repeat keys of 00001.tar" in w]


def test_a_parquet_naming_keys_the_tar_does_not_hold_is_flagged(small_world, in_tmp):
    """Same count, other keys: img2dataset's parquet and the tar disagree on 50 keys."""
    pool = in_tmp / "pool"
    pool.mkdir()
    for s in range(2):
        for ext in (".tar", ".parquet"):
            shutil.copy(small_world / "pool" / f"{s:05d}{ext}", pool)
    meta = pd.read_parquet(pool / "00001.parquet")
    meta.loc[:49, "key"] = [f"9999{i:05d}" for i in range(50)]
    meta.to_parquet(pool / "00001.parquet", index=False)
    index = subsets.build_index(pool)
    assert index["n_parquet"].tolist() == index["n_readable"].tolist() == [100, 100]
    assert index["problem"].iloc[0] == ""
    problem = index["problem"].iloc[1]
    assert "50 keys of the parquet are not in the tar" in problem and "999900000" in problem
    assert "50 keys of the tar are not in the parquet" in problem
    assert [p for p in subsets.pool_problems(index) if "00001.tar" in p]


def test_a_pool_without_duplicates_indexes_and_subsets_as_before(index, in_tmp):
    """The embedded world has unique keys: nothing left out, whole shards linked, manifests
    without duplicate fields."""
    assert index["n_duplicates"].tolist() == [0] * 6
    assert index["n_samples"].tolist() == index["n_readable"].tolist()
    m = subsets.write_subset(index, "M", 250, 0, "M")
    assert [e["partial"] for e in m["shards"]] == [False, False, True]
    assert all("duplicates" not in e for e in m["shards"])


def test_index_pool_command_prints_the_problems_of_each_shard(in_tmp):
    """`clipscale index-pool` says what the rule's log says: a copied shard's keys are duplicates."""
    pool = in_tmp / "pool"
    with ShardWriter(pool / "00000.tar") as w:
        for i in range(20):
            w.write(f"k{i:04d}", {"jpg": b"x" * 1000, "txt": "a caption"})
    shutil.copy(pool / "00000.tar", pool / "00001.tar")
    proc = subprocess.run([str(Path(sys.executable).with_name("clipscale")), "index-pool", str(pool), "--out", "i.parquet"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "2 shards, 40 readable samples, 20 distinct samples, 20 duplicates left out" in proc.stdout
    assert "00001.tar" in proc.stderr and "20 samples repeat keys of 00000.tar" in proc.stderr, proc.stderr


# img2dataset's failed downloads (issue 31): missing samples, not broken shards ----------------


def test_failed_downloads_are_counted_missing_not_as_problems(small_world, in_tmp):
    """img2dataset lists every URL of a shard's slice in its parquet and writes only the
    successes: a 404 is a missing sample (n_missing, with its error_message), a shard whose every
    URL failed is an empty tar, and a pool with a stats file and no parquet is counted from it."""
    pool = in_tmp / "pool"
    pool.mkdir()
    for s in range(3):
        shutil.copy(small_world / "pool" / f"{s:05d}.tar", pool)
    meta = pd.read_parquet(small_world / "pool" / "00000.parquet")
    failed = pd.DataFrame({"url": [f"http://x/{i}" for i in range(4)],
                           "key": [f"00000{i:04d}" for i in range(100, 104)],
                           "caption": "gone", "status": ["failed_to_download"] * 3 + ["failed_to_resize"],
                           "error_message": ["HTTP Error 404: Not Found"] * 3 + ["image decoding error"]})
    pd.concat([meta, failed]).sample(frac=1, random_state=0).to_parquet(pool / "00000.parquet", index=False)
    # every URL of shard 1 failed: img2dataset writes an empty tar (its end-of-archive marker)
    with tarfile.open(pool / "00001.tar", "w"):
        pass
    everything_failed = pd.read_parquet(small_world / "pool" / "00001.parquet").assign(
        status="failed_to_download", error_message="<urlopen error timed out>")
    everything_failed.to_parquet(pool / "00001.parquet", index=False)
    (pool / "00002_stats.json").write_text(json.dumps(
        {"count": 103, "successes": 100, "failed_to_download": 3, "failed_to_resize": 0,
         "status_dict": {"success": 100, "HTTP Error 404: Not Found": 3}}))

    index = subsets.build_index(pool)
    assert index["n_samples"].tolist() == index["n_readable"].tolist() == [100, 0, 100]
    assert index["n_missing"].dtype == "Int64"
    assert index["n_parquet"].tolist()[:2] == [100, 0] and pd.isna(index["n_parquet"].iloc[2])
    assert index["n_missing"].tolist() == [4, 100, 3]
    assert index["missing_reasons"].tolist() == [
        "HTTP Error 404: Not Found: 3; image decoding error: 1", "<urlopen error timed out>: 100",
        "HTTP Error 404: Not Found: 3"]
    assert subsets.pool_problems(index) == [] and (index["problem"] == "").all()
    lines = subsets.pool_missing(index, shards=2)
    assert lines == ["107 samples missing in 3 of 3 shards (listed by img2dataset, not written: "
                     "<urlopen error timed out>: 100; HTTP Error 404: Not Found: 6; image decoding error: 1)",
                     "pool/00001.tar: 100 samples missing (<urlopen error timed out>: 100)",
                     "pool/00000.tar: 4 samples missing (HTTP Error 404: Not Found: 3; image decoding error: 1)"]
    manifest = subsets.write_subset(index, "all", 200, 0, "all")  # the empty shard is left out
    assert len(readable_through_url(manifest)) == 200
    assert "00001" not in {p["shard"] for p in manifest["shards"]}


def test_world_pool_has_no_missing_samples(index):
    assert index["n_missing"].tolist() == [0] * 6 and subsets.pool_missing(index) == []


def test_missing_reasons_are_few_per_shard():
    """error_messages that name an object's address are one reason; a shard lists at most
    MAX_REASONS, the rest summed (a LAION shard of 10,000 URLs fails in many ways)."""
    from collections import Counter

    messages = [f"cannot identify image file <_io.BytesIO object at 0x7f{i:04x}>" for i in range(5)]
    messages += [f"error {i}; retry" for i in range(12)] + ["HTTP Error 404: Not Found"] * 20
    counts = Counter(subsets._reason(m) for m in messages)
    text = subsets.missing_reasons(counts)
    assert text.startswith("HTTP Error 404: Not Found: 20; cannot identify image file <_io.BytesIO "
                           "object at 0x…>: 5; error 0, retry: 1")
    assert text.endswith("other reasons: 6") and text.count("; ") == subsets.MAX_REASONS
