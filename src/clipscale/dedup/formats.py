"""The dedup artifacts' formats (hash and pair parquets, the overlap table) and its error."""

from __future__ import annotations

import logging

import pyarrow as pa

log = logging.getLogger(__name__)

META_KEY = b"clipscale.dedup"
HASH_SCHEMA = pa.schema([("key", pa.string()), ("shard", pa.string()), ("phash", pa.uint64())])
PAIR_COLUMNS = ["dataset", "test_key", "test_shard", "pool_key", "pool_shard", "distance",
                "test_phash", "pool_phash", "mode", "similarity"]
PAIR_SCHEMA = pa.schema([
    ("dataset", pa.string()), ("test_key", pa.string()), ("test_shard", pa.string()),
    ("pool_key", pa.string()), ("pool_shard", pa.string()), ("distance", pa.uint8()),
    ("test_phash", pa.uint64()), ("pool_phash", pa.uint64()),
    ("mode", pa.string()),  # the matching mode that found the pair (clipscale.dedup.modes)
    # mode embedding: the pair's cosine similarity (its distance is 0, its hashes null); null
    # for the hash modes, whose closeness is the Hamming distance
    ("similarity", pa.float32()),
])
OVERLAP_COLUMNS = ["dataset", "overlap_pct", "overlap_pct_exact", "radius", "n_test",
                   "n_matched", "n_matched_exact", "n_pool_matched", "n_skipped"]
# the columns each further mode adds to the overlap table (then the union of all modes: "any")
MODE_COLUMNS = ["overlap_pct_{mode}", "n_matched_{mode}", "n_pool_matched_{mode}"]


class DedupError(ValueError):
    """Input the dedup step cannot use (named in the message)."""
