"""Dedup: hash jobs robust to bad input, exact and radius matching, reports, filtered subsets."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipscale import cli
from clipscale import dedup as D
from clipscale.dedup import hashing as dedup_hashing
from clipscale.dedup import index as dedup_index
from clipscale import phash as P
from clipscale.shards import ShardWriter

REPO = Path(__file__).resolve().parents[1]
RNG_SEED = 12345


# fixtures ---------------------------------------------------------------------------------------


def _photos() -> list[Image.Image]:
    import skimage.data

    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "brick"):
        a = getattr(skimage.data, name)()
        out.append(Image.fromarray(a).convert("RGB"))
    return out


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos():
    rng = np.random.default_rng(RNG_SEED)
    base = _photos()
    crops = []
    for i in range(40):  # 40 distinct images: random crops of real photographs
        im = base[i % len(base)]
        w, h = im.size
        x, y = rng.integers(0, w // 2), rng.integers(0, h // 2)
        crops.append(im.crop((x, y, x + w // 2, y + h // 2)).resize((96, 80)))
    return crops


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory, photos):
    """A pool of 3 shards with bad samples of every kind; returns (dir, {key: image bytes})."""
    d = tmp_path_factory.mktemp("pool")
    good = {}
    for s in range(3):
        with ShardWriter(d / f"{s:05d}.tar") as w:
            for i in range(10):
                key = f"{s:05d}{i:04d}"
                data = _jpeg(photos[s * 10 + i])
                w.write(key, {"jpg": data, "txt": f"caption {key}", "json": {"key": key}})
                good[key] = data
            if s == 0:
                w.write("000000100", {"jpg": _jpeg(photos[0])[:300], "txt": "truncated jpeg"})
                w.write("000000101", {"jpg": b"<html>404 not found</html>", "txt": "not an image"})
                w.write("000000102", {"txt": "a caption without its image"})
                w.write("000000103", {"jpg": b"", "txt": "empty image member"})
                w.write("000000104", {"jpg": _png(photos[35]), "txt": "png behind a .jpg name"})
                good["000000104"] = _png(photos[35])
    # a truncated tar: the last shard cut in the middle of a member
    full = (d / "00002.tar").read_bytes()
    (d / "00002.tar").write_bytes(full[: len(full) * 2 // 3 + 100])
    return d, good


@pytest.fixture(scope="module")
def downstream_dir(tmp_path_factory, photos):
    """A clip_benchmark-style set: test/{0,1}.tar + nshards.txt; images 0-9 are also in the
    pool (exactly or re-encoded), 10-19 are not."""
    d = tmp_path_factory.mktemp("ds") / "myset"
    (d / "test").mkdir(parents=True)
    for s in range(2):
        with ShardWriter(d / "test" / f"{s}.tar") as w:
            for i in range(10):
                j = s * 10 + i
                img = photos[j] if j < 10 else photos[j].transpose(Image.Transpose.ROTATE_90)
                data = _jpeg(img) if j % 2 == 0 else _jpeg(img, quality=40)
                w.write(f"t{j:03d}", {"jpg": data, "cls": str(j % 3)})
    (d / "test" / "nshards.txt").write_text("2\n")
    return d


def _ref(data: bytes) -> int:
    return int(str(imagehash.phash(Image.open(io.BytesIO(data)))), 16)


# 1. hashing -------------------------------------------------------------------------------------


def test_hash_shards_counts_and_skips_bad_input(pool_dir, tmp_path, caplog):
    d, good = pool_dir
    out = tmp_path / "h.parquet"
    report = D.hash_shards(sorted(d.glob("*.tar")), out, name="g0", batch_size=7)
    df = pd.read_parquet(out)
    assert list(df.columns) == ["key", "shard", "phash"] and df["phash"].dtype == np.uint64
    # every hashed image has imagehash's hash
    for row in df.itertuples():
        assert row.phash == _ref(good[row.key]), row.key
    counts = report["skipped"]["counts"]
    assert counts["corrupt image (OSError)"] == 1
    assert counts["not an image"] == 1
    assert counts["no image member"] == 1  # the caption-only sample
    assert counts["empty image member"] == 1
    assert sum(v for k, v in counts.items() if k.startswith("unreadable tar")) == 1
    assert report["skipped"]["total"] == 5  # 4 bad samples and one cut tar, each counted once
    # the truncated third shard gives what was readable before the cut
    n_third = int((df["shard"] == str(d / "00002.tar")).sum())
    assert 0 < n_third < 10
    assert report["n_hashed"] == len(df) == 10 + 10 + 1 + n_third
    assert report["n_samples"] == report["n_hashed"] + 4
    examples = json.dumps(report["skipped"]["examples"])
    for key in ("000000100", "000000101", "000000102", "00002.tar"):
        assert key in examples
    assert "000000100" in caplog.text  # logged with its key
    assert D.read_report(out) == report  # stored in the parquet's metadata
    assert report["name"] == "g0"


def test_hash_report_counts_each_bad_sample_once(photos, tmp_path):
    """One reason per skipped sample, the most specific one: an empty .jpg is an "empty image
    member", not also a sample without image; an empty caption is no reason to skip."""
    good = _jpeg(photos[0])
    with ShardWriter(tmp_path / "00000.tar") as w:
        w.write("ok1", {"jpg": good, "txt": "fine"})
        w.write("empty", {"jpg": b"", "txt": "empty image member"})
        w.write("ok2", {"jpg": good, "txt": ""})  # an empty caption: still hashed
        w.write("corrupt", {"jpg": good[:300], "txt": "a cut JPEG"})
        w.write("noimage", {"txt": "a caption without its image", "json": "{}"})
    with ShardWriter(tmp_path / "00001.tar") as w:
        for i in range(10):
            w.write(f"t{i}", {"jpg": good, "txt": "x"})
    full = (tmp_path / "00001.tar").read_bytes()
    (tmp_path / "00001.tar").write_bytes(full[: len(full) // 2])
    report = D.hash_shards([tmp_path / "00000.tar"], tmp_path / "one.parquet")
    assert report["skipped"]["counts"] == {"empty image member": 1, "corrupt image (OSError)": 1,
                                           "no image member": 1}
    assert report["skipped"]["total"] == 3 and report["n_hashed"] == 2
    assert report["n_samples"] == 5
    report = D.hash_shards([tmp_path / "00001.tar"], tmp_path / "two.parquet")
    assert report["skipped"]["total"] == 1 and 0 < report["n_hashed"] < 10
    (reason,) = report["skipped"]["counts"]
    assert reason.startswith(("truncated tar", "unreadable tar"))


def test_hash_shards_missing_shard_is_an_error(tmp_path):
    with pytest.raises(D.DedupError, match="shard not found: .*nope.tar"):
        D.hash_shards([tmp_path / "nope.tar"], tmp_path / "h.parquet")
    assert not (tmp_path / "h.parquet").exists()


def test_downstream_test_shards(tmp_path, downstream_dir):
    assert [p.name for p in D.downstream_test_shards(downstream_dir)] == ["0.tar", "1.tar"]
    d = tmp_path / "set"
    (d / "test").mkdir(parents=True)
    for i in (0, 2, 10, 1):
        (d / "test" / f"{i}.tar").write_bytes(b"")
    assert [p.name for p in D.downstream_test_shards(d)] == ["0.tar", "1.tar", "2.tar", "10.tar"]
    (d / "test" / "nshards.txt").write_text("12\n")
    with pytest.raises(D.DedupError, match="lists 12 shards, missing"):
        D.downstream_test_shards(d)
    with pytest.raises(D.DedupError, match="no test/ split"):
        D.downstream_test_shards(tmp_path / "nothing")


def test_group_shards():
    groups = D.group_shards([f"s{i}" for i in range(10)], 4)
    assert groups == {"00000": ["s0", "s1", "s2", "s3"], "00001": ["s4", "s5", "s6", "s7"],
                      "00002": ["s8", "s9"]}
    assert D.group_shards([], 3) == {}
    with pytest.raises(D.DedupError):
        D.group_shards(["a"], 0)


def test_hash_shards_in_processes_gives_the_same_file(pool_dir, tmp_path):
    """workers > 1 (the rule's threads): the same rows in the same order, the same report."""
    d, _ = pool_dir
    tars = sorted(d.glob("*.tar"))
    one = D.hash_shards(tars, tmp_path / "one.parquet", name="g", batch_size=7)
    many = D.hash_shards(tars, tmp_path / "many.parquet", name="g", batch_size=7, workers=3)
    assert pd.read_parquet(tmp_path / "one.parquet").equals(pd.read_parquet(tmp_path / "many.parquet"))
    drop = ("seconds", "images_per_s", "skipped")  # examples name objects by address
    assert {k: v for k, v in many.items() if k not in drop} == {k: v for k, v in one.items() if k not in drop}
    assert many["skipped"]["counts"] == one["skipped"]["counts"]
    def where(report):  # the examples' file:key, without the messages
        return {r: [e.split(":")[:2] for e in ex] for r, ex in report["skipped"]["examples"].items()}

    assert where(many) == where(one)
    assert many["skipped"]["total"] == 5


def test_list_shards_and_stamp(tmp_path):
    for name in ("00001.tar", "00000.tar", "00000.parquet", "notes.txt", ".tar", "x.tar.tmp"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dir.tar").mkdir()
    (tmp_path / "link.tar").symlink_to(tmp_path / "00000.tar")
    shards = D.list_shards(tmp_path)
    assert shards == [str(tmp_path / n) for n in ("00000.tar", "00001.tar", "link.tar")]
    from clipscale.subsets import pool_shards  # what the pool index reads
    assert shards == [str(p) for p in pool_shards(tmp_path)]

    stamp = D.shards_stamp(shards)
    assert stamp == D.shards_stamp(shards) and stamp != D.shards_stamp(shards[:2])
    cache = {}
    assert D.shards_stamp(shards, cache) == stamp and len(cache) == 3
    first = tmp_path / "00000.tar"
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))  # touched
    assert D.shards_stamp(shards) != stamp
    assert D.shards_stamp(shards, cache) == stamp  # the cache holds one parse's view
    stamp = D.shards_stamp(shards)
    mtime = first.stat().st_mtime_ns
    first.write_bytes(b"xy")  # rewritten: size differs, even with the same mtime
    os.utime(first, ns=(mtime, mtime))
    assert D.shards_stamp(shards) != stamp
    first.unlink()  # removed: still a stamp (the job itself names the missing shard)
    assert D.shards_stamp(shards) != stamp


def test_gather_concatenates_and_sums_reports(pool_dir, tmp_path):
    d, _ = pool_dir
    tars = sorted(d.glob("*.tar"))
    parts = []
    for i, tar in enumerate(tars):
        parts.append(tmp_path / f"{i}.parquet")
        D.hash_shards([tar], parts[-1])
    report = D.gather(parts, tmp_path / "all.parquet")
    together = pd.read_parquet(tmp_path / "all.parquet")
    expected = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    pd.testing.assert_frame_equal(together, expected)
    one = D.hash_shards(tars, tmp_path / "one.parquet")
    assert report["n_hashed"] == one["n_hashed"] == len(together)
    assert report["n_samples"] == one["n_samples"]
    assert report["skipped"]["counts"] == one["skipped"]["counts"]
    assert D.read_report(tmp_path / "all.parquet")["n_parts"] == 3
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(D.DedupError, match="bad.parquet"):
        D.gather([tmp_path / "bad.parquet"], tmp_path / "x.parquet")


# 2. matching ------------------------------------------------------------------------------------


def _flip(h: int, bits) -> int:
    for b in bits:
        h ^= 1 << int(b)
    return h


def _brute(test: np.ndarray, query: np.ndarray, radius: int) -> set:
    d = np.bitwise_count(query[:, None] ^ test[None, :])
    qi, ti = np.nonzero(d <= radius)
    return set(zip(qi.tolist(), ti.tolist(), d[qi, ti].tolist()))


def _search(index, q) -> list:
    qi, ti, d = index.search(np.asarray(q, dtype=np.uint64))
    assert qi.dtype.kind == "i" and d.dtype == np.uint8
    return list(zip(qi.tolist(), ti.tolist(), d.tolist()))


@pytest.fixture(scope="module")
def clustered():
    """Test hashes in clusters (as real near-duplicates are) plus random ones; queries at every
    distance 0..9 from them, plus random queries."""
    rng = np.random.default_rng(7)
    centres = [int(x) for x in rng.integers(0, 2**63, 30, dtype=np.uint64) * np.uint64(2) + np.uint64(1)]
    test = centres + [_flip(c, rng.choice(64, 2, replace=False)) for c in centres[:10]]
    test += centres[:5]  # duplicates on the test side
    query = []
    for k in range(10):
        query += [_flip(c, rng.choice(64, k, replace=False)) for c in centres]
    query += [int(x) for x in rng.integers(0, 2**63, 200, dtype=np.uint64)]
    query += centres[:3]  # duplicates on the query side
    return np.array(test, dtype=np.uint64), np.array(query, dtype=np.uint64)


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 4, 5, 6, 8])
def test_index_equals_brute_force_for_every_chunking(clustered, radius):
    test, query = clustered
    ref = _brute(test, query, radius)
    assert len(ref) > 30  # the case is not trivial
    for m in range(1, radius + 2):
        if dedup_index._ball(64 // m + 1, radius // m) > 10**5:
            continue  # too large a ball to enumerate in a test (the planner never picks it)
        got = _search(D.HammingIndex(test, radius, n_chunks=m), query)
        assert len(got) == len(set(got)), f"pairs reported twice (m={m})"
        assert set(got) == ref, f"radius {radius}, {m} chunks"
    got = _search(D.HammingIndex(test, radius), query)  # the planned chunking
    assert set(got) == ref


def test_index_radius_edges():
    h = 0x0F0F_F0F0_1234_ABCD
    rng = np.random.default_rng(3)
    for r in (0, 1, 3, 4, 7):
        at_r = _flip(h, rng.choice(64, r, replace=False))
        beyond = _flip(h, rng.choice(64, r + 1, replace=False))
        for m in range(1, r + 2):
            if dedup_index._ball(64 // m + 1, r // m) > 10**5:
                continue  # too large a ball to enumerate for a test
            index = D.HammingIndex(np.array([h], np.uint64), r, n_chunks=m)
            assert _search(index, [at_r]) == [(0, 0, r)], (r, m)
            assert _search(index, [beyond]) == [], (r, m)


def test_index_many_to_many_duplicates():
    h, g = 0xDEADBEEF, 0xDEADBEEF ^ 0b111
    test = np.array([h, g, h, 5, h], np.uint64)  # h three times
    pool = np.array([h, h, 2**40 - 1], np.uint64)  # h twice
    for radius, m in ((0, 1), (3, 2), (3, 4), (4, None)):
        got = sorted(_search(D.HammingIndex(test, radius, n_chunks=m), pool))
        expect = sorted([(q, t, 0) for q in (0, 1) for t in (0, 2, 4)]
                        + ([(q, 1, 3) for q in (0, 1)] if radius >= 3 else []))
        assert got == expect, (radius, m)


def test_index_splits_large_candidate_sets():
    rng = np.random.default_rng(5)
    test = rng.integers(0, 2**64 - 1, 3000, dtype=np.uint64, endpoint=True)
    test[:1000] = test[0]  # a hash repeated (blank images do this)
    query = np.concatenate([test[:50], rng.integers(0, 2**63, 500, dtype=np.uint64)])
    big = _search(D.HammingIndex(test, 4, n_chunks=5), query)
    small = _search(D.HammingIndex(test, 4, n_chunks=5, max_candidates=7), query)
    assert sorted(big) == sorted(small) and set(big) == _brute(test, query, 4)


def test_index_empty_inputs_and_bad_arguments():
    index = D.HammingIndex(np.array([1, 2], np.uint64), 2)
    assert _search(index, []) == []
    assert _search(D.HammingIndex(np.array([], np.uint64), 2), [1, 2]) == []
    with pytest.raises(D.DedupError, match="radius"):
        D.HammingIndex(np.array([1], np.uint64), 40)
    with pytest.raises(D.DedupError, match="n_chunks"):
        D.HammingIndex(np.array([1], np.uint64), 2, n_chunks=4)
    with pytest.raises(D.DedupError, match="use more chunks"):
        D.HammingIndex(np.arange(100, dtype=np.uint64), 6, n_chunks=1)


def test_plan_chunks_is_pigeonhole_safe_and_sensible():
    for n in (1, 1000, 10**5, 10**6):
        for r in range(0, 9):
            m = D.plan_chunks(n, r)
            assert 1 <= m <= r + 1
    # the default case (1e5 test images, radius 4): three direct-addressed 21-22 bit chunks
    assert D.plan_chunks(10**5, 4) == 3


def _frames(test_hashes, pool_hashes):
    test = pd.DataFrame({"dataset": ["a"] * len(test_hashes),
                         "key": [f"t{i}" for i in range(len(test_hashes))],
                         "shard": "ts", "phash": np.array(test_hashes, np.uint64)})
    pool = pd.DataFrame({"key": [f"p{i}" for i in range(len(pool_hashes))], "shard": "ps",
                         "phash": np.array(pool_hashes, np.uint64)})
    return test, pool


def _batches(pool: pd.DataFrame, size: int):
    import pyarrow as pa

    table = pa.Table.from_pandas(pool, schema=D.HASH_SCHEMA, preserve_index=False)
    return table.to_batches(max_chunksize=size)


def test_match_exact_join_equals_index_at_radius_zero(clustered, tmp_path):
    test_h, pool_h = clustered
    test, pool = _frames(test_h, pool_h)
    r0 = D.match(test, _batches(pool, 64), 0, tmp_path / "m0.parquet")
    assert r0["method"] == "hash join"
    m0 = pd.read_parquet(tmp_path / "m0.parquet")
    via_index = _search(D.HammingIndex(test_h, 0), pool_h)
    assert {(f"p{q}", f"t{t}") for q, t, _ in via_index} == set(zip(m0["pool_key"], m0["test_key"]))
    merged = D.match_exact(test, pool)
    assert len(merged) == len(m0) and (merged["distance"] == 0).all()


def test_match_writes_all_pairs_with_distances(clustered, tmp_path):
    test_h, pool_h = clustered
    test, pool = _frames(test_h, pool_h)
    report = D.match(test, _batches(pool, 100), 4, tmp_path / "m.parquet")
    m = D.read_matches(tmp_path / "m.parquet")
    assert list(m.columns) == D.PAIR_COLUMNS
    expect = {(f"p{q}", f"t{t}", d) for q, t, d in _brute(test_h, pool_h, 4)}
    assert set(zip(m["pool_key"], m["test_key"], m["distance"].astype(int))) == expect
    assert len(m) == len(expect) == report["n_pairs"]
    assert (P.hamming(m["test_phash"], m["pool_phash"]) == m["distance"]).all()
    assert report["n_pool"] == len(pool) and report["index"]["radius"] == 4
    assert D.read_report(tmp_path / "m.parquet")["n_pairs"] == len(m)


def test_match_files_reports_bad_input(tmp_path):
    with pytest.raises(D.DedupError, match="not found"):
        D.match_files(tmp_path / "nope.parquet", [tmp_path / "nope.parquet"], 4, tmp_path / "m.parquet")
    assert not (tmp_path / "m.parquet").exists()


# 3. reports and the whole chain ---------------------------------------------------------------


@pytest.fixture(scope="module")
def chain(tmp_path_factory, pool_dir, downstream_dir):
    """hash -> gather -> match on the fixture pool and set, through the command line."""
    d, _ = pool_dir
    out = tmp_path_factory.mktemp("dedup")
    tars = sorted(str(p) for p in d.glob("*.tar"))
    assert cli.main(["dedup-hash", "--out", str(out / "g0.parquet"), *tars[:2]]) == 0
    assert cli.main(["dedup-hash", "--out", str(out / "g1.parquet"), tars[2]]) == 0
    assert cli.main(["dedup-hash", "--dataset-dir", str(downstream_dir),
                   "--out", str(out / "myset.parquet")]) == 0
    assert cli.main(["dedup-gather", str(out / "g0.parquet"), str(out / "g1.parquet"),
                   "--out", str(out / "pool.parquet"), "--report", str(out / "report.json"),
                   "--downstream", str(out / "myset.parquet")]) == 0
    assert cli.main(["dedup-match", "--pool", str(out / "pool.parquet"), "--tests",
                   str(out / "myset.parquet"), "--radius", "6", "--out",
                   str(out / "matches.parquet")]) == 0
    return out


def test_chain_finds_the_planted_images(chain):
    m = D.read_matches(chain / "matches.parquet")
    test_keys = set(m["test_key"])
    # t000..t009 are in the pool (t000, t002, ... byte-identical; the odd ones re-encoded)
    assert {f"t{j:03d}" for j in range(0, 10, 2)} <= test_keys
    exact = m[m["distance"] == 0]
    assert {f"t{j:03d}" for j in range(0, 10, 2)} <= set(exact["test_key"])
    # their partner is the pool image with the same source photo
    pairs = set(zip(m["test_key"], m["pool_key"]))
    assert all((f"t{j:03d}", f"00000{j:04d}") in pairs for j in range(0, 10, 2))
    assert not any(k >= "t010" for k in test_keys)  # the rotated ones are not found
    report = json.loads((chain / "report.json").read_text())
    assert report["pool"]["n_hashed"] == len(pd.read_parquet(chain / "pool.parquet"))
    assert report["downstream"]["myset"]["n_hashed"] == 20


def test_overlap_table(chain):
    assert cli.main(["dedup-overlap", "--matches", str(chain / "matches.parquet"), "--tests",
                   str(chain / "myset.parquet"), "--radius", "6", "--out",
                   str(chain / "overlap.csv")]) == 0
    table = pd.read_csv(chain / "overlap.csv")
    assert list(table.columns) == D.OVERLAP_COLUMNS
    row = table.iloc[0]
    m = D.read_matches(chain / "matches.parquet")
    assert row["dataset"] == "myset" and row["n_test"] == 20 and row["radius"] == 6
    assert row["n_matched"] == m["test_key"].nunique()
    assert row["overlap_pct"] == pytest.approx(100 * row["n_matched"] / 20)
    assert row["n_matched_exact"] == m.loc[m["distance"] == 0, "test_key"].nunique() >= 5
    # the reference Table 3 has the same leading columns
    ref = pd.read_csv(REPO / "src/clipscale/data/reference/table03_phash_overlap.csv")
    assert list(ref.columns) == list(table.columns[:2])


def test_overlap_table_counts_by_hand(tmp_path):
    test = tmp_path / "a.parquet"
    D.hash_shards([], test, name="a")  # an empty set: n_test 0
    m = pd.DataFrame({"dataset": ["b", "b", "b", "b"], "test_key": ["x", "x", "y", "z"],
                      "test_shard": "s", "pool_key": ["p1", "p2", "p1", "p3"], "pool_shard": "s",
                      "distance": np.array([0, 2, 4, 6], np.uint8), "test_phash": np.uint64(0),
                      "pool_phash": np.uint64(0)})
    D.hash_shards([], tmp_path / "b.parquet", name="b")
    # pretend b has 8 test images
    rep = D.read_report(tmp_path / "b.parquet") | {"n_hashed": 8}
    dedup_hashing._set_metadata(tmp_path / "b.parquet", tmp_path / "b2.parquet", rep)
    table = D.overlap_table(m, [test, tmp_path / "b2.parquet"], radius=4).set_index("dataset")
    assert table.loc["b", "n_matched"] == 2 and table.loc["b", "overlap_pct"] == 25.0
    assert table.loc["b", "n_matched_exact"] == 1 and table.loc["b", "overlap_pct_exact"] == 12.5
    assert table.loc["b", "n_pool_matched"] == 2
    assert table.loc["a", "n_test"] == 0 and np.isnan(table.loc["a", "overlap_pct"])


def test_contact_sheet(chain, tmp_path):
    out = tmp_path / "sheet.png"
    assert cli.main(["dedup-sheet", "--matches", str(chain / "matches.parquet"), "--out", str(out),
                   "--pairs", "6"]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 500
        sheet = np.asarray(im.convert("L"))
    assert sheet.std() > 20  # photographs were drawn, not an empty canvas
    empty = D.read_matches(chain / "matches.parquet").iloc[:0]
    assert D.contact_sheet(empty, tmp_path / "none.png") == 0
    assert (tmp_path / "none.png").stat().st_size > 0


def test_contact_sheet_warns_of_images_it_cannot_find(chain, tmp_path, caplog):
    """A pair whose pool image is not in its shard is drawn as 'missing' and said in the log."""
    matches = D.read_matches(chain / "matches.parquet").iloc[:1].assign(pool_key="no-such-key")
    with caplog.at_level("WARNING"):
        assert D.contact_sheet(matches, tmp_path / "sheet.png") == 1
    assert "1 of its 2 images not found or unreadable" in caplog.text and "no-such-key" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        D.contact_sheet(D.read_matches(chain / "matches.parquet"), tmp_path / "all.png", n_pairs=6)
    assert "not found" not in caplog.text


def test_fetch_images_finds_keys(pool_dir):
    d, good = pool_dir
    shard = str(d / "00001.tar")
    found = D.fetch_images([(shard, "000010003"), (shard, "000010009"), (shard, "nokey")])
    assert found == {(shard, "000010003"): good["000010003"], (shard, "000010009"): good["000010009"]}


def test_planted_recall_by_hand():
    planted = pd.DataFrame({"pool_key": ["p1", "p2", "p3", "p4"], "pool_shard": "s",
                            "dataset": ["a", "a", "b", "b"], "test_key": ["t1", "t2", "t3", "t4"],
                            "transform": ["blur", "crop", "blur", "crop"]})
    matches = pd.DataFrame({
        "dataset": ["a", "a", "b", "b", "b"], "test_key": ["t1", "t2", "t3", "t3", "t9"],
        "test_shard": "s", "pool_key": ["p1", "p2", "p3", "p7", "p8"], "pool_shard": "s",
        "distance": np.array([0, 6, 2, 0, 4], np.uint8), "test_phash": np.uint64(0),
        "pool_phash": np.uint64(0)})
    r = D.planted_recall(matches, planted, radius=4)
    assert r["n_planted"] == 4 and r["n_found"] == 2 and r["recall"] == 0.5  # p2 is at 6 > 4
    assert r["n_pairs"] == 4 and r["precision"] == 0.5  # (p7, t3) and (p8, t9) are not planted
    assert r["recall_exact"] == 0.25 and r["precision_exact"] == 0.5
    assert r["by_transform"]["blur"]["recall"] == 1.0 and r["by_transform"]["crop"]["recall"] == 0.0
    assert r["by_radius"]["2"] == {"recall": 0.5, "n_pairs": 3, "precision": pytest.approx(2 / 3, abs=1e-6)}
    assert r["unplanted_pool_keys"] == 2
    assert {m["pool_key"] for m in r["missed_examples"]} == {"p2", "p4"}


def test_planted_recall_counts_only_the_sets_that_were_matched():
    """The world plants near-duplicates of every set it makes; a set left out of the config's
    downstream sets is neither hashed nor matched, so its planted copies are not misses."""
    planted = pd.DataFrame({"pool_key": ["p1", "p2", "p3"], "pool_shard": "s", "dataset": ["a", "a", "off"],
                            "test_key": ["t1", "t2", "t3"], "transform": "blur"})
    matches = pd.DataFrame({"dataset": ["a"], "test_key": ["t1"], "test_shard": "s", "pool_key": ["p1"],
                            "pool_shard": "s", "distance": np.array([0], np.uint8), "test_phash": np.uint64(0),
                            "pool_phash": np.uint64(0)})
    pool = pd.DataFrame({"key": ["p1", "p2", "p3"], "phash": np.array([0, 1, 3], np.uint64)})
    tests = pd.DataFrame({"dataset": ["a", "a"], "key": ["t1", "t2"], "phash": np.array([0, 255], np.uint64)})
    r = D.planted_recall(matches, planted, radius=4, pool_hashes=pool, test_hashes=tests)
    assert r["n_planted"] == 2 and r["recall"] == 0.5, r
    assert r["planted_in_other_sets"] == {"off": 1}
    assert "off" not in r["by_dataset"] and r.get("planted_not_hashed", 0) == 0


# 4. filtered subsets ----------------------------------------------------------------------------


@pytest.mark.parametrize("with_shards", [True, False])
def test_filter_subset_removes_matched_keys(small_world, in_tmp, with_shards):
    from clipscale.subsets import build_index, read_manifest, subset_keys, write_subset

    tmp_path = in_tmp
    index = build_index(small_world / "pool")
    manifest = write_subset(index, "s", 450, seed=1, out_dir="subset")
    keys = subset_keys(manifest)
    assert len(keys) == 450
    # remove keys from two of the subset's shards (one of them the cut last shard)
    first, last = manifest["shards"][0], manifest["shards"][-1]
    assert last["partial"]
    in_first = [k for k in keys if k.startswith(first["shard"])][:3]
    in_last = [k for k in keys if k.startswith(last["shard"])][:2]
    remove = in_first + in_last + ["999999999"]  # a matched pool key outside the subset
    matches = pd.DataFrame({"pool_key": remove})
    if with_shards:  # as in a matches file: the shard path each key was hashed from
        matches["pool_shard"] = [str(small_world / "pool" / f"{k[:5]}.tar") for k in remove]
    out = D.filter_subset("subset/manifest.json", matches, "dedup")
    again = read_manifest(tmp_path / "dedup" / "manifest.json")
    assert again == json.loads(json.dumps(out))
    assert out["n_samples"] == 445 and out["dedup"]["removed"] == 5
    new_keys = subset_keys(again)
    assert new_keys == [k for k in keys if k not in set(remove)]
    assert again["n_shards"] == manifest["n_shards"]
    # untouched whole shards are links to the pool's shards; the others are new files
    files = [Path(e["file"]) for e in again["shards"]]
    assert not files[0].is_symlink() and not files[-1].is_symlink()
    assert all(f.is_symlink() for f in files[1:-1])
    assert all(f.parent == Path("dedup/shards") for f in files)  # relative to the workdir
    # open_clip's brace pattern names exactly these files
    assert again["url"] == f"dedup/shards/{{000000..{len(files) - 1:06d}}}.tar"
    assert [e["removed"] for e in again["shards"]][0] == 3


def test_filter_subset_bad_manifest(in_tmp):
    from clipscale.subsets import PoolError

    with pytest.raises(PoolError, match="not found"):
        D.filter_subset("none.json", pd.DataFrame({"pool_key": []}), "o")


def test_filter_subset_rejects_a_manifest_pointing_outside(small_world, in_tmp):
    from clipscale.subsets import PoolError, build_index, write_subset

    write_subset(build_index(small_world / "pool"), "s", 150, seed=1, out_dir="subset")
    path = in_tmp / "subset" / "manifest.json"
    good = path.read_text()
    manifest = json.loads(good)
    manifest["shards"][0]["file"] = str(in_tmp / manifest["shards"][0]["file"])  # absolute
    path.write_text(json.dumps(manifest))
    with pytest.raises(PoolError, match=r"manifest.json.*absolute"):
        D.filter_subset(path, pd.DataFrame({"pool_key": ["x"]}), "dedup")
    path.write_text(good)
    with pytest.raises(PoolError, match="outside the working directory"):
        D.filter_subset("subset/manifest.json", pd.DataFrame({"pool_key": ["x"]}),
                        in_tmp.parent / "dedup-elsewhere")


def test_filtered_subset_of_a_copied_workdir(world_workdir, monkeypatch):
    """cp -a of the workdir: the dedup-filtered subset reads the copy's own shards."""
    from clipscale.subsets import build_index, read_manifest, subset_keys, write_subset
    from clipscale.shards import is_complete, iter_samples

    import braceexpand

    index = build_index("results/world/pool")
    manifest = write_subset(index, "s", 450, seed=1, out_dir="results/data/subsets/s")
    keys = subset_keys(manifest)
    last = manifest["shards"][-1]["shard"]
    remove = [k for k in keys if k.startswith(last)][:2]
    matches = pd.DataFrame({"pool_key": remove,
                            "pool_shard": [f"results/world/pool/{k[:5]}.tar" for k in remove]})
    out = D.filter_subset("results/data/subsets/s/manifest.json", matches,
                          "results/data/subsets_dedup/s")
    assert out["url"].startswith("results/data/subsets_dedup/s/shards/{000000..")
    links = [p for p in Path("results/data/subsets_dedup/s/shards").iterdir() if p.is_symlink()]
    assert links and not any(os.path.isabs(os.readlink(p)) for p in links)
    copy = world_workdir.parent / (world_workdir.name + "-copy")
    shutil.copytree(world_workdir, copy, symlinks=True)
    monkeypatch.chdir(copy)
    shutil.rmtree(world_workdir)
    again = read_manifest("results/data/subsets_dedup/s/manifest.json")
    read = [k for url in braceexpand.braceexpand(again["url"])
            for k, files in iter_samples(url) if is_complete(files)]
    assert read == [k for k in keys if k not in set(remove)] and len(read) == 448


# 5. the embedded world end to end ---------------------------------------------------------------


def test_world_planted_duplicates_are_found(small_world, tmp_path):
    from clipscale.world import DOWNSTREAM_SETS

    out = tmp_path
    D.hash_shards(sorted((small_world / "pool").glob("*.tar")), out / "pool.parquet", name="pool")
    tests = []
    for name in DOWNSTREAM_SETS:
        tests.append(out / f"{name}.parquet")
        D.hash_shards(D.downstream_test_shards(small_world / "downstream" / name), tests[-1], name=name)
    D.match_files(out / "pool.parquet", tests, 4, out / "m.parquet")
    assert cli.main(["dedup-recall", "--matches", str(out / "m.parquet"), "--planted",
                   str(small_world / "planted_duplicates.csv"), "--pool", str(out / "pool.parquet"),
                   "--tests", *map(str, tests), "--radius", "4", "--out", str(out / "r.json")]) == 0
    r = json.loads((out / "r.json").read_text())
    planted = pd.read_csv(small_world / "planted_duplicates.csv")
    assert r["n_planted"] == len(planted) > 0
    from clipscale.world import HARD_DUPLICATE_TRANSFORMS, NEAR_DUPLICATE_TRANSFORMS

    def recall(transforms):
        by = [r["by_transform"][t] for t in transforms if t in r["by_transform"]]
        return sum(b["found"] for b in by) / sum(b["n"] for b in by)

    assert recall(NEAR_DUPLICATE_TRANSFORMS) >= 0.6, r
    assert recall(HARD_DUPLICATE_TRANSFORMS) <= 0.3, r  # what pHash misses (dedup.modes)
    assert r["planted_not_hashed"] == 0
    # re-encoded, resized and blurred copies are within the radius (distance of every planted pair)
    for t in ("resize", "blur"):
        if t in r["by_transform"]:
            assert r["by_transform"][t]["distance_max"] <= 4, r["by_transform"][t]


# 6. command line and workflow -------------------------------------------------------------------


def test_cli_errors_name_the_file(tmp_path, capsys):
    assert cli.main(["dedup-hash", "--out", str(tmp_path / "h.parquet"), str(tmp_path / "x.tar")]) == 2
    assert "x.tar" in capsys.readouterr().err
    assert cli.main(["dedup-hash", "--out", str(tmp_path / "h.parquet")]) == 2
    (tmp_path / "h.parquet").write_text("not parquet")
    assert cli.main(["dedup-match", "--pool", str(tmp_path / "h.parquet"), "--tests",
                   str(tmp_path / "h.parquet"), "--out", str(tmp_path / "m.parquet")]) == 2
    assert "h.parquet" in capsys.readouterr().err


def test_clipscale_cli_has_the_commands():
    from clipscale import cli

    parser = cli.build_parser()
    for command in ("dedup-hash", "dedup-gather", "dedup-match", "dedup-overlap", "dedup-sheet",
                    "dedup-recall", "dedup-filter"):
        args = parser.parse_args(_minimal_args(command))
        assert callable(args.func)


def _minimal_args(command):
    return {
        "dedup-hash": ["dedup-hash", "--out", "o"],
        "dedup-gather": ["dedup-gather", "a", "--out", "o"],
        "dedup-match": ["dedup-match", "--pool", "p", "--tests", "t", "--out", "o"],
        "dedup-overlap": ["dedup-overlap", "--matches", "m", "--tests", "t", "--out", "o"],
        "dedup-sheet": ["dedup-sheet", "--matches", "m", "--out", "o"],
        "dedup-recall": ["dedup-recall", "--matches", "m", "--planted", "p", "--out", "o"],
        "dedup-filter": ["dedup-filter", "--manifest", "m", "--matches", "m", "--out-dir", "o"],
    }[command]


def test_workflow_dry_run_schedules_one_hash_job_per_group(tmp_path):
    snakefile = tmp_path / "Snakefile"
    rules = REPO / "workflow" / "rules"
    snakefile.write_text(
        'configfile: "config/config.yaml"\n\n\n'
        f'include: "{rules}/common.smk"\ninclude: "{rules}/data.smk"\ninclude: "{rules}/dedup.smk"\n\n\n'
        "rule all:\n    input:\n        dedup_targets(),\n    default_target: True\n"
    )
    extra = tmp_path / "extra.yaml"
    extra.write_text("dedup:\n  shards_per_job: 5\n  remove_duplicates: true\n")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((REPO / "config" / "config.yaml").read_text())
    result = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "-s", str(snakefile), "-d", str(tmp_path),
         "-n", "--quiet", "rules", "--configfile", "config/config.yaml", str(extra)],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout + result.stderr
    counts = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    import yaml

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    n_shards = -(-cfg["world"]["pool_size"] // cfg["world"]["shard_size"])
    assert counts["dedup_hash_pool"] == -(-n_shards // 5)
    assert counts["dedup_hash_downstream"] == len(cfg["downstream"])
    assert counts["dedup_filter_subset"] == len(cfg["grid"]["scales"])
    for rule in ("dedup_gather", "dedup_match", "dedup_overlap", "dedup_contact_sheet",
                 "dedup_planted_recall"):
        assert counts[rule] == 1, (rule, counts)


def test_filter_subset_shard_shorter_than_manifest(small_world, in_tmp):
    from clipscale.subsets import build_index, write_subset

    tmp_path = in_tmp
    write_subset(build_index(small_world / "pool"), "s", 150, seed=1, out_dir="subset")
    path = tmp_path / "subset" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["shards"][0]["n_samples"] = 10**6
    path.write_text(json.dumps(manifest))
    with pytest.raises(D.DedupError, match="says 1000000 samples"):
        D.filter_subset(path, pd.DataFrame({"pool_key": ["x"]}), tmp_path / "dedup")


def test_load_test_hashes_rejects_two_sets_of_one_name(tmp_path):
    D.hash_shards([], tmp_path / "a.parquet", name="same")
    D.hash_shards([], tmp_path / "b.parquet", name="same")
    with pytest.raises(D.DedupError, match="same dataset name"):
        D.load_test_hashes([tmp_path / "a.parquet", tmp_path / "b.parquet"])


# 7. duplicate keys in the pool are counted once (issue 29) ---------------------------------------


def test_dedup_counts_distinct_pool_samples(photos, in_tmp):
    """00001 is 00000 copied under another name; 00002 holds other images under 00000's first 5
    keys. The pool index keeps each key's first occurrence (what subsets draw); matching drops
    the other occurrences, so the overlap counts distinct samples."""
    import pyarrow as pa

    from clipscale.subsets import build_index

    pool = Path("pool")
    with ShardWriter(pool / "00000.tar") as w:
        for i in range(10):
            w.write(f"p{i:02d}", {"jpg": _jpeg(photos[i]), "txt": "c"})
    shutil.copy(pool / "00000.tar", pool / "00001.tar")
    with ShardWriter(pool / "00002.tar") as w:
        for i in range(10):
            w.write(f"p{i:02d}" if i < 5 else f"q{i:02d}", {"jpg": _jpeg(photos[10 + i]), "txt": "c"})
    ds = Path("myset")
    with ShardWriter(ds / "test" / "0.tar") as w:
        for j in list(range(5)) + list(range(10, 16)):
            w.write(f"t{j:03d}", {"jpg": _jpeg(photos[j]), "cls": "0"})
    D.hash_shards([pool / "00000.tar", pool / "00001.tar"], "g0.parquet")
    D.hash_shards([pool / "00002.tar"], "g1.parquet")
    D.hash_shards(D.downstream_test_shards(ds), "myset.parquet", name="myset")
    D.gather(["g0.parquet", "g1.parquet"], "pool.parquet")
    build_index(pool).to_parquet("index.parquet", index=False)
    assert cli.main(["dedup-match", "--pool", "pool.parquet", "--tests", "myset.parquet",
                     "--radius", "4", "--out", "m.parquet", "--pool-index", "index.parquet"]) == 0
    m = D.read_matches("m.parquet")
    report = D.read_report("m.parquet")
    assert report["n_pool"] == 15 and report["n_pool_duplicates"] == 15  # 30 hashed
    # each matched pool sample is its key's first occurrence: 00000's p00..p04 and 00002's q05
    assert sorted({(Path(s).name, k) for s, k in zip(m["pool_shard"], m["pool_key"])}) == (
        [("00000.tar", f"p{i:02d}") for i in range(5)] + [("00002.tar", "q05")])
    table = D.overlap_table(m, ["myset.parquet"], radius=4).iloc[0]
    assert table["n_pool_matched"] == 6 and table["n_matched"] == 6
    # pairs of another mode (embedding) on a left-out occurrence are dropped too
    extra = pa.table({"dataset": ["myset"] * 3, "test_key": ["t010", "t000", "t000"],
                      "test_shard": ["x"] * 3,
                      "pool_key": ["p00", "p00", "p00"],
                      "pool_shard": [str(pool / "00002.tar"), str(pool / "00001.tar"),
                                     str(Path.cwd() / pool / "00000.tar")],
                      "distance": pa.array([0] * 3, pa.uint8()), "test_phash": pa.array([0] * 3, pa.uint64()),
                      "pool_phash": pa.array([0] * 3, pa.uint64()), "mode": ["embedding"] * 3,
                      "similarity": pa.array([0.99] * 3, pa.float32())}, schema=D.PAIR_SCHEMA)
    import pyarrow.parquet as pq

    pq.write_table(extra, "embedding.parquet")
    D.match_files("pool.parquet", ["myset.parquet"], 4, "m2.parquet", modes=["phash", "embedding"],
                  embedding_pairs="embedding.parquet", pool_index=pd.read_parquet("index.parquet"))
    m2 = D.read_matches("m2.parquet")
    kept = m2[m2["mode"] == "embedding"]
    assert len(kept) == 1 and Path(kept["pool_shard"].iloc[0]).parent.name == "pool"
    assert Path(kept["pool_shard"].iloc[0]).name == "00000.tar"


def test_filtered_subset_of_a_pool_with_duplicates_keeps_them_out(in_tmp):
    """A shard re-written without its duplicates is never swapped back for the pool's shard."""
    import braceexpand

    from clipscale.shards import iter_samples
    from clipscale.subsets import build_index, subset_keys, write_subset

    pool = Path("pool")
    for s, keys in enumerate([["a", "b", "c"], ["c", "d", "d", "e"]]):
        with ShardWriter(pool / f"{s:05d}.tar") as w:
            for k in keys:
                w.write(k, {"jpg": b"x" * 10, "txt": "c"})
    write_subset(build_index(pool), "s", 5, 0, "subset")
    matches = pd.DataFrame({"pool_key": ["zzz"], "pool_shard": [str(pool / "00001.tar")]})
    out = D.filter_subset("subset/manifest.json", matches, "dedup")
    keys = [k for url in braceexpand.braceexpand(out["url"]) for k, _f in iter_samples(url)]
    assert out["n_samples"] == 5 and sorted(keys) == ["a", "b", "c", "d", "e"] == sorted(subset_keys(out))
