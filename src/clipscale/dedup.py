"""Are the downstream test images in the pool? pHash every image, match within a Hamming radius.

The paper (Sec. 3, Table 3) hashes LAION and each downstream test set with a 64-bit pHash and
reports the share of test images found in LAION. At that scale (1e8-1e9 pool images, ~1e5 test
images) the work is split so that nothing grows with the pool but time and disk:

1. hash: one job per group of pool shards (``dedup.shards_per_job``; its shards hashed in
   ``workers`` processes) and one per downstream test split. Each writes a parquet (key, shard,
   phash uint64; see clipscale.phash for the bit order). A corrupt image, an empty or truncated
   member, a non-image file is logged with its key, counted and skipped; the counts go into the
   parquet's metadata (``clipscale.dedup``) and, after the gather, into one readable report.
2. gather: the pool groups concatenated into one parquet, streamed row group by row group.
3. match: the *test* hashes (small) go into an in-memory index; the pool is streamed through it
   in batches, so memory is O(test set + one batch). Radius 0 is a hash join (pandas merge).
   A radius r > 0 uses multi-index hashing: the 64 bits are cut into m chunks; by the pigeonhole
   principle a pair within distance r agrees on at least one chunk up to floor(r/m) bits. Each
   chunk has a table from chunk value to the test hashes within floor(r/m) bits of it (the test
   side is enumerated, the pool side does m exact lookups), candidates are verified with a
   popcount, and a pair is kept only at the first chunk that finds it. No all-pairs loop; m is
   chosen from the test set size (see ``plan_chunks``).
4. report: the overlap table in the format of the paper's Table 3, matched pairs with distances,
   a contact sheet of sample matches, recall/precision against planted duplicates (the embedded
   world), and subset manifests with the matched pool samples removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from clipscale import phash as P
from clipscale.shards import ShardWriter, SkipCounter, is_complete, iter_samples

log = logging.getLogger(__name__)

META_KEY = b"clipscale.dedup"
HASH_SCHEMA = pa.schema([("key", pa.string()), ("shard", pa.string()), ("phash", pa.uint64())])
PAIR_COLUMNS = ["dataset", "test_key", "test_shard", "pool_key", "pool_shard", "distance",
                "test_phash", "pool_phash"]
PAIR_SCHEMA = pa.schema([
    ("dataset", pa.string()), ("test_key", pa.string()), ("test_shard", pa.string()),
    ("pool_key", pa.string()), ("pool_shard", pa.string()), ("distance", pa.uint8()),
    ("test_phash", pa.uint64()), ("pool_phash", pa.uint64()),
])
OVERLAP_COLUMNS = ["dataset", "overlap_pct", "overlap_pct_exact", "radius", "n_test",
                   "n_matched", "n_matched_exact", "n_pool_matched", "n_skipped"]


class DedupError(ValueError):
    """Input the dedup step cannot use (named in the message)."""


# 1. hashing -------------------------------------------------------------------------------------


def image_member(files: dict) -> str | None:
    """The extension of a sample's (non-empty) image member, or None."""
    for ext in P.IMAGE_EXTENSIONS:
        if files.get(ext):
            return ext
    return None


def iter_hashes(tars: Iterable[str | Path], skipped: SkipCounter, stats: dict,
                batch_size: int = 4096) -> Iterator[tuple[list[str], str, np.ndarray]]:
    """Yield (keys, shard, hashes) per tar. Bad samples are counted in ``skipped`` (with the key)
    and left out, each once, with its most specific reason (an empty .jpg is an "empty image
    member", not also "no image member"); a cut or corrupt tar counts once for the shard.
    ``stats`` gets n_samples (samples read) and n_hashed."""
    for tar in tars:
        tar = str(tar)
        hasher = P.BatchHasher(batch_size)
        keys: list[str] = []
        for key, files in iter_samples(tar, skipped):
            stats["n_samples"] = stats.get("n_samples", 0) + 1
            ext = image_member(files)
            if ext is None:
                if any(e in files for e in P.IMAGE_EXTENSIONS):
                    skipped.add("empty image member", f"{tar}:{key}")
                else:
                    skipped.add("no image member", f"{tar}:{key} (members: {sorted(files)})")
                continue
            try:
                hasher.add_bytes(files[ext], ext)
            except Exception as e:  # Pillow raises many types for bad bytes
                from PIL import UnidentifiedImageError

                reason = ("not an image" if isinstance(e, UnidentifiedImageError)
                          else f"corrupt image ({type(e).__name__})")
                skipped.add(reason, f"{tar}:{key}.{ext}: {e}")
                continue
            keys.append(key)
        hashes = hasher.flush()
        stats["n_hashed"] = stats.get("n_hashed", 0) + len(hashes)
        yield keys, tar, hashes


def _hash_table(keys: list[str], shard: str, hashes: np.ndarray) -> pa.Table:
    return pa.table({"key": pa.array(keys, pa.string()),
                     "shard": pa.array([shard] * len(keys), pa.string()),
                     "phash": pa.array(hashes, pa.uint64())}, schema=HASH_SCHEMA)


def _hash_one(tar: str, batch_size: int) -> tuple[list[str], str, np.ndarray, SkipCounter, dict]:
    """Hash one tar (a worker's task): keys, shard, hashes, what was skipped, counts."""
    skipped, stats = SkipCounter(), {"n_samples": 0, "n_hashed": 0}
    ((keys, shard, hashes),) = iter_hashes([tar], skipped, stats, batch_size)
    return keys, shard, hashes, skipped, stats


