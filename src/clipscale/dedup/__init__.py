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
Matching modes (``modes``): the paper's pHash (``phash``, the default, Table 3) is blind to
mirrored, framed, letterboxed and cropped copies; modes ``mirror``, ``trim`` and ``crops`` hash
variants of the test images (and, for trim, of the pool images) in the same jobs and report
their pairs apart (column ``mode``), in columns of their own in the overlap table; mode
``embedding`` compares the features of a CLIP image encoder (faiss; ``embedding``).
The package's modules, by role: ``formats`` (the parquets' schemas, the overlap table's columns,
``DedupError``), ``modes`` (the matching modes and image variants), ``hashing`` (1-2), ``index`` (multi-index hashing) and ``matching`` (3),
``reports`` (4), ``filtering`` (subsets without duplicates), ``checks`` (the dedup.* settings'
checks, ``problems``), ``cli`` (the ``clipscale dedup-*`` subcommands). The names below are the package's interface.
"""

from clipscale.dedup.checks import problems
from clipscale.dedup.cli import add_commands
from clipscale.dedup.filtering import filter_subset
from clipscale.dedup.formats import (HASH_SCHEMA, MODE_COLUMNS, OVERLAP_COLUMNS, PAIR_COLUMNS, PAIR_SCHEMA,
                                     DedupError)
from clipscale.dedup.hashing import (downstream_test_shards, gather, group_shards, hash_report, hash_shards,
                                     iter_hash_columns, iter_hashes, list_shards, open_hashes, read_report,
                                     shards_stamp)
from clipscale.dedup.embedding import embed_shards, encoder, load_encoder, match_embeddings, read_embeddings
from clipscale.dedup.index import HammingIndex, plan_chunks
from clipscale.dedup.matching import (load_test_hashes, match, match_exact, match_files, plan_modes, read_matches,
                                      select_modes)
from clipscale.dedup.modes import (MODES, downstream_variants, pool_variants, removal_modes, settings, trim,
                                   trim_box, variant_function)
from clipscale.dedup.reports import (contact_sheet, fetch_images, overlap_table, planted_recall, read_planted,
                                     read_pool_hashes)

__all__ = [
    "HASH_SCHEMA", "MODES", "MODE_COLUMNS", "OVERLAP_COLUMNS", "PAIR_COLUMNS", "PAIR_SCHEMA", "DedupError",
    "HammingIndex", "add_commands", "contact_sheet", "downstream_test_shards", "downstream_variants",
    "embed_shards", "encoder", "load_encoder", "match_embeddings", "read_embeddings",
    "fetch_images", "filter_subset", "gather", "group_shards", "hash_report", "hash_shards",
    "iter_hash_columns", "iter_hashes", "list_shards", "load_test_hashes", "match", "match_exact",
    "match_files", "open_hashes", "overlap_table", "plan_chunks", "plan_modes", "planted_recall",
    "pool_variants", "problems", "read_matches", "read_planted", "read_pool_hashes", "read_report", "removal_modes",
    "select_modes", "settings", "shards_stamp", "trim", "trim_box", "variant_function",
]
