"""The dedup subcommands of ``clipscale`` (dedup-hash, dedup-gather, dedup-match, ...)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from clipscale import files
from clipscale.config import schema_default
from clipscale.dedup.filtering import filter_subset
from clipscale.dedup.formats import DedupError
from clipscale.dedup.hashing import (
    downstream_test_shards,
    gather,
    hash_report,
    hash_shards,
)
from clipscale.dedup.matching import load_test_hashes, match_files, read_matches, select_modes
from clipscale.dedup.modes import DEFAULT_CROPS, MODES
from clipscale.dedup.reports import (
    contact_sheet,
    overlap_table,
    planted_recall,
    read_planted,
    read_pool_hashes,
)

log = logging.getLogger(__name__)

# 5. command line --------------------------------------------------------------------------------


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
    report = hash_shards(tars, args.out, name=name, batch_size=args.batch_size,
                         variants=args.variants or ())
    print(json.dumps({k: report[k] for k in ("name", "n_samples", "n_hashed", "images_per_s")}
                     | {"skipped": report["skipped"]["total"]}))
    return 0


def _cmd_gather(args) -> int:
    report = gather(args.parts, args.out)
    if args.report:
        files.write_json(args.report, hash_report(args.out, args.downstream or []))
    print(json.dumps({k: report[k] for k in ("n_parts", "n_samples", "n_hashed")}
                     | {"skipped": report["skipped"]["total"]}))
    return 0


def _cmd_match(args) -> int:
    pool_index = None
    if args.pool_index:
        import pandas as pd

        try:
            pool_index = pd.read_parquet(args.pool_index)
        except (OSError, ValueError) as e:
            raise DedupError(f"pool index {args.pool_index}: {e}") from None
    report = match_files(args.pool, args.tests, args.radius, args.out, batch_size=args.batch_size,
                         modes=args.modes, crops=args.crops, pool_index=pool_index)
    print(json.dumps({k: report[k] for k in ("radius", "n_test", "n_pool", "n_pairs", "seconds")}))
    return 0


def _cmd_overlap(args) -> int:
    table = overlap_table(read_matches(args.matches), args.tests, args.radius, args.modes)
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
    report = planted_recall(matches, planted, args.radius, pool, test, args.modes)
    files.write_json(args.out, report)
    print(json.dumps({k: report[k] for k in ("radius", "n_planted", "recall", "precision")}))
    return 0


def _cmd_filter(args) -> int:
    out = filter_subset(args.manifest, select_modes(read_matches(args.matches), args.modes),
                        args.out_dir)
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
    p.add_argument("--variants", nargs="*", help="also hash these variants of each image "
                   "(mirror, trim, crop80, ...: the dedup modes' hashes)")
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
    p.add_argument("--radius", type=int, default=schema_default("dedup", "radius"))
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=1 << 20)
    _modes_argument(p)
    p.add_argument("--crops", nargs="+", type=float, default=list(DEFAULT_CROPS),
                   help="centre crops of mode crops (fractions of each side)")
    p.add_argument("--pool-index", help="the pool index (clipscale index): its duplicate samples "
                   "are not matched, each pool sample counts once")
    p.set_defaults(func=_guard(_cmd_match))

    p = subparsers.add_parser("dedup-overlap", help="overlap table (the paper's Table 3)")
    p.add_argument("--matches", required=True)
    p.add_argument("--tests", nargs="+", required=True)
    p.add_argument("--radius", type=int, default=schema_default("dedup", "radius"))
    p.add_argument("--out", required=True)
    _modes_argument(p)
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
    p.add_argument("--radius", type=int, default=schema_default("dedup", "radius"))
    p.add_argument("--pool", help="pool hashes (to report the distance of missed pairs)")
    p.add_argument("--tests", nargs="*", help="downstream hash files (with --pool)")
    p.add_argument("--out", required=True)
    _modes_argument(p)
    p.set_defaults(func=_guard(_cmd_recall))

    p = subparsers.add_parser("dedup-filter", help="a subset without the matched pool samples")
    p.add_argument("--manifest", required=True, help="subset manifest.json")
    p.add_argument("--matches", required=True)
    p.add_argument("--out-dir", required=True)
    _modes_argument(p, "remove the pairs of these modes")
    p.set_defaults(func=_guard(_cmd_filter))


def _modes_argument(p, help: str = "matching modes") -> None:
    p.add_argument("--modes", nargs="+", default=["phash"], choices=list(MODES),
                   help=f"{help} (default: phash, the paper's)")
