"""Dedup matching modes: recall per edit, false matches and cost, the paper's pHash beside the others.

    .venv/bin/python benchmarks/bench_dedup_modes.py            # world of 12,000, 500 hard copies (~3 min, 2 cores)
    .venv/bin/python benchmarks/bench_dedup_modes.py --quick    # world of 3,000, 150 hard copies (~1 min)

1. Recall: an embedded world (the default world's settings, smaller pool) with the planted
   near-duplicates of the paper's kind (resize, re-encode, blur, 4% crop, colour shift) and
   more copies with the edits pHash misses (flip, a 10% frame, letterbox bars, centre crops
   keeping 80%/90% of each side); every downstream set hashed in every mode, matched at radius 4;
   recall per mode and per edit on that ground truth (clipscale.dedup.planted_recall).
2. False matches: pool images matched to a test image that are not one of its planted copies
   (unrelated renders that look alike to pHash exist in this world: a floor every mode shares),
   per mode, as pairs and as a share of the pool.
3. Cost, one process (one core): test images/s of the downstream hash job with each mode's
   variants (each image decoded once), and pool images/s with and without mode trim's pool-side
   trimming (dedup.trim_pool), on 32x32 world images and on 256-640 px photographs (LAION-like);
   seconds per 1e7 pool images follow. Matching time with all modes is printed too.
4. With ``--embedding CHECKPOINT --model NAME`` (and ``--config`` for a custom model, default
   config/config.yaml): mode embedding with that encoder, recall per edit and precision at a few
   cosine thresholds, and its encoding rate (images/s, seconds per 1e7 pool images, CPU).

    .venv/bin/python benchmarks/bench_dedup_modes.py --quick --model vit-m \
        --embedding results/train/vit-m/48k/90k/openclip/checkpoints/epoch_4.pt
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from clipscale import dedup as D
from clipscale import world as W

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dedup import make_shards  # noqa: E402  (photographs as tar shards)

ALL = ["phash", "mirror", "trim", "crops"]


def _hash_rate(tars, out: Path, variants) -> float:
    t = time.perf_counter()
    r = D.hash_shards(tars, out, variants=variants)
    return r["n_hashed"] / (time.perf_counter() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--radius", type=int, default=4)
    ap.add_argument("--embedding", help="an open_clip checkpoint: also measure mode embedding")
    ap.add_argument("--model", help="the checkpoint's architecture (a config model or open_clip name)")
    ap.add_argument("--config", default="config/config.yaml", help="config of the custom models")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.9, 0.95, 0.99])
    args = ap.parse_args(argv)
    if args.embedding and not args.model:
        ap.error("--embedding needs --model")
    pool, hard, near, photos = (3000, 150, 100, 300) if args.quick else (12000, 500, 300, 1000)
    spec = W.WorldSpec(pool_size=pool, shard_size=1000, near_duplicates=near, hard_duplicates=hard,
                       test_per_class=40, retrieval_size=200)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        W.generate(spec, tmp / "world", progress=False)
        print(f"world: {pool} pool images, {near} + {hard} planted copies ({time.perf_counter() - t:.0f} s)")
        pool_tars = sorted((tmp / "world" / "pool").glob("*.tar"))

        # 3. cost (first, on a quiet machine)
        cost = {}
        test_tars = [t for name in W.DOWNSTREAM_SETS
                     for t in D.downstream_test_shards(tmp / "world" / "downstream" / name)]
        for mode in ALL:
            variants = D.downstream_variants([mode])
            cost[mode] = {"test_per_s": _hash_rate(test_tars, tmp / f"t_{mode}.parquet", variants)}
        photo_tars = make_shards(tmp, "photo", photos)
        rates = {}
        for kind, tars in (("world", pool_tars), ("photo", photo_tars)):
            for variants in ([], ["trim"]):
                rates[kind, bool(variants)] = _hash_rate(tars, tmp / f"p_{kind}{len(variants)}.parquet", variants)

        # 1-2. recall and false matches
        D.hash_shards(pool_tars, tmp / "pool.parquet", variants=D.pool_variants(ALL))
        tests = []
        for name in W.DOWNSTREAM_SETS:
            tests.append(tmp / f"{name}.parquet")
            D.hash_shards(D.downstream_test_shards(tmp / "world" / "downstream" / name), tests[-1],
                          name=name, variants=D.downstream_variants(ALL))
        t = time.perf_counter()
        n_test = D.match_files(tmp / "pool.parquet", tests, args.radius, tmp / "m.parquet", modes=ALL)["n_test"]
        match_s = time.perf_counter() - t
        planted = D.read_planted(tmp / "world" / "planted_duplicates.csv")
        r = D.planted_recall(D.read_matches(tmp / "m.parquet"), planted, args.radius,
                             test_hashes=D.load_test_hashes(tests), modes=ALL)
        emb = _embedding(args, tmp, pool_tars, planted, pool) if args.embedding else None

    edits = W.HARD_DUPLICATE_TRANSFORMS + W.NEAR_DUPLICATE_TRANSFORMS
    n_by = planted["transform"].value_counts()
    rows = []
    for mode in ALL + ["any"]:
        m = r["modes"][mode]
        row = {"mode": mode if mode != "phash" else "phash (paper)"}
        row |= {e: f"{100 * m['by_transform'].get(e, 0):.0f}" for e in edits}
        row |= {"recall": f"{100 * m['recall']:.1f}", "false pool imgs": m["unplanted_pool_keys"],
                "false %pool": f"{100 * m['unplanted_pool_keys'] / pool:.2f}",
                "precision": f"{m['precision']:.2f}"}
        if mode in cost:
            row["test img/s"] = f"{cost[mode]['test_per_s']:.0f}"
        rows.append(row)
    print(f"\nrecall (%) per edit at radius {args.radius} (planted copies: "
          + ", ".join(f"{e} {n_by.get(e, 0)}" for e in edits) + ")")
    print(pd.DataFrame(rows).fillna("").to_string(index=False))
    print(f"\nmatching {n_test} test images (every set) against {pool} pool images in all 4 modes: "
          f"{match_s:.2f} s")
    print("\npool hashing, one process: images/s and seconds per 1e7 pool images")
    for kind in ("world", "photo"):
        plain, trimmed = rates[kind, False], rates[kind, True]
        print(f"  {kind:5s}: pHash {plain:6.0f}/s ({1e7 / plain:7.0f} s), + trim {trimmed:6.0f}/s "
              f"({1e7 / trimmed:7.0f} s): x{plain / trimmed:.2f}")
    if emb is not None:
        rows, rate = emb
        print(f"\nmode embedding ({args.model}, {args.embedding}): recall (%) per edit and precision by "
              f"cosine threshold")
        print(pd.DataFrame(rows).to_string(index=False))
        print(f"encoding, one process (CPU): {rate:.0f} pool images/s ({1e7 / rate:.0f} s per 1e7)")
    return 0


def _embedding(args, tmp: Path, pool_tars, planted: pd.DataFrame, pool: int):
    """Mode embedding on the benchmark's world: rows per threshold and the pool encoding rate."""
    from clipscale import config as C
    from clipscale.evaluate.benchmark import resolve_device

    import torch

    torch.set_num_threads(1)
    enc = D.load_encoder(C.load(args.config), args.model, args.embedding, resolve_device("cpu"))
    t = time.perf_counter()
    n = D.embed_shards(enc, pool_tars, tmp / "pool.npz", "pool")["n_embedded"]
    rate = n / (time.perf_counter() - t)
    tests = []
    for name in W.DOWNSTREAM_SETS:
        tests.append(tmp / f"{name}.npz")
        D.embed_shards(enc, D.downstream_test_shards(tmp / "world" / "downstream" / name), tests[-1], name)
    D.match_embeddings(tests, [tmp / "pool.npz"], min(args.thresholds), tmp / "e.parquet")
    pairs = D.read_matches(tmp / "e.parquet")
    edits = W.HARD_DUPLICATE_TRANSFORMS + W.NEAR_DUPLICATE_TRANSFORMS
    rows = []
    for th in sorted(args.thresholds):
        r = D.planted_recall(pairs[pairs["similarity"] >= th], planted, args.radius,
                             modes=["phash", "embedding"])["modes"]["embedding"]
        rows.append({"threshold": th, "pairs": r["n_pairs"], **{e: f"{100 * r['by_transform'].get(e, 0):.0f}"
                                                                for e in edits},
                     "recall": f"{100 * r['recall']:.1f}", "precision": "-" if r["precision"] is None else f"{r['precision']:.3f}",
                     "false %pool": f"{100 * r['unplanted_pool_keys'] / pool:.2f}"})
    return rows, rate


if __name__ == "__main__":
    sys.exit(main())
