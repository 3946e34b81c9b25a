"""Matching test hashes against the streamed pool: exact joins, the Hamming index, pair files."""

from __future__ import annotations

import logging
import os
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
from clipscale.dedup.modes import DEFAULT_CROPS, MODES, check_modes, column, mode_variants

log = logging.getLogger(__name__)


def match_exact(test: pd.DataFrame, pool: pd.DataFrame) -> pd.DataFrame:
    """Pairs with equal hashes: a hash join (pandas merge on phash). Both frames have a phash
    column (uint64); the result has the columns of both (suffixes _test, _pool) and distance 0."""
    pairs = test.merge(pool, on="phash", how="inner", suffixes=("_test", "_pool"))
    pairs["distance"] = np.zeros(len(pairs), dtype=np.uint8)
    return pairs


def load_test_hashes(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Hashes of the downstream sets: dataset, key, shard, phash (dataset from each report),
    and the phash_<variant> columns of the matching modes when the files have them."""
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
    for c in test.columns:
        if c == "phash" or c.startswith("phash_"):
            if test[c].isna().any():
                raise DedupError(f"downstream hash files differ in their columns ({c} missing "
                                 "in some): hash them with the same dedup settings")
            test[c] = test[c].astype(np.uint64)
    return test


def iter_pool_batches(path: str | Path, batch_size: int = 1 << 20,
                      columns: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
    f = open_hashes(path)
    return f.iter_batches(batch_size=batch_size, columns=list(columns or f.schema_arrow.names))


def pool_columns(path: str | Path) -> list[str]:
    return open_hashes(path).schema_arrow.names


def plan_modes(modes: Sequence[str], test_columns: Sequence[str], pool_columns: Sequence[str],
               crops: Sequence[float] = DEFAULT_CROPS) -> list[tuple[str, str, str]]:
    """(mode, test column, pool column) of every comparison the modes make. A mode's pool
    variant (trim) is compared with the pool's column of that variant when the pool has it, with
    the pool's own hashes otherwise (test-side trimming only)."""
    plan = []
    for mode in check_modes(modes):
        pool_column = "phash"
        if MODES[mode].pool_variant and column(MODES[mode].pool_variant) in pool_columns:
            pool_column = column(MODES[mode].pool_variant)
        for variant in mode_variants(mode, crops):
            if column(variant) not in test_columns:
                raise DedupError(f"mode {mode}: the downstream hashes have no {column(variant)} "
                                 f"column (hash them with the mode's variants: {variant})")
            plan.append((mode, column(variant), pool_column))
    return plan


def _shard_id(path: str) -> str:
    """A shard's path as hash files and the pool index both name it (relative or absolute, a
    linked pool folder): its folder resolved, the file name kept (a shard that is a link to
    another is another shard)."""
    return os.path.join(os.path.realpath(os.path.dirname(path) or "."), os.path.basename(path))


class LeftOut:
    """The pool samples the pool index leaves out as duplicates (clipscale.subsets: a key seen
    earlier in shard order, in another shard or in the same one): their hashes are not matched,
    so each pool sample counts once, as the one subsets draw."""

    def __init__(self, index: pd.DataFrame):
        self.earlier: dict[str, set[str]] = {}  # shard -> its keys first seen in an earlier shard
        if "n_duplicates" not in index:
            raise DedupError("the pool index has no duplicate counts (n_duplicates): index the pool again")
        for row in index[index["n_duplicates"] > 0].itertuples():
            self.earlier[_shard_id(str(row.path))] = set(row.duplicate_keys)
        self._ids: dict[str, str] = {}
        self._seen: dict[str, set[str]] = {}
        self.n_left_out = 0

    def _id(self, shard: str) -> str:
        if shard not in self._ids:
            self._ids[shard] = _shard_id(shard)
        return self._ids[shard]

    def keep(self, shards: np.ndarray, keys: np.ndarray) -> np.ndarray | None:
        """Which rows of the pool stream (in shard order) are first occurrences; None: all."""
        if not self.earlier:
            return None
        flagged = {s for s in pd.unique(shards) if self._id(s) in self.earlier}
        if not flagged:
            return None
        mask = np.ones(len(keys), bool)
        for i in np.flatnonzero(pd.Series(shards).isin(flagged).to_numpy()):
            shard = self._id(shards[i])
            seen = self._seen.setdefault(shard, set())
            if keys[i] in self.earlier[shard] or keys[i] in seen:
                mask[i] = False
            else:
                seen.add(keys[i])
        self.n_left_out += int((~mask).sum())
        return mask

    def pairs(self, table: pa.Table) -> pa.Table:
        """Pairs (another mode's) without those of left-out pool samples; a key twice in one
        shard gives the same pair twice: kept once."""
        if not self.earlier or not table.num_rows:
            return table
        df = table.to_pandas()
        ids = df["pool_shard"].map(self._id)
        flagged = ids.isin(list(self.earlier))
        earlier = np.array([f and k in self.earlier[i] for f, i, k in zip(flagged, ids, df["pool_key"])],
                           dtype=bool)
        twice = (flagged & df.assign(pool_shard=ids).duplicated(
            ["mode", "dataset", "test_key", "pool_shard", "pool_key"])).to_numpy()
        return table.filter(pa.array(~(earlier | twice)))


class _Side:
    """The test-side hashes compared with one pool column: every (mode, variant) of the plan
    stacked, with the test row and the mode of each; an index over them (radius > 0) or a
    frame for the hash join (radius 0)."""

    def __init__(self, test: pd.DataFrame, entries: list[tuple[int, str]], radius: int,
                 n_chunks: int | None):
        self.hashes = np.concatenate([test[c].to_numpy(dtype=np.uint64) for _, c in entries])
        self.rows = np.concatenate([np.arange(len(test))] * len(entries))
        self.modes = np.concatenate([np.full(len(test), m, np.int64) for m, _ in entries])
        self.index = HammingIndex(self.hashes, radius, n_chunks=n_chunks) if radius > 0 else None
        self.exact = (pd.DataFrame({"phash": self.hashes, "row": np.arange(len(self.hashes))})
                      if radius == 0 else None)

    def search(self, q: np.ndarray):
        if self.index is not None:
            qi, vi, dist = self.index.search(q)
        else:
            joined = match_exact(self.exact, pd.DataFrame({"phash": q, "qi": np.arange(len(q))}))
            qi, vi = joined["qi"].to_numpy(), joined["row"].to_numpy()
            dist = joined["distance"].to_numpy()
        return qi, vi, dist


def match(test: pd.DataFrame, pool_batches: Iterable[pa.RecordBatch], radius: int,
          out: str | Path, n_chunks: int | None = None, modes: Sequence[str] = ("phash",),
          crops: Sequence[float] = DEFAULT_CROPS, extra_pairs: pa.Table | None = None,
          pool_index: pd.DataFrame | None = None) -> dict:
    """Write every (test, pool) pair within ``radius`` to ``out`` (parquet, PAIR_SCHEMA) and
    return a report. ``test`` has dataset, key, shard, phash (and the phash_<variant> columns of
    the modes); the pool comes in record batches (key, shard, phash, ...) so it is never in
    memory as a whole. Radius 0 is a pandas hash join; radius > 0 goes through a HammingIndex
    over the test hashes. Each mode's pairs are written with its name (column mode), a pair
    once per mode that finds it (at its smallest distance over the mode's variants).
    ``extra_pairs``: pairs another mode found (mode embedding: clipscale.dedup.embedding),
    written after the hash modes' pairs. ``pool_index`` (clipscale.subsets.build_index): the
    pool samples it leaves out as duplicates are not matched (report: n_pool_duplicates), so
    each pool sample is counted once, as subsets draw it."""
    start = time.perf_counter()
    left_out = LeftOut(pool_index) if pool_index is not None else None
    test = test.reset_index(drop=True)
    modes = check_modes(modes)
    plan = None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    n_pool = n_pairs = 0
    sides: dict[str, _Side] = {}
    by_mode: dict[str, int] = {}
    try:
        with pq.ParquetWriter(tmp, PAIR_SCHEMA) as writer:
            for batch in pool_batches:
                if plan is None:  # the pool's columns are known with its first batch
                    plan = plan_modes(modes, list(test.columns), batch.schema.names, crops)
                    for pool_column in dict.fromkeys(p for _, _, p in plan):
                        entries = [(modes.index(m), c) for m, c, p in plan if p == pool_column]
                        sides[pool_column] = _Side(test, entries, radius, n_chunks)
                if left_out is not None:
                    keep = left_out.keep(batch.column("shard").to_numpy(zero_copy_only=False),
                                         batch.column("key").to_numpy(zero_copy_only=False))
                    if keep is not None:
                        batch = batch.filter(pa.array(keep))
                n_pool += batch.num_rows
                table = _pairs(test, sides, modes, batch)
                if table is None:
                    continue
                writer.write_table(table)
                n_pairs += table.num_rows
                for m, k in pd.Series(table.column("mode").to_numpy(zero_copy_only=False)).value_counts().items():
                    by_mode[m] = by_mode.get(m, 0) + int(k)
                log.info("%d pool hashes matched, %d pairs so far", n_pool, n_pairs)
            if extra_pairs is not None and left_out is not None:
                extra_pairs = left_out.pairs(extra_pairs)
            if extra_pairs is not None and extra_pairs.num_rows:
                writer.write_table(extra_pairs.cast(PAIR_SCHEMA))
                n_pairs += extra_pairs.num_rows
                for m, k in pd.Series(extra_pairs.column("mode").to_numpy(zero_copy_only=False)).value_counts().items():
                    by_mode[m] = by_mode.get(m, 0) + int(k)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - start
    first = next(iter(sides.values()), None)
    report = {"radius": radius, "n_test": len(test), "n_pool": n_pool, "n_pairs": n_pairs,
              "seconds": round(seconds, 3),
              "method": "hash join" if radius == 0 else "multi-index hashing",
              "index": first.index.describe() if first is not None and first.index is not None
              else None}
    if left_out is not None:
        report["n_pool_duplicates"] = left_out.n_left_out
    if modes != ["phash"]:
        report["modes"] = {m: {"n_pairs": by_mode.get(m, 0),
                               "compares": [[c, p] for mm, c, p in plan or [] if mm == m]}
                           for m in modes}
    _set_metadata(tmp, out, report)
    log.info("matched %d test against %d pool hashes at radius %d: %d pairs in %.1fs",
             len(test), n_pool, radius, n_pairs, seconds)
    return report


def _pairs(test: pd.DataFrame, sides: dict, modes: list[str], batch: pa.RecordBatch) -> pa.Table | None:
    """The pairs of one pool batch, ordered by mode, test row and pool row."""
    found = []
    for pool_column, side in sides.items():
        q = batch.column(pool_column).to_numpy(zero_copy_only=False).astype(np.uint64, copy=False)
        qi, vi, dist = side.search(q)
        if len(qi):
            found.append((qi, side.rows[vi], side.modes[vi], dist, side.hashes[vi], q[qi]))
    if not found:
        return None
    qi, rows, mode, dist, test_h, pool_h = (np.concatenate(x) for x in zip(*found))
    order = np.lexsort((dist, qi, rows, mode))
    qi, rows, mode, dist, test_h, pool_h = (x[order] for x in (qi, rows, mode, dist, test_h, pool_h))
    if len(sides) > 1 or len(modes) > 1:  # a pair found by two variants of a mode: the closest
        key = np.stack([mode, rows, qi])
        first = np.ones(len(qi), bool)
        first[1:] = (key[:, 1:] != key[:, :-1]).any(axis=0)
        qi, rows, mode, dist, test_h, pool_h = (x[first] for x in (qi, rows, mode, dist, test_h, pool_h))
    sub = test.iloc[rows]
    names = np.array(modes, dtype=object)
    return pa.table({
        "dataset": pa.array(sub["dataset"].to_numpy(), pa.string()),
        "test_key": pa.array(sub["key"].to_numpy(), pa.string()),
        "test_shard": pa.array(sub["shard"].to_numpy(), pa.string()),
        "pool_key": batch.column("key").take(pa.array(qi)),
        "pool_shard": batch.column("shard").take(pa.array(qi)),
        "distance": pa.array(dist.astype(np.uint8), pa.uint8()),
        "test_phash": pa.array(test_h, pa.uint64()),
        "pool_phash": pa.array(pool_h, pa.uint64()),
        "mode": pa.array(names[mode], pa.string()),
        "similarity": pa.nulls(len(qi), pa.float32()),
    }, schema=PAIR_SCHEMA)


def match_files(pool: str | Path, tests: Sequence[str | Path], radius: int, out: str | Path,
                batch_size: int = 1 << 20, modes: Sequence[str] = ("phash",),
                crops: Sequence[float] = DEFAULT_CROPS, embedding_pairs: str | Path | None = None,
                pool_index: pd.DataFrame | None = None) -> dict:
    """``match`` of hash files; ``embedding_pairs``: the pairs file of mode embedding, joined;
    ``pool_index``: the pool index, whose duplicates are not matched."""
    test = load_test_hashes(tests)
    # only the pool columns the modes compare are read
    plan = plan_modes(modes, list(test.columns), pool_columns(pool), crops)
    columns = ["key", "shard"] + list(dict.fromkeys(["phash"] + [p for _, _, p in plan]))
    extra = None
    if embedding_pairs:
        from clipscale.dedup.embedding import read_pairs

        extra = read_pairs(embedding_pairs)
    return match(test, iter_pool_batches(pool, batch_size, columns), radius, out, modes=modes,
                 crops=crops, extra_pairs=extra, pool_index=pool_index)


def read_matches(path: str | Path) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except FileNotFoundError:
        raise DedupError(f"matches file not found: {path}") from None
    if "mode" not in df.columns:  # written before the matching modes: pHash pairs
        df["mode"] = "phash"
    if "similarity" not in df.columns:  # written before mode embedding
        df["similarity"] = np.nan
    missing = set(PAIR_COLUMNS) - set(df.columns)
    if missing:
        raise DedupError(f"{path}: not a matches file (missing columns {sorted(missing)})")
    return df


def select_modes(matches: pd.DataFrame, modes: Sequence[str]) -> pd.DataFrame:
    """The pairs found by any of ``modes`` (a pair found by two of them is there twice)."""
    modes = check_modes(modes)
    have = set(matches["mode"].unique()) if "mode" in matches else {"phash"}
    if "mode" not in matches:
        matches = matches.assign(mode="phash")
    missing = [m for m in modes if m not in have]
    if missing:
        log.info("no pairs of mode(s) %s in the matches", missing)
    return matches[matches["mode"].isin(modes)]
