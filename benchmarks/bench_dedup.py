"""Dedup speed: pHash throughput (ours vs imagehash) and matching time vs pool size.

    .venv/bin/python benchmarks/bench_dedup.py            # full: 2000 images per kind, pools to 1e7
    .venv/bin/python benchmarks/bench_dedup.py --quick    # 300 images, pools to 1e6 (~1 min)

1. Hashing, one process (= one core), JPEG decode included, from the same tar shards:
   - "ours": clipscale.dedup.iter_hashes (tar read, decode, grey, resize, batched DCT);
   - "imagehash": the same tar read, then imagehash.phash(Image.open(...)) per image;
   - "decode+resize": the floor, tar read + Pillow decode + grey + resize, no DCT at all;
   - "draft (not used)": Pillow's JPEG draft mode (decode straight to grey / reduced size),
     faster but NOT bit-identical: the share of hashes that change is printed.
   Two kinds of shards: 32x32 JPEGs (the embedded world) and 256-640 px photographs (LAION-like).
   Every one of our hashes is checked against imagehash.
2. Matching 1e5 test hashes against pools of 1e5, 1e6 (and 1e7) random uint64 hashes with
   near-duplicates planted at distances 0..radius+1: exact (pandas hash join) and radius r
   (multi-index hashing), streamed in batches of 2**20 pool hashes as in the pipeline. At 1e5
   the radius result is checked against faiss' brute-force range search (all pairs).
Memory stays under ~2 GB.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from clipscale import dedup as D
from clipscale import phash as P
from clipscale.shards import ShardWriter, SkipCounter, iter_samples


def _photos() -> list[np.ndarray]:
    import skimage.data
    from sklearn.datasets import load_sample_images

    out = [np.asarray(im) for im in load_sample_images().images]
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera", "brick", "grass",
                 "immunohistochemistry", "hubble_deep_field", "coins", "moon"):
        a = getattr(skimage.data, name)()
        out.append(np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3])
    return out


def make_shards(folder: Path, kind: str, n: int, per_shard: int = 500) -> list[Path]:
    """Tar shards of n JPEGs: 'tiny' 32x32 images, or 'photo' 256-640 px crops of photographs."""
    rng = np.random.default_rng(0)
    photos = _photos()
    tars = []
    for s in range(0, n, per_shard):
        tar = folder / f"{kind}_{s // per_shard:05d}.tar"
        with ShardWriter(tar) as w:
            for i in range(s, min(n, s + per_shard)):
                a = photos[int(rng.integers(len(photos)))]
                h, wd = a.shape[:2]
                ch, cw = int(rng.integers(h // 3, h)), int(rng.integers(wd // 3, wd))
                y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, wd - cw + 1))
                img = Image.fromarray(a[y : y + ch, x : x + cw])
                if kind == "tiny":
                    img = img.resize((32, 32), Image.Resampling.BICUBIC)
                else:
                    side = int(rng.integers(256, 641))
                    scale = side / max(img.size)
                    img = img.resize((max(16, int(img.size[0] * scale)),
                                      max(16, int(img.size[1] * scale))), Image.Resampling.BICUBIC)
                buf = io.BytesIO()
                img.save(buf, "JPEG", quality=int(rng.integers(75, 96)))
                w.write(f"{i:09d}", {"jpg": buf.getvalue(), "txt": "caption"})
        tars.append(tar)
    return tars


def _timed(fn, repeat: int):
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_hashing(tars: list[Path], repeat: int) -> dict:
    import imagehash

    def ours():
        stats = {}
        return np.concatenate([h for _, _, h in D.iter_hashes(tars, SkipCounter(), stats)])

    def reference():
        out = []
        for tar in tars:
            for _key, files in iter_samples(tar):
                with Image.open(io.BytesIO(files["jpg"])) as im:
                    out.append(int(str(imagehash.phash(im)), 16))
        return np.array(out, dtype=np.uint64)

    def decode_only():
        n = 0
        for tar in tars:
            for _key, files in iter_samples(tar):
                with Image.open(io.BytesIO(files["jpg"])) as im:
                    im.convert("L").resize((32, 32), P.RESAMPLE)
                n += 1
        return n

    def draft():
        hasher = P.BatchHasher()
        for tar in tars:
            for _key, files in iter_samples(tar):
                with Image.open(io.BytesIO(files["jpg"])) as im:
                    im.draft("L", (P.IMG_SIZE, P.IMG_SIZE))
                    hasher.add(P.prepare(im))
        return hasher.flush()

    t_ours, h_ours = _timed(ours, repeat)
    t_ref, h_ref = _timed(reference, repeat)
    t_dec, n = _timed(decode_only, repeat)
    t_draft, h_draft = _timed(draft, repeat)
    mismatch = int((h_ours != h_ref).sum())
    if mismatch:
        raise SystemExit(f"BUG: {mismatch} of {n} hashes differ from imagehash")
    return {"n": n, "ours": n / t_ours, "imagehash": n / t_ref, "decode+resize": n / t_dec,
            "draft": n / t_draft, "draft_changed": float((h_draft != h_ref).mean()),
            "identical": True}


def synthetic_hashes(n_test: int, n_pool: int, radius: int, n_planted: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    test = rng.integers(0, 2**64 - 1, n_test, dtype=np.uint64, endpoint=True)
    pool = rng.integers(0, 2**64 - 1, n_pool, dtype=np.uint64, endpoint=True)
    n_planted = min(n_planted, n_pool, n_test)
    where = rng.choice(n_pool, n_planted, replace=False)
    src = rng.choice(n_test, n_planted, replace=False)
    dist = np.arange(n_planted) % (radius + 2)  # 0..radius+1: the last one must not be found
    flipped = test[src].copy()
    for i, d in enumerate(dist):
        for b in rng.choice(64, int(d), replace=False):
            flipped[i] ^= np.uint64(1) << np.uint64(b)
    pool[where] = flipped
    return test, pool, int((dist <= radius).sum()), int((dist == 0).sum())


def bench_matching(n_test: int, n_pool: int, radius: int, batch: int = 1 << 20) -> dict:
    test, pool, expect_r, expect_0 = synthetic_hashes(n_test, n_pool, radius, 1000)
    # exact: pandas hash join, batch by batch
    t = time.perf_counter()
    test_df = pd.DataFrame({"phash": test, "row": np.arange(n_test)})
    n_exact = 0
    for s in range(0, n_pool, batch):
        pool_df = pd.DataFrame({"phash": pool[s : s + batch]})
        n_exact += len(D.match_exact(test_df, pool_df))
    t_exact = time.perf_counter() - t
    # radius: build the index over the test side, stream the pool through it
    t = time.perf_counter()
    index = D.HammingIndex(test, radius)
    t_build = time.perf_counter() - t
    t = time.perf_counter()
    n_r = 0
    for s in range(0, n_pool, batch):
        qi, _, d = index.search(pool[s : s + batch])
        n_r += len(qi)
    t_radius = time.perf_counter() - t
    # random 64-bit hashes almost never collide by chance, so the counts are the planted ones
    assert n_exact >= expect_0 and n_r >= expect_r, (n_exact, expect_0, n_r, expect_r)
    out = {"n_test": n_test, "n_pool": n_pool, "radius": radius, "exact_s": t_exact,
           "exact_pairs": n_exact, "build_s": t_build, "radius_s": t_radius, "radius_pairs": n_r,
           "plan": index.describe()}
    try:
        import faiss
    except ImportError:
        faiss = None
    if n_pool <= 10**5 and faiss is not None:  # all pairs with faiss, as a check and a baseline

        def as_bytes(h):
            return np.ascontiguousarray(h.astype(">u8")).view(np.uint8).reshape(-1, 8)

        faiss.omp_set_num_threads(1)
        flat = faiss.IndexBinaryFlat(64)
        flat.add(as_bytes(test))
        t = time.perf_counter()
        lims, _, _ = flat.range_search(as_bytes(pool), radius + 1)  # strict < radius + 1
        out["faiss_all_pairs_s"] = time.perf_counter() - t
        out["faiss_pairs"] = int(lims[-1])
        assert out["faiss_pairs"] == n_r, (out["faiss_pairs"], n_r)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer images, pools up to 1e6")
    parser.add_argument("--images", type=int, help="images per kind (default 2000; quick 300)")
    parser.add_argument("--radius", type=int, default=4)
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)
    n_images = args.images or (300 if args.quick else 2000)
    repeat = 1 if args.quick else 2
    pools = [10**5, 10**6] if args.quick else [10**5, 10**6, 10**7]
    print(f"# dedup benchmark: 1 process, {os.cpu_count()} cores on the machine, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)

    results = {"hashing": {}, "matching": []}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("tiny", "photo"):
            tars = make_shards(Path(tmp), kind, n_images)
            results["hashing"][kind] = bench_hashing(tars, repeat)
    print("\n## pHash throughput (images/s, one core, tar read + JPEG decode included)")
    print(f"{'shards':<28}{'n':>6}{'ours':>9}{'imagehash':>11}{'speedup':>9}"
          f"{'decode+resize':>15}{'draft*':>9}{'draft changes':>15}")
    for kind, r in results["hashing"].items():
        label = "32x32 JPEG (world)" if kind == "tiny" else "256-640 px JPEG (LAION-like)"
        print(f"{label:<28}{r['n']:>6}{r['ours']:>9.0f}{r['imagehash']:>11.0f}"
              f"{r['ours'] / r['imagehash']:>8.2f}x{r['decode+resize']:>15.0f}{r['draft']:>9.0f}"
              f"{100 * r['draft_changed']:>14.1f}%")
    print("all our hashes are bit-identical to imagehash.phash; *draft mode is not used: "
          "it changes hashes")

    print(f"\n## matching 1e5 test hashes, radius {args.radius} (seconds, one core)")
    print(f"{'pool':>10}{'exact (join)':>14}{'index build':>13}{'radius search':>15}"
          f"{'pool/s (radius)':>17}{'pairs':>8}{'faiss all-pairs':>17}")
    for n_pool in pools:
        r = bench_matching(10**5, n_pool, args.radius)
        results["matching"].append(r)
        faiss_s = f"{r['faiss_all_pairs_s']:.2f}" if "faiss_all_pairs_s" in r else "-"
        print(f"{n_pool:>10.0e}{r['exact_s']:>14.2f}{r['build_s']:>13.2f}{r['radius_s']:>15.2f}"
              f"{n_pool / r['radius_s']:>17.3g}{r['radius_pairs']:>8}{faiss_s:>17}", flush=True)
    plan = results["matching"][0]["plan"]
    print(f"index: {plan['chunks']} chunks of {plan['chunk_bits']} bits, chunk radius "
          f"{plan['chunk_radius']}, {plan['entries']} entries")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
