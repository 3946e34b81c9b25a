"""Matching test hashes against the streamed pool: exact joins, the Hamming index, pair files."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from clipscale.dedup.formats import PAIR_COLUMNS, PAIR_SCHEMA, DedupError
from clipscale.dedup.hashing import _set_metadata, open_hashes, read_report
from clipscale.dedup.index import HammingIndex

log = logging.getLogger(__name__)

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
