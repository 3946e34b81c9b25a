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
4. Real photographs, which have no border (random crops, 256-640 px, of the 21 photographs that
   scikit-image, scikit-learn and matplotlib ship): the share that mode trim changes anyway and
   the least area it keeps; then a test set of 500 of them, a pool of one copy of each with one
   of the edits above and 2,000 other such photographs, matched at the radius in every mode:
   recall per mode and per edit, and the other photographs falsely matched (a floor every mode
   shares: crops of one photograph can look alike).
5. With ``--embedding CHECKPOINT --model NAME`` (and ``--config`` for a custom model, default
   config/config.yaml): mode embedding with that encoder, recall per edit and precision at a few
   cosine thresholds, and its encoding rate (images/s, seconds per 1e7 pool images, CPU).

    .venv/bin/python benchmarks/bench_dedup_modes.py --quick --model vit-m \
        --embedding results/train/vit-m/48k/90k/openclip/checkpoints/epoch_4.pt
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from clipscale import dedup as D
from clipscale import world as W
from clipscale.shards import ShardWriter

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
    n_real, n_other = (200, 800) if args.quick else (500, 2000)
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
        real = photographs(tmp, n_real, n_other, args.radius)

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
    kept = real["kept"]
    changed = kept[kept < 1]
    print(f"\nreal photographs without a border: trim changed {len(changed)} of {len(kept)} "
          f"({100 * len(changed) / len(kept):.1f}%)"
          + (f", the least area kept {100 * changed.min():.0f}%" if len(changed) else ""))
    print(f"recall (%) per edit on {n_real} of them at radius {args.radius} (a copy each), and the "
          f"{n_other} other photographs of the pool falsely matched")
    print(pd.DataFrame(real["rows"]).to_string(index=False))
    if emb is not None:
        rows, rate = emb
        print(f"\nmode embedding ({args.model}, {args.embedding}): recall (%) per edit and precision by "
              f"cosine threshold")
        print(pd.DataFrame(rows).to_string(index=False))
        print(f"encoding, one process (CPU): {rate:.0f} pool images/s ({1e7 / rate:.0f} s per 1e7)")
    return 0


def _photographs() -> list[np.ndarray]:
    """The real photographs that wheels ship, RGB: 17 of scikit-image's data and its motorcycle,
    scikit-learn's china and flower, matplotlib's grace_hopper."""
    import matplotlib.cbook
    import skimage.data
    from sklearn.datasets import load_sample_images

    out = []
    for name in ("astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass",
                 "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket",
                 "text"):
        a = getattr(skimage.data, name)()
        out.append(np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3])
    out.append(skimage.data.stereo_motorcycle()[0])
    out += [np.asarray(im) for im in load_sample_images().images]
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        out.append(np.asarray(Image.open(f).convert("RGB")))
    return out


def _jpeg(image: Image.Image, rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=int(rng.integers(75, 96)))
    return buf.getvalue()


def _photograph(photos: list[np.ndarray], rng: np.random.Generator) -> bytes:
    """A borderless photograph as on the web: a random crop (a third to all of each side) of one
    of the photographs, 256-640 px on its long side, JPEG quality 75-95."""
    a = photos[int(rng.integers(len(photos)))]
    h, w = a.shape[:2]
    ch, cw = int(rng.integers(h // 3, h)), int(rng.integers(w // 3, w))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    image = Image.fromarray(a[y : y + ch, x : x + cw])
    scale = int(rng.integers(256, 641)) / max(image.size)
    size = (max(16, round(image.size[0] * scale)), max(16, round(image.size[1] * scale)))
    return _jpeg(image.resize(size, Image.Resampling.BICUBIC), rng)


def _kept(data: bytes) -> float:
    """The share of a photograph's area that mode trim keeps (1: not trimmed)."""
    with Image.open(io.BytesIO(data)) as image:
        grey = image.convert("L")
    trimmed = D.trim(grey)
    return trimmed.size[0] * trimmed.size[1] / (grey.size[0] * grey.size[1])


def photographs(tmp: Path, n_test: int, n_other: int, radius: int) -> dict:
    """Part 4: what trim keeps of every borderless photograph, and each mode's recall per edit and
    other photographs falsely matched (pool: a copy of each test photograph, n_other others)."""
    rng = np.random.default_rng(29)
    photos = _photographs()
    edits = W.HARD_DUPLICATE_TRANSFORMS + W.NEAR_DUPLICATE_TRANSFORMS
    kept, planted = [], []
    with ShardWriter(tmp / "photos" / "test" / "0.tar") as tests, ShardWriter(tmp / "photos_pool.tar") as pool:
        for i in range(n_test):
            data = _photograph(photos, rng)
            kept.append(_kept(data))
            tests.write(f"t{i:05d}", {"jpg": data, "cls": "0"})
            edit = edits[i % len(edits)]
            copy = W.near_duplicate(Image.open(io.BytesIO(data)).convert("RGB"), edit, rng)
            pool.write(f"copy{i:05d}", {"jpg": _jpeg(copy, rng), "txt": edit})
            planted.append({"pool_key": f"copy{i:05d}", "dataset": "photos", "test_key": f"t{i:05d}",
                            "transform": edit})
        for j in range(n_other):
            data = _photograph(photos, rng)
            kept.append(_kept(data))
            pool.write(f"other{j:05d}", {"jpg": data, "txt": "other"})
    D.hash_shards([tmp / "photos_pool.tar"], tmp / "photos_pool.parquet", variants=D.pool_variants(ALL))
    test = tmp / "photos.parquet"
    D.hash_shards(D.downstream_test_shards(tmp / "photos"), test, name="photos",
                  variants=D.downstream_variants(ALL))
    D.match_files(tmp / "photos_pool.parquet", [test], radius, tmp / "photos_m.parquet", modes=ALL)
    m = D.read_matches(tmp / "photos_m.parquet")
    r = D.planted_recall(m, pd.DataFrame(planted), radius, test_hashes=D.load_test_hashes([test]),
                         modes=ALL)["modes"]
    other = m[m["pool_key"].str.startswith("other")]
    rows = []
    for mode in ALL + ["any"]:
        false = other["pool_key"].nunique() if mode == "any" else other.loc[other["mode"] == mode, "pool_key"].nunique()
        rows.append({"mode": mode if mode != "phash" else "phash (paper)",
                     **{e: f"{100 * r[mode]['by_transform'].get(e, 0):.0f}" for e in edits},
                     "recall": f"{100 * r[mode]['recall']:.1f}",
                     "false others": f"{false} ({100 * false / n_other:.2f}%)"})
    return {"kept": np.array(kept), "rows": rows}


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