def hash_shards(tars: Sequence[str | Path], out: str | Path, name: str | None = None,
                batch_size: int = 4096, workers: int = 1) -> dict:
    """Hash every image of the tar shards into ``out`` (parquet: key, shard, phash).

    ``workers`` > 1 hashes that many shards at a time in separate processes (rows are written in
    the order of ``tars`` all the same). Returns the report (also stored in the parquet's
    metadata): name, shards, n_samples, n_hashed, skipped (total, counts by reason, example
    keys), seconds.
    """
    tars = [str(t) for t in tars]
    for tar in tars:
        if not Path(tar).is_file():
            raise DedupError(f"shard not found: {tar}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    skipped, stats = SkipCounter(), {"n_samples": 0, "n_hashed": 0}
    start = time.perf_counter()
    writer = pq.ParquetWriter(tmp, HASH_SCHEMA)
    try:
        if workers > 1 and len(tars) > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(min(workers, len(tars))) as ex:
                for keys, shard, hashes, part_skipped, part in ex.map(
                        _hash_one, tars, [batch_size] * len(tars)):
                    skipped.merge(part_skipped)
                    for k, v in part.items():
                        stats[k] += v
                    writer.write_table(_hash_table(keys, shard, hashes))
                    log.info("%s: %d images hashed", shard, len(hashes))
        else:
            for keys, shard, hashes in iter_hashes(tars, skipped, stats, batch_size):
                writer.write_table(_hash_table(keys, shard, hashes))
                log.info("%s: %d images hashed", shard, len(hashes))
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    seconds = time.perf_counter() - start
    report = {"name": name or out.stem, "shards": tars, **stats, "skipped": skipped.as_dict(),
              "seconds": round(seconds, 3),
              "images_per_s": round(stats["n_hashed"] / seconds, 1) if seconds > 0 else None}
    _set_metadata(tmp, out, report)
    log.info("%s: %d samples, %d hashed, %d skipped %s (%.1f images/s, %d worker%s)",
             report["name"], stats["n_samples"], stats["n_hashed"], skipped.total,
             dict(skipped.counts), report["images_per_s"] or 0, workers, "s" * (workers != 1))
    return report


def _set_metadata(src: Path, dst: Path, report: dict) -> None:
    """Re-write the parquet's footer with the report in its schema metadata (row groups are
    copied as they are), then move it into place."""
    table_file = pq.ParquetFile(src)
    schema = table_file.schema_arrow.with_metadata({META_KEY: json.dumps(report).encode()})
    tmp2 = dst.with_name(dst.name + ".tmp2")
    with pq.ParquetWriter(tmp2, schema) as writer:
        for i in range(table_file.num_row_groups):
            writer.write_table(table_file.read_row_group(i).replace_schema_metadata(schema.metadata))
    src.unlink()
    tmp2.replace(dst)


def read_report(path: str | Path) -> dict:
    """The report stored in a hash (or matches) parquet's metadata."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except FileNotFoundError:
        raise DedupError(f"hash file not found: {path}") from None
    except pa.ArrowInvalid as e:
        raise DedupError(f"{path} is not a parquet file: {e}") from None
    if META_KEY not in meta:
        raise DedupError(f"{path} has no clipscale.dedup report in its metadata "
                         "(not written by clipscale.dedup?)")
    return json.loads(meta[META_KEY])


def downstream_test_shards(dataset_dir: str | Path, split: str = "test") -> list[Path]:
    """The tar shards of a clip_benchmark webdataset split: {dir}/{split}/{0..n-1}.tar as listed
    by nshards.txt, or every .tar there (in numeric order) when there is no nshards.txt."""
    split_dir = Path(dataset_dir) / split
    if not split_dir.is_dir():
        raise DedupError(f"no {split}/ split in downstream set {dataset_dir}")
    nshards = split_dir / "nshards.txt"
    if nshards.exists():
        try:
            n = int(nshards.read_text().strip())
        except ValueError:
            raise DedupError(f"{nshards}: not a number: {nshards.read_text()[:40]!r}") from None
        tars = [split_dir / f"{i}.tar" for i in range(n)]
        missing = [str(t) for t in tars if not t.is_file()]
        if missing:
            raise DedupError(f"{nshards} lists {n} shards, missing: {missing[:5]}")
        return tars
    tars = sorted(split_dir.glob("*.tar"), key=lambda p: (len(p.stem), p.stem))
    if not tars:
        raise DedupError(f"no .tar shards in {split_dir}")
    return tars


def group_shards(shards: Sequence[str], shards_per_job: int) -> dict[str, list[str]]:
    """Pool shards -> hash jobs: {'00000': first shards_per_job shards, '00001': ...}."""
    if shards_per_job < 1:
        raise DedupError(f"dedup.shards_per_job must be >= 1, got {shards_per_job}")
    shards = list(shards)
    return {f"{i:05d}": shards[s : s + shards_per_job]
            for i, s in enumerate(range(0, len(shards), shards_per_job))}


def list_shards(folder: str | Path) -> list[str]:
    """The .tar shards of a pool directory, sorted (the files clipscale.subsets.pool_shards
    indexes): one directory read, no stat per shard (except of symbolic links)."""
    with os.scandir(folder) as entries:  # Path.suffix == ".tar": ".tar" alone has none
        names = sorted(e.name for e in entries
                       if e.name.endswith(".tar") and len(e.name) > 4 and e.is_file())
    base = os.path.join(str(Path(folder)), "")  # the paths str(Path(folder) / name) gives
    return [base + name for name in names]


def shards_stamp(shards: Sequence[str], cache: dict | None = None) -> str:
    """A digest of the shards' paths, sizes and modification times (ns): it changes when a shard
    is added, removed, renamed, rewritten or touched. Given to a job as a param, it makes
    Snakemake rerun the job when its shards change (the params trigger) without listing every
    shard as an input file. ``cache`` (path -> (size, mtime_ns)) saves the stat of a shard
    stamped twice."""
    cache = {} if cache is None else cache
    lines = []
    for shard in shards:
        stamp = cache.get(shard)
        if stamp is None:
            try:
                st = os.stat(shard)
                stamp = cache[shard] = st.st_size, st.st_mtime_ns
            except FileNotFoundError:
                stamp = cache[shard] = -1, -1
        lines.append(f"{shard}\0{stamp[0]}\0{stamp[1]}\n")
    return hashlib.blake2b("".join(lines).encode(), digest_size=16).hexdigest()


# 2. gather --------------------------------------------------------------------------------------


def gather(parts: Sequence[str | Path], out: str | Path) -> dict:
    """Concatenate pool hash files (streamed, one row group at a time) into ``out``; its
    metadata gets the summed report (n_samples, n_hashed, skipped) and the per-part reports."""
    if not parts:
        raise DedupError("no pool hash files to gather")
    reports = [read_report(p) for p in parts]
    skipped = SkipCounter()
    for r in reports:
        skipped.counts.update(r["skipped"]["counts"])
        for reason, examples in r["skipped"]["examples"].items():
            have = skipped.examples.setdefault(reason, [])
            have.extend(examples[: max(0, 10 - len(have))])
    report = {
        "name": "pool",
        "n_parts": len(parts),
        "n_shards": sum(len(r["shards"]) for r in reports),
        "n_samples": sum(r["n_samples"] for r in reports),
        "n_hashed": sum(r["n_hashed"] for r in reports),
        "skipped": skipped.as_dict(),
        "seconds": round(sum(r["seconds"] for r in reports), 3),
        "parts": [{k: r[k] for k in ("name", "n_samples", "n_hashed")} |
                  {"skipped": r["skipped"]["total"]} for r in reports],
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    schema = HASH_SCHEMA.with_metadata({META_KEY: json.dumps(report).encode()})
    n = 0
    with pq.ParquetWriter(tmp, schema) as writer:
        for part in parts:
            f = open_hashes(part)
            for i in range(f.num_row_groups):
                rg = f.read_row_group(i)
                n += rg.num_rows
                writer.write_table(rg.replace_schema_metadata(schema.metadata))
    if n != report["n_hashed"]:
        tmp.unlink()
        raise DedupError(f"gathered {n} rows but the parts report {report['n_hashed']} hashes")
    tmp.replace(out)
    log.info("gathered %d pool hashes from %d files", n, len(parts))
    return report


def hash_report(pool: str | Path, downstream: Sequence[str | Path]) -> dict:
    """One readable summary of every hash job: pool totals and each downstream set."""
    out = {"pool": read_report(pool), "downstream": {}}
    for path in downstream:
        r = read_report(path)
        out["downstream"][r["name"]] = r
    return out


# 3. matching ------------------------------------------------------------------------------------


def _flip_masks(bits: int, rho: int) -> np.ndarray:
    """All masks of `bits` bits with at most `rho` ones (the chunk's Hamming ball)."""
    masks = [np.zeros(1, dtype=np.uint64)]
    singles = np.uint64(1) << np.arange(bits, dtype=np.uint64)
    for k in range(1, rho + 1):
        combos = np.array(list(combinations(range(bits), k)), dtype=np.int64).reshape(-1, k)
        masks.append(np.bitwise_or.reduce(singles[combos], axis=1))
    return np.concatenate(masks)


def _chunk_widths(m: int) -> list[int]:
    return [64 // m + (1 if j < 64 % m else 0) for j in range(m)]


def _ball(bits: int, rho: int) -> int:
    return sum(math.comb(bits, k) for k in range(rho + 1))


DIRECT_BITS = 24          # chunk tables with at most 2**24 cells are direct-addressed arrays
MAX_ENTRIES = 40_000_000  # entries of all chunk tables (ids; ~0.3-0.6 GB with the keys)
VERIFY_COST = 3.0         # one candidate verification, in units of one direct lookup


def plan_chunks(n_unique: int, radius: int, max_entries: int = MAX_ENTRIES) -> int:
    """Number of chunks m for multi-index hashing of ``n_unique`` hashes at ``radius``.

    Expected cost per query (assuming roughly uniform chunk values): m lookups (a direct array
    index, or a binary search for chunks wider than DIRECT_BITS) plus the expected candidates
    n_unique * sum_j |ball(b_j, rho)| / 2**b_j, each verified. Plans whose tables would hold more
    than max_entries are skipped (m = radius + 1, exact chunks, is always allowed).
    """
    best, best_cost = radius + 1, math.inf
    for m in range(1, radius + 2):
        rho = radius // m
        widths = _chunk_widths(m)
        balls = [_ball(b, rho) for b in widths]
        entries = n_unique * sum(balls)
        if entries > max_entries and m < radius + 1:
            continue
        lookups = sum(1.0 if b <= DIRECT_BITS else 2.0 + math.log2(max(2, n_unique * v)) / 4
                      for b, v in zip(widths, balls))
        candidates = n_unique * sum(v / 2.0**b for b, v in zip(widths, balls))
        cost = lookups + VERIFY_COST * candidates
        if cost < best_cost:
            best, best_cost = m, cost
    return best


@dataclass
class _Table:
    lo: int
    bits: int
    mask: np.uint64
    keys: np.ndarray | None  # sorted distinct cell values; None for a direct-addressed table
    indptr: np.ndarray       # int64, cell i holds ids[indptr[i]:indptr[i+1]]
    ids: np.ndarray          # ids of distinct indexed hashes


def _expand(start: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, position) for every element of the ranges [start_i, start_i + count_i)."""
    total = int(count.sum())
    owner = np.repeat(np.arange(len(count)), count)
    first = np.cumsum(count) - count
    pos = np.arange(total, dtype=np.int64) - np.repeat(first, count) + np.repeat(start, count)
    return owner, pos


class HammingIndex:
    """All indexed hashes within Hamming distance ``radius`` of a query (multi-index hashing).

    Built over the (small) test side; queried with batches of pool hashes. Equal hashes are
    indexed once and expanded to all their rows at the end, so duplicates on either side cost
    nothing extra until the pairs are written.
    """

    def __init__(self, hashes: np.ndarray, radius: int, n_chunks: int | None = None,
                 max_entries: int = MAX_ENTRIES, max_candidates: int = 1 << 23):
        if not 0 <= radius <= 32:
            raise DedupError(f"radius must be in [0, 32], got {radius}")
        hashes = np.asarray(hashes, dtype=np.uint64)
        self.radius = radius
        self.n = len(hashes)
        self.uniq, inverse = np.unique(hashes, return_inverse=True)
        self._rows = np.argsort(inverse, kind="stable")
        self._row_count = np.bincount(inverse, minlength=len(self.uniq))
        self._row_start = np.cumsum(self._row_count) - self._row_count
        self.m = n_chunks or plan_chunks(len(self.uniq), radius, max_entries)
        if not 1 <= self.m <= radius + 1:
            raise DedupError(f"n_chunks must be in [1, radius + 1 = {radius + 1}], got {self.m}")
        self.rho = radius // self.m
        entries = len(self.uniq) * sum(_ball(b, self.rho) for b in _chunk_widths(self.m))
        if self.rho > 0 and entries > max_entries:
            raise DedupError(f"{self.m} chunks at radius {radius} need {entries} table entries "
                             f"(> {max_entries}); use more chunks")
        self.max_candidates = max_candidates
        self.tables: list[_Table] = []
        lo = 0
        for bits in _chunk_widths(self.m):
            self.tables.append(self._build(lo, bits))
            lo += bits

    @property
    def n_entries(self) -> int:
        return sum(len(t.ids) for t in self.tables)

    def describe(self) -> dict:
        return {"radius": self.radius, "n_indexed": self.n, "n_unique": len(self.uniq),
                "chunks": self.m, "chunk_bits": [t.bits for t in self.tables],
                "chunk_radius": self.rho, "entries": self.n_entries,
                "direct": [t.keys is None for t in self.tables]}

    def _build(self, lo: int, bits: int) -> _Table:
        mask = np.uint64((1 << bits) - 1)
        values = (self.uniq >> np.uint64(lo)) & mask
        flips = _flip_masks(bits, self.rho)
        cells = (values[:, None] ^ flips[None, :]).ravel()
        id_type = np.int32 if len(self.uniq) < 2**31 else np.int64
        ids = np.repeat(np.arange(len(self.uniq), dtype=id_type), len(flips))
        order = np.argsort(cells, kind="stable")
        cells, ids = cells[order], ids[order]
        if bits <= DIRECT_BITS:
            counts = np.bincount(cells.astype(np.int64), minlength=1 << bits)
            keys = None
        else:
            keys, counts = np.unique(cells, return_counts=True)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return _Table(lo, bits, mask, keys, indptr, ids)

    def _lookup(self, t: _Table, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = (q >> np.uint64(t.lo)) & t.mask
        if t.keys is None:
            v = v.astype(np.int64)
            start = t.indptr[v]
            return start, t.indptr[v + 1] - start
        pos = np.searchsorted(t.keys, v)
        hit = pos < len(t.keys)
        hit[hit] = t.keys[pos[hit]] == v[hit]
        start = t.indptr[np.where(hit, pos, 0)]
        end = t.indptr[np.where(hit, pos + 1, 0)]
        return start, np.where(hit, end - start, 0)

    def search_unique(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query index, distinct-hash id, distance) of every pair within the radius."""
        q = np.asarray(q, dtype=np.uint64)
        out_q, out_u, out_d = [], [], []
        for j, t in enumerate(self.tables):
            start, count = self._lookup(t, q)
            # cut the queries so that one piece expands to at most max_candidates pairs
            cum = np.cumsum(count)
            total = int(cum[-1]) if len(cum) else 0
            cuts = np.searchsorted(cum, np.arange(self.max_candidates, total, self.max_candidates),
                                   side="right")
            bounds = np.unique(np.concatenate([[0], cuts, [len(q)]]))
            for a, b in zip(bounds[:-1], bounds[1:]):
                owner, pos = _expand(start[a:b], count[a:b])
                if len(owner) == 0:
                    continue
                qi = owner + a
                ui = t.ids[pos]
                x = q[qi] ^ self.uniq[ui]
                d = np.bitwise_count(x)
                keep = d <= self.radius
                for prev in self.tables[:j]:  # report a pair once: at its first matching chunk
                    chunk_d = np.bitwise_count((x >> np.uint64(prev.lo)) & prev.mask)
                    keep &= chunk_d > self.rho
                out_q.append(qi[keep])
                out_u.append(ui[keep])
                out_d.append(d[keep].astype(np.uint8))
        if not out_q:
            return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8))
        return np.concatenate(out_q), np.concatenate(out_u), np.concatenate(out_d)

    def search(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query index, indexed row, distance) of every pair within the radius."""
        qi, ui, d = self.search_unique(q)
        owner, pos = _expand(self._row_start[ui], self._row_count[ui])
        return qi[owner], self._rows[pos], d[owner]


def match_exact(test: pd.DataFrame, pool: pd.DataFrame) -> pd.DataFrame:
    """Pairs with equal hashes: a hash join (pandas merge on phash). Both frames have a phash
    column (uint64); the result has the columns of both (suffixes _test, _pool) and distance 0."""
    pairs = test.merge(pool, on="phash", how="inner", suffixes=("_test", "_pool"))
    pairs["distance"] = np.zeros(len(pairs), dtype=np.uint8)
    return pairs


def load_test_hashes(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Hashes of the downstream sets: dataset, key, shard, phash (dataset from each report)."""
    frames, names = [], []
    for path in paths:
        names.append(read_report(path)["name"])
        df = open_hashes(path).read().to_pandas()
        df.insert(0, "dataset", names[-1])
        frames.append(df)
    if not frames:
        raise DedupError("no downstream hash files given")
    if len(names) != len(set(names)):
        raise DedupError(f"two downstream hash files have the same dataset name: {names}")
    test = pd.concat(frames, ignore_index=True)
    test["phash"] = test["phash"].astype(np.uint64)
    return test


def open_hashes(path: str | Path) -> pq.ParquetFile:
    """A hash parquet (key, shard, phash), checked; DedupError naming the file otherwise."""
    if not Path(path).is_file():
        raise DedupError(f"hash file not found: {path}")
    try:
        f = pq.ParquetFile(path)
    except pa.ArrowInvalid as e:
        raise DedupError(f"{path} is not a parquet file: {e}") from None
    if f.schema_arrow.remove_metadata() != HASH_SCHEMA:
        raise DedupError(f"{path}: not a hash file (columns {f.schema_arrow.names}, "
                         f"expected key: string, shard: string, phash: uint64)")
    return f


def iter_pool_batches(path: str | Path, batch_size: int = 1 << 20) -> Iterator[pa.RecordBatch]:
    f = open_hashes(path)
    return f.iter_batches(batch_size=batch_size, columns=["key", "shard", "phash"])


def match(test: pd.DataFrame, pool_batches: Iterable[pa.RecordBatch], radius: int,
          out: str | Path, n_chunks: int | None = None) -> dict:
    """Write every (test, pool) pair within ``radius`` to ``out`` (parquet, PAIR_SCHEMA) and
    return a report. ``test`` has dataset, key, shard, phash; the pool comes in record batches
    (key, shard, phash) so it is never in memory as a whole. Radius 0 is a pandas hash join;
    radius > 0 goes through a HammingIndex over the test hashes."""
    start = time.perf_counter()
    test = test.reset_index(drop=True)
    test_hashes = test["phash"].to_numpy(dtype=np.uint64)
    index = HammingIndex(test_hashes, radius, n_chunks=n_chunks) if radius > 0 else None
    exact_side = test[["phash"]].assign(row=np.arange(len(test))) if radius == 0 else None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    n_pool = n_pairs = 0
    try:
        n_pool, n_pairs = _write_pairs(test, test_hashes, index, exact_side, pool_batches, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - start
    report = {"radius": radius, "n_test": len(test), "n_pool": n_pool, "n_pairs": n_pairs,
              "seconds": round(seconds, 3),
              "method": "hash join" if index is None else "multi-index hashing",
              "index": index.describe() if index is not None else None}
    _set_metadata(tmp, out, report)
    log.info("matched %d test against %d pool hashes at radius %d: %d pairs in %.1fs",
             len(test), n_pool, radius, n_pairs, seconds)
    return report


def _write_pairs(test, test_hashes, index, exact_side, pool_batches, tmp) -> tuple[int, int]:
    n_pool = n_pairs = 0
    with pq.ParquetWriter(tmp, PAIR_SCHEMA) as writer:
        for batch in pool_batches:
            q = batch.column("phash").to_numpy(zero_copy_only=False).astype(np.uint64, copy=False)
            if index is not None:
                qi, rows, dist = index.search(q)
            else:
                pool_side = pd.DataFrame({"phash": q, "qi": np.arange(len(q))})
                joined = match_exact(exact_side, pool_side)
                qi, rows = joined["qi"].to_numpy(), joined["row"].to_numpy()
                dist = joined["distance"].to_numpy()
            n_pool += len(q)
            if len(qi) == 0:
                continue
            order = np.lexsort((qi, rows))
            qi, rows, dist = qi[order], rows[order], dist[order]
            sub = test.iloc[rows]
            table = pa.table({
                "dataset": pa.array(sub["dataset"].to_numpy(), pa.string()),
                "test_key": pa.array(sub["key"].to_numpy(), pa.string()),
                "test_shard": pa.array(sub["shard"].to_numpy(), pa.string()),
                "pool_key": batch.column("key").take(pa.array(qi)),
                "pool_shard": batch.column("shard").take(pa.array(qi)),
                "distance": pa.array(dist.astype(np.uint8), pa.uint8()),
                "test_phash": pa.array(test_hashes[rows], pa.uint64()),
                "pool_phash": pa.array(q[qi], pa.uint64()),
            }, schema=PAIR_SCHEMA)
            writer.write_table(table)
            n_pairs += len(qi)
            log.info("%d pool hashes matched, %d pairs so far", n_pool, n_pairs)
    return n_pool, n_pairs


def match_files(pool: str | Path, tests: Sequence[str | Path], radius: int, out: str | Path,
                batch_size: int = 1 << 20) -> dict:
    test = load_test_hashes(tests)
    return match(test, iter_pool_batches(pool, batch_size), radius, out)


def read_matches(path: str | Path) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except FileNotFoundError:
        raise DedupError(f"matches file not found: {path}") from None
    missing = set(PAIR_COLUMNS) - set(df.columns)
    if missing:
        raise DedupError(f"{path}: not a matches file (missing columns {sorted(missing)})")
    return df


# 4. reports -------------------------------------------------------------------------------------


def overlap_table(matches: pd.DataFrame, tests: Sequence[str | Path], radius: int) -> pd.DataFrame:
    """The paper's Table 3 for our sets: % of each test set found in the pool, at radius 0
    (identical hashes) and at ``radius``; n_test = test images hashed, n_skipped = not hashable."""
    rows = []
    for path in tests:
        report = read_report(path)
        name = report["name"]
        m = matches[(matches["dataset"] == name) & (matches["distance"] <= radius)]
        exact = m[m["distance"] == 0]
        n_test = int(report["n_hashed"])
        n_matched, n_exact = m["test_key"].nunique(), exact["test_key"].nunique()
        rows.append({
            "dataset": name,
            "overlap_pct": round(100.0 * n_matched / n_test, 4) if n_test else float("nan"),
            "overlap_pct_exact": round(100.0 * n_exact / n_test, 4) if n_test else float("nan"),
            "radius": radius, "n_test": n_test, "n_matched": int(n_matched),
            "n_matched_exact": int(n_exact), "n_pool_matched": int(m["pool_key"].nunique()),
            "n_skipped": int(report["skipped"]["total"]),
        })
    return pd.DataFrame(rows, columns=OVERLAP_COLUMNS)


def fetch_images(wanted: Iterable[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
    """Image bytes of (shard path, key) pairs: one streaming pass over each shard needed."""
    by_shard: dict[str, set[str]] = {}
    for shard, key in wanted:
        by_shard.setdefault(shard, set()).add(key)
    found = {}
    for shard, keys in by_shard.items():
        if not Path(shard).is_file():
            log.warning("contact sheet: shard %s not found", shard)
            continue
        left = set(keys)
        for key, files in iter_samples(shard):
            if key in left and (ext := image_member(files)):
                found[(shard, key)] = files[ext]
                left.discard(key)
                if not left:
                    break
    return found


def contact_sheet(matches: pd.DataFrame, out: str | Path, n_pairs: int = 24, seed: int = 0,
                  columns: int = 4) -> int:
    """PNG of sample matches: each test image beside its pool match, with the distance.

    Pairs are drawn at random (seeded), the same number from each dataset as far as possible,
    and shown sorted by dataset and distance. Returns the number of pairs drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image
    import io

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    picked = []
    if len(matches) and n_pairs > 0:
        groups = {name: g for name, g in matches.groupby("dataset", sort=True)}
        per = max(1, n_pairs // len(groups))
        for name, g in groups.items():
            picked.append(g.iloc[np.sort(rng.choice(len(g), size=min(per, len(g)), replace=False))])
        sample = pd.concat(picked)
        if len(sample) < n_pairs:  # fill up from the rest
            rest = matches.drop(sample.index)
            extra = min(n_pairs - len(sample), len(rest))
            sample = pd.concat([sample, rest.iloc[np.sort(rng.choice(len(rest), extra, replace=False))]])
        sample = sample.iloc[:n_pairs].sort_values(["dataset", "distance", "test_key"])
    else:
        sample = matches.iloc[:0]
    images = fetch_images(list(zip(sample["test_shard"], sample["test_key"]))
                          + list(zip(sample["pool_shard"], sample["pool_key"])))

    def load(shard, key):
        data = images.get((shard, key))
        if data is None:
            return None
        try:
            return Image.open(io.BytesIO(data)).convert("RGB")
        except Exception:
            return None

    n = len(sample)
    rows = max(1, math.ceil(n / columns))
    height = rows * 1.55 + 0.7
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(2 * columns * 1.3, height), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, pair in enumerate(sample.itertuples(index=False)):
        r, c = divmod(i, columns)
        for k, (shard, key, label) in enumerate([
            (pair.test_shard, pair.test_key, f"{pair.dataset}\n{pair.test_key}"),
            (pair.pool_shard, pair.pool_key, f"pool {pair.pool_key}\nd={pair.distance}"),
        ]):
            ax = axes[r, 2 * c + k]
            img = load(shard, key)
            if img is not None:
                ax.imshow(img, interpolation="nearest")
            else:
                ax.text(0.5, 0.5, "missing", ha="center", va="center", fontsize=6)
            ax.set_title(label, fontsize=5.5)
    if n == 0:
        axes[0, 0].text(0, 0.5, "no test image was found in the pool", fontsize=9)
    fig.suptitle(f"pHash matches: test image (left) beside pool image (right), "
                 f"{n} of {len(matches)} pairs", fontsize=8, y=1 - 0.12 / height)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.75 / height, wspace=0.08,
                        hspace=0.45)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return n


def planted_recall(matches: pd.DataFrame, planted: pd.DataFrame, radius: int,
                   pool_hashes: pd.DataFrame | None = None,
                   test_hashes: pd.DataFrame | None = None) -> dict:
    """Recall and precision of the matches against the planted near-duplicates.

    recall: planted (pool_key, dataset, test_key) pairs found / planted pairs.
    precision: found pairs that are planted / all pairs found. A pair that is not planted can
    still be a true duplicate the world made by chance (two renders that look alike), so the
    report also counts the pool keys of unplanted pairs. With the hashes given, the distance of
    every planted pair is reported too (so a miss shows how far it was). Planted copies of sets
    that were not hashed (a set the world makes but the config leaves out) are not counted as
    misses: they are counted per set in ``planted_in_other_sets``."""
    cols = ["pool_key", "dataset", "test_key"]
    planted = planted.astype({c: str for c in cols})
    other: dict[str, int] = {}
    if test_hashes is not None:
        matched = planted["dataset"].isin(set(test_hashes["dataset"].astype(str)))
        other = {str(k): int(v) for k, v in planted.loc[~matched, "dataset"].value_counts().sort_index().items()}
        planted = planted[matched]
    found = matches[matches["distance"] <= radius][cols + ["distance"]].astype({c: str for c in cols})
    truth = planted.merge(found, on=cols, how="left")
    truth["found"] = truth["distance"].notna()
    truth["found_exact"] = truth["distance"] == 0
    hits = found.merge(planted[cols].drop_duplicates(), on=cols, how="left", indicator=True)
    is_planted = hits["_merge"] == "both"

    def ratio(a, b):
        return round(float(a) / b, 6) if b else None

    n_planted = len(planted)
    # each planted pair counts once even if found twice (it cannot be: pairs are unique)
    truth = truth.drop_duplicates(subset=cols)
    report = {
        "radius": radius,
        "n_planted": n_planted,
        "n_found": int(truth["found"].sum()),
        "recall": ratio(truth["found"].sum(), n_planted),
        "recall_exact": ratio(truth["found_exact"].sum(), n_planted),
        "n_pairs": len(found),
        "n_pairs_planted": int(is_planted.sum()),
        "precision": ratio(is_planted.sum(), len(found)),
        "n_pairs_exact": int((found["distance"] == 0).sum()),
        "precision_exact": ratio((is_planted & (hits["distance"] == 0)).sum(),
                                 int((found["distance"] == 0).sum())),
        "unplanted_pool_keys": int(hits.loc[~is_planted, "pool_key"].nunique()),
        "unplanted_examples": hits.loc[~is_planted, cols + ["distance"]].head(10).to_dict("records"),
        "by_radius": {}, "by_transform": {}, "by_dataset": {},
        "planted_in_other_sets": other,
    }
    for r in range(radius + 1):  # how recall and precision trade off below the radius used
        within = found["distance"] <= r
        n_true = int(truth["distance"].le(r).sum())
        report["by_radius"][str(r)] = {
            "recall": ratio(n_true, n_planted), "n_pairs": int(within.sum()),
            "precision": ratio((is_planted & within.to_numpy()).sum(), int(within.sum()))}
    if pool_hashes is not None and test_hashes is not None:
        ph = pool_hashes[["key", "phash"]].rename(columns={"key": "pool_key", "phash": "pool_phash"})
        th = test_hashes[["dataset", "key", "phash"]].rename(columns={"key": "test_key",
                                                                      "phash": "test_phash"})
        d = truth.merge(ph.astype({"pool_key": str}), on="pool_key", how="left").merge(
            th.astype({"test_key": str}), on=["dataset", "test_key"], how="left")
        ok = d["pool_phash"].notna() & d["test_phash"].notna()
        truth = truth.assign(true_distance=np.nan)
        truth.loc[ok.to_numpy(), "true_distance"] = P.hamming(
            d.loc[ok, "pool_phash"].astype(np.uint64).to_numpy(),
            d.loc[ok, "test_phash"].astype(np.uint64).to_numpy()).astype(float)
        report["planted_not_hashed"] = int((~ok).sum())
    for col, key in (("transform", "by_transform"), ("dataset", "by_dataset")):
        if col not in truth:
            continue
        for value, g in truth.groupby(col, sort=True):
            entry = {"n": len(g), "found": int(g["found"].sum()),
                     "recall": ratio(g["found"].sum(), len(g)),
                     "recall_exact": ratio(g["found_exact"].sum(), len(g))}
            if "true_distance" in g:
                dist = g["true_distance"].dropna()
                entry["distance_median"] = float(dist.median()) if len(dist) else None
                entry["distance_max"] = float(dist.max()) if len(dist) else None
            report[key][str(value)] = entry
    report["missed_examples"] = truth.loc[~truth["found"], [c for c in planted.columns] + (
        ["true_distance"] if "true_distance" in truth else [])].head(10).to_dict("records")
    return report


def read_pool_hashes(path: str | Path, keys: Iterable[str] | None = None) -> pd.DataFrame:
    """Pool hashes (key, shard, phash), all of them or only the rows of the given keys."""
    filters = [("key", "in", sorted(set(keys)))] if keys is not None else None
    if keys is not None and not filters[0][2]:
        return pd.DataFrame({"key": [], "shard": [], "phash": np.zeros(0, np.uint64)})
    return pd.read_parquet(path, filters=filters)


def read_planted(path: str | Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype=str)
    except FileNotFoundError:
        raise DedupError(f"planted duplicates file not found: {path}") from None
    missing = {"pool_key", "dataset", "test_key"} - set(df.columns)
    if missing:
        raise DedupError(f"{path}: missing columns {sorted(missing)}")
    return df


def filter_subset(manifest_path: str | Path, matches: pd.DataFrame, out_dir: str | Path) -> dict:
    """Write ``out_dir`` (shards/ + manifest.json, the format of clipscale.subsets) holding the
    subset of ``manifest_path`` without the pool samples in ``matches``.

    Shards keep their boundaries: a whole pool shard with no matched sample is linked without
    being read; a shard with one (or the cut last shard of the subset) is re-written, streamed,
    and its entry says how many samples it lost ("removed"). A shard left empty is dropped. With
    a pool_shard column in ``matches`` only those shards are read; without it, every shard is.
    """
    from clipscale.subsets import (link_shard, read_manifest, require_in_workdir, shard_url,
                                   workdir_path)

    manifest = read_manifest(manifest_path)
    keys = matches["pool_key"].astype(str)
    if "pool_shard" in matches:
        by_shard: dict[str, set[str]] = {}
        for shard, key in zip(matches["pool_shard"].astype(str), keys):
            by_shard.setdefault(_resolved(shard), set()).add(key)
    else:
        by_shard = None
        everywhere = set(keys)
    out_dir = Path(out_dir)
    shard_dir = out_dir / "shards"
    shard_dir_name = require_in_workdir(shard_dir, "filtered subset folder")
    shard_dir.mkdir(parents=True, exist_ok=True)
    for old in shard_dir.iterdir():
        old.unlink()
    entries, removed_keys = [], []
    for entry in manifest["shards"]:
        src, n_in, partial = entry["file"], int(entry["n_samples"]), bool(entry.get("partial"))
        if not Path(src).exists():
            raise DedupError(f"{manifest_path}: shard {src} not found")
        drop = everywhere if by_shard is None else by_shard.get(_resolved(entry["path"]), set())
        dst = shard_dir / f"{len(entries):06d}.tar"
        if by_shard is not None and not drop and not partial:
            link_shard(entry["path"], dst)
            kept, dropped = n_in, []
        else:
            kept, dropped = _copy_without(src, dst, n_in, drop)
            if kept == 0:
                dst.unlink()
                removed_keys += dropped
                continue
            if kept == n_in and not partial and Path(entry["path"]).exists():
                dst.unlink()  # nothing removed after all: link the pool's shard instead
                link_shard(entry["path"], dst)
        removed_keys += dropped
        entries.append({**entry, "n_samples": kept, "partial": partial or bool(dropped),
                        "removed": len(dropped), "file": workdir_path(dst)})
    if not entries:
        raise DedupError(f"{manifest_path}: every sample of the subset matched a test image")
    out = {
        **{k: v for k, v in manifest.items() if k not in ("shards", "url", "n_shards", "n_samples")},
        "name": manifest.get("name", out_dir.name),
        "n_samples": int(sum(e["n_samples"] for e in entries)),
        "n_shards": len(entries),
        "url": shard_url(shard_dir_name, len(entries)),
        "shards": entries,
        "dedup": {"source_manifest": workdir_path(manifest_path), "removed": len(removed_keys),
                  "n_samples_before": int(manifest["n_samples"]),
                  "removed_examples": removed_keys[:20]},
    }
    (out_dir / "manifest.json").write_text(json.dumps(out, indent=1))
    log.info("%s: %d of %d samples removed, %d left", manifest_path, len(removed_keys),
             manifest["n_samples"], out["n_samples"])
    return out


def _resolved(path: str) -> str:
    return str(Path(path).resolve())


def _copy_without(src: str, dst: Path, n: int, drop: set[str]) -> tuple[int, list[str]]:
    """Stream the first n complete samples of src into dst (what a manifest counts), leaving
    out the keys in drop. Returns (samples written, keys left out); fewer than n samples in src
    is an error."""
    seen, written, dropped = 0, 0, []
    with ShardWriter(dst) as w:
        for key, files in iter_samples(src):
            if seen == n:
                break
            if not is_complete(files):
                continue
            seen += 1
            if key in drop:
                dropped.append(key)
            else:
                w.write(key, files)
                written += 1
    if seen < n:
        dst.unlink(missing_ok=True)
        raise DedupError(f"{src}: the subset manifest says {n} samples, the shard has {seen}")
    return written, dropped


# 5. command line --------------------------------------------------------------------------------


def _write_json(path: str | Path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")


def _cmd_hash(args) -> int:
    if args.dataset_dir:
        if args.tars:
            raise DedupError("give either --dataset-dir or tar shards, not both")
        tars = downstream_test_shards(args.dataset_dir, args.split)
        name = args.name or Path(args.dataset_dir).name
    else:
        if not args.tars:
            raise DedupError("no tar shards given (or use --dataset-dir)")
        tars, name = args.tars, args.name
    report = hash_shards(tars, args.out, name=name, batch_size=args.batch_size)
    print(json.dumps({k: report[k] for k in ("name", "n_samples", "n_hashed", "images_per_s")}
                     | {"skipped": report["skipped"]["total"]}))
    return 0


def _cmd_gather(args) -> int:
    report = gather(args.parts, args.out)
    if args.report:
        _write_json(args.report, hash_report(args.out, args.downstream or []))
    print(json.dumps({k: report[k] for k in ("n_parts", "n_samples", "n_hashed")}
                     | {"skipped": report["skipped"]["total"]}))
    return 0


def _cmd_match(args) -> int:
    report = match_files(args.pool, args.tests, args.radius, args.out, batch_size=args.batch_size)
    print(json.dumps({k: report[k] for k in ("radius", "n_test", "n_pool", "n_pairs", "seconds")}))
    return 0


def _cmd_overlap(args) -> int:
    table = overlap_table(read_matches(args.matches), args.tests, args.radius)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(table.to_string(index=False))
    return 0


def _cmd_sheet(args) -> int:
    n = contact_sheet(read_matches(args.matches), args.out, args.pairs, args.seed)
    print(f"{args.out}: {n} pairs")
    return 0


def _cmd_recall(args) -> int:
    matches = read_matches(args.matches)
    planted = read_planted(args.planted)
    pool = read_pool_hashes(args.pool, keys=planted["pool_key"]) if args.pool else None
    test = load_test_hashes(args.tests) if args.tests else None
    report = planted_recall(matches, planted, args.radius, pool, test)
    _write_json(args.out, report)
    print(json.dumps({k: report[k] for k in ("radius", "n_planted", "recall", "precision")}))
    return 0


def _cmd_filter(args) -> int:
    out = filter_subset(args.manifest, read_matches(args.matches), args.out_dir)
    print(json.dumps({"n_samples": out["n_samples"], "removed": out["dedup"]["removed"]}))
    return 0


def _guard(func):
    """A DedupError (bad input, named in the message) ends the command with exit code 2."""

    def run(args) -> int:
        try:
            return func(args)
        except DedupError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return run


def add_commands(subparsers) -> None:
    """Register the dedup subcommands (each sets ``func``: args -> exit code)."""
    p = subparsers.add_parser("dedup-hash", help="pHash the images of tar shards into a parquet")
    p.add_argument("tars", nargs="*", help="tar shards (pool)")
    p.add_argument("--dataset-dir", help="a clip_benchmark webdataset directory (instead of tars)")
    p.add_argument("--split", default="test")
    p.add_argument("--name", help="name in the report (default: the dataset directory's name)")
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=4096)
    p.set_defaults(func=_guard(_cmd_hash))

    p = subparsers.add_parser("dedup-gather", help="concatenate pool hash files")
    p.add_argument("parts", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--report", help="write a JSON summary of all hash jobs here")
    p.add_argument("--downstream", nargs="*", help="downstream hash files (for the report)")
    p.set_defaults(func=_guard(_cmd_gather))

    p = subparsers.add_parser("dedup-match", help="pairs of test and pool hashes within a radius")
    p.add_argument("--pool", required=True)
    p.add_argument("--tests", nargs="+", required=True)
    p.add_argument("--radius", type=int, default=4)
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=1 << 20)
    p.set_defaults(func=_guard(_cmd_match))

    p = subparsers.add_parser("dedup-overlap", help="overlap table (the paper's Table 3)")
    p.add_argument("--matches", required=True)
    p.add_argument("--tests", nargs="+", required=True)
    p.add_argument("--radius", type=int, default=4)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_guard(_cmd_overlap))

    p = subparsers.add_parser("dedup-sheet", help="contact sheet PNG of sample matches")
    p.add_argument("--matches", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--pairs", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_guard(_cmd_sheet))

    p = subparsers.add_parser("dedup-recall", help="recall/precision against planted duplicates")
    p.add_argument("--matches", required=True)
    p.add_argument("--planted", required=True)
    p.add_argument("--radius", type=int, default=4)
    p.add_argument("--pool", help="pool hashes (to report the distance of missed pairs)")
    p.add_argument("--tests", nargs="*", help="downstream hash files (with --pool)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_guard(_cmd_recall))

    p = subparsers.add_parser("dedup-filter", help="a subset without the matched pool samples")
    p.add_argument("--manifest", required=True, help="subset manifest.json")
    p.add_argument("--matches", required=True)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=_guard(_cmd_filter))
