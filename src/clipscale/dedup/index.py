"""Multi-index hashing: test hashes in chunk tables, pool hashes looked up, pairs within a Hamming radius."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from clipscale.dedup.formats import DedupError

log = logging.getLogger(__name__)

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
