"""The embedded default world: a small, self-made, learnable image-text pool and its downstream sets.

Images show 1-4 shapes of one kind and colour, small or large, on a noisy gradient background;
captions compose the attributes ("two small red circles", "a large blue ring in the top left"),
some name only the object ("a triangle", "three rings", as object-centric alt-text does), and
like alt-text some are partial or unrelated. A few pool images are renditions: the shapes drawn
as outlines, or on crops of real photographs (half of the photographs; the other half appear
only in the distribution-shift test set), as a web pool holds sketches and photos of the
concepts a benchmark shifts to. A slice of the pool is real handwritten digits from
scikit-learn, captioned with their number. A tiny CLIP learns more of this world with more data
and more compute, which is what a scaling study needs.

Downstream sets follow clip_benchmark's webdataset layout (classnames.txt, templates,
test/ and train/ shards): shape, colour, count and position classification (the last two like
VTAB's structured tasks), shapes on real photographs (a distribution shift, like ImageNet-R),
real handwritten digits, and caption retrieval. Known near-duplicates of downstream test images
are planted in the pool (resized, re-encoded, blurred, cropped, colour-shifted) and recorded as
ground truth for the dedup step; so are copies with the edits that pHash misses (mirrored, framed,
letterboxed, centre-cropped to 80% or 90%), in pool slots and from test images of their own.

Everything is a function of (seed, sizes): each sample has its own RNG derived from
(seed, stream, index), so the output is byte-identical across runs and machines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from clipscale.config import section
from clipscale.drawing import (COLOURS, COUNTS, DIGITS, HARD_DUPLICATE_TRANSFORMS, NEAR_DUPLICATE_TRANSFORMS,
                               POSITIONS, SHAPES, caption, describe, jpeg, near_duplicate, random_attrs,
                               render, render_digit)
from clipscale.logs import progress as progress_of
from clipscale.shards import ShardWriter

log = logging.getLogger(__name__)

# name -> (task kind, classnames, templates, group); retrieval sets have no classes.
DOWNSTREAM_SETS = {
    "shapes": ("classification", SHAPES,
               ["a photo of a {c}.", "a {c}.", "a picture of a {c} shape."], "main"),
    "colours": ("classification", list(COLOURS),
                ["a photo of a {c} shape.", "something {c}.", "a {c} object."], "vtab+"),
    "counts": ("classification", COUNTS,
               ["a photo of {c} shapes.", "{c} objects.", "there are {c} shapes."], "vtab+"),
    "positions": ("classification", POSITIONS,
                  ["a shape in the {c}.", "a photo of something in the {c}.", "an object at the {c}."],
                  "vtab+"),
    "shapes_shifted": ("classification", SHAPES,
                       ["a photo of a {c}.", "a {c}.", "a picture of a {c} shape."], "robustness"),
    "digits": ("classification", DIGITS,
               ["a handwritten digit {c}.", "the number {c}.", "a photo of the digit {c}."], "vtab+"),
    "world_captions": ("retrieval", None, None, "retrieval"),
}


def unmade_set_problem(config: dict, name: str) -> str | None:
    """Why a downstream set without a path of its own cannot be made, or None: the embedded
    world makes its sets; with another pool every set needs a path."""
    if config["pool"]["source"] != "world":
        return "needs a path (pool.source is not 'world')"
    if name not in DOWNSTREAM_SETS:
        return f"the world makes no set of that name (it makes {sorted(DOWNSTREAM_SETS)})"
    return None


def problems(config: dict) -> list[str]:
    """The world's settings and what it must make: a downstream set without a path that it does
    not make, a scale larger than its pool, caption shares over 1 (the filesystem is not read)."""
    problems = []
    for name, spec in config["downstream"].items():
        if "path" not in spec:
            problem = unmade_set_problem(config, name)
            if problem:
                problems.append(f"downstream.{name}: no path given: {problem}")
    if config["pool"]["source"] == "world":
        world = config["world"]  # filled from the schema's defaults
        pool_size = world["pool_size"]
        for name, size in config["scales"].items():
            if size > pool_size:
                problems.append(f"scales.{name}: {size} samples > world.pool_size {pool_size}")
        if world["caption_noise"] + world["short_captions"] > 1:
            problems.append(f"world: caption_noise {world['caption_noise']} + short_captions "
                            f"{world['short_captions']} > 1 (they are shares of the captions)")
    return problems


_STREAMS = {"pool": 1, "downstream": 2, "planted": 3, "split": 4}
_DATASET_IDS = {name: i for i, name in enumerate(DOWNSTREAM_SETS)}


@dataclass(frozen=True)
class WorldSpec:
    seed: int = 0
    pool_size: int = 48000
    shard_size: int = 2000
    image_size: int = 32
    caption_noise: float = 0.2
    near_duplicates: int = 300
    hard_duplicates: int = 0
    test_per_class: int = 40
    train_per_class: int = 40
    retrieval_size: int = 400
    digit_fraction: float = 0.02
    short_captions: float = 0.25
    renditions: float = 0.1

    @classmethod
    def from_config(cls, config: dict) -> "WorldSpec":
        return cls(seed=config["seed"], **section(config, "world"))  # the schema's defaults

    @property
    def n_shards(self) -> int:
        return math.ceil(self.pool_size / self.shard_size)


def rng_for(seed: int, stream: str, *index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _STREAMS[stream], *index]))



# ---------------------------------------------------------------------------------------------
# real images shipped inside installed wheels


def _digits_split(seed: int):
    """scikit-learn's 1797 handwritten digits split into pool / train / test (40/30/30)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = rng_for(seed, "split", 0).permutation(len(digits.target))
    n_pool, n_train = int(0.4 * len(order)), int(0.3 * len(order))
    parts = {"pool": order[:n_pool], "train": order[n_pool : n_pool + n_train],
             "test": order[n_pool + n_train :]}
    return digits.images, digits.target, parts




def _photos() -> list[np.ndarray]:
    """Real photographs shipped with scikit-image and scikit-learn (backgrounds of the shift set)."""
    from skimage import data as skdata
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(im) for im in load_sample_images().images]
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera", "brick", "grass", "gravel"):
        im = getattr(skdata, name)()
        if im.ndim == 2:
            im = np.stack([im] * 3, axis=-1)
        photos.append(np.asarray(im[..., :3], dtype=np.uint8))
    return photos


# ---------------------------------------------------------------------------------------------
# generation


def pool_photos(photos: list[np.ndarray]) -> list[np.ndarray]:
    """The photographs that pool renditions are drawn on: every other one (the shift test set
    uses them all, so half of its backgrounds never appear in the pool)."""
    return photos[::2]


def pool_sample(spec: WorldSpec, index: int, digits=None, photos=None) -> tuple[Image.Image, str, dict]:
    """Sample `index` of the pool: (image, caption, metadata). Pure function of (spec, index).
    ``photos``: the photographs of renditions (``pool_photos``); None: no photo backgrounds."""
    rng = rng_for(spec.seed, "pool", index)
    if digits is not None and rng.random() < spec.digit_fraction:
        images, targets, parts = digits
        pick = int(parts["pool"][int(rng.integers(len(parts["pool"])))])
        label = DIGITS[int(targets[pick])]
        text = ["a handwritten digit {d}", "the number {d}", "digit {d}", "a {d} written by hand"][
            int(rng.integers(4))].format(d=label)
        meta = {"kind": "digit", "digit": label, "caption_kind": "full", "source_index": pick}
        return render_digit(images[pick], rng, spec.image_size), text, meta
    attrs = random_attrs(rng)
    text, kind = caption(attrs, rng, spec.caption_noise, spec.short_captions)
    photo = None
    if photos and rng.random() < spec.renditions:
        photo = photos[int(rng.integers(len(photos)))]
    outline = bool(rng.random() < spec.renditions)
    img = render(attrs, rng, spec.image_size, photo, outline)
    return img, text, {"kind": "synthetic", "caption_kind": kind, "photo": photo is not None,
                       "outline": outline, **attrs}


def _downstream_items(spec: WorldSpec, name: str, split: str, photos, digits):
    """Yield (image, label or captions, attrs) of one downstream split."""
    kind, classes, _, _ = DOWNSTREAM_SETS[name]
    split_id = {"train": 0, "test": 1}[split]
    per_class = spec.test_per_class if split == "test" else spec.train_per_class
    if name == "digits":
        images, targets, parts = digits
        for j, pick in enumerate(parts[split]):
            rng = rng_for(spec.seed, "downstream", _DATASET_IDS[name], split_id, j)
            yield render_digit(images[pick], rng, spec.image_size), int(targets[pick]), {
                "digit": DIGITS[int(targets[pick])]}
        return
    if kind == "retrieval":
        n = spec.retrieval_size if split == "test" else 0
        for j in range(n):
            rng = rng_for(spec.seed, "downstream", _DATASET_IDS[name], split_id, j)
            attrs = random_attrs(rng)
            texts = [t.format(d=describe(attrs)) for t in ("{d}", "a photo of {d}")]
            yield render(attrs, rng, spec.image_size), texts, attrs
        return
    for label, cls in enumerate(classes):
        for j in range(per_class):
            rng = rng_for(spec.seed, "downstream", _DATASET_IDS[name], split_id, label * 100000 + j)
            attrs = random_attrs(rng)
            photo, outline = None, False
            if name in ("shapes", "shapes_shifted"):
                attrs["shape"] = cls
            elif name == "colours":
                attrs["colour"] = cls
            elif name == "counts":
                attrs["count"] = cls
                attrs["position"] = None if cls != "one" else POSITIONS[int(rng.integers(4))]
            elif name == "positions":
                attrs["count"], attrs["position"] = "one", cls
            if name == "shapes_shifted":
                photo = photos[int(rng.integers(len(photos)))]
                outline = bool(rng.random() < 0.5)
            yield render(attrs, rng, spec.image_size, photo, outline), label, attrs




def _write_downstream(spec: WorldSpec, out: Path, name: str, photos, digits, shard_size=500):
    kind, classes, templates, _ = DOWNSTREAM_SETS[name]
    root = out / name
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_type.txt").write_text(kind + "\n")
    if classes is not None:
        (root / "classnames.txt").write_text("\n".join(classes) + "\n")
        (root / "zeroshot_classification_templates.txt").write_text(
            "\n".join(templates) + "\n")
    counts = {}
    test_images = {}
    for split in ("test", "train"):
        items = list(_downstream_items(spec, name, split, photos, digits))
        if not items:
            continue
        order = rng_for(spec.seed, "downstream", _DATASET_IDS[name], 7, {"test": 1, "train": 0}[split]
                        ).permutation(len(items))
        n_shards = math.ceil(len(items) / shard_size)
        (root / split).mkdir(exist_ok=True)
        (root / split / "nshards.txt").write_text(f"{n_shards}\n")
        for s in range(n_shards):
            with ShardWriter(root / split / f"{s}.tar") as w:
                for j in order[s * shard_size : (s + 1) * shard_size]:
                    img, target, attrs = items[j]
                    key = f"s{s:04d}_{int(j):06d}"
                    files = {"jpg": jpeg(img)}
                    if kind == "retrieval":
                        files["txt"] = "\n".join(target)
                    else:
                        files["cls"] = str(target)
                    w.write(key, files)
                    if split == "test":
                        test_images[key] = img
        counts[split] = len(items)
    return counts, test_images


def generate(spec: WorldSpec, out: str | Path, progress: bool = True, workers: int = 1) -> dict:
    """Write the whole world under `out`: pool/, downstream/, planted_duplicates.csv, world.json.
    ``workers`` > 1: the pool's shards are written by that many processes (the same files)."""
    out = Path(out)
    digits = _digits_split(spec.seed)
    photos = _photos()
    summary = {"spec": spec.__dict__, "downstream": {}, "pool": {}}

    # downstream sets first: the pool plants near-duplicates of their test images
    test_pool = []
    for name in DOWNSTREAM_SETS:
        counts, test_images = _write_downstream(spec, out / "downstream", name, photos, digits)
        summary["downstream"][name] = counts
        test_pool += [(name, key, img) for key, img in sorted(test_images.items())]
        log.info("downstream %s: %s", name, counts)

    # which pool slots receive a planted near-duplicate, and of which test image
    prng = rng_for(spec.seed, "planted", 0)
    n_plant = min(spec.near_duplicates, len(test_pool), spec.pool_size)
    slots = np.sort(prng.choice(spec.pool_size, size=n_plant, replace=False))
    sources = prng.choice(len(test_pool), size=n_plant, replace=False)
    planted = {}
    for i, (slot, src) in enumerate(zip(slots, sources)):
        transform = NEAR_DUPLICATE_TRANSFORMS[i % len(NEAR_DUPLICATE_TRANSFORMS)]
        planted[int(slot)] = (test_pool[int(src)], transform)
    # copies with the edits pHash misses: a stream, slots and test images of their own, so the
    # pool's other images (and the copies above) are the same with or without them
    hrng = rng_for(spec.seed, "planted", 2)
    free_slots = np.setdiff1d(np.arange(spec.pool_size), slots)
    free_sources = np.setdiff1d(np.arange(len(test_pool)), sources)
    n_hard = min(spec.hard_duplicates, len(free_slots), len(free_sources))
    hard_slots = np.sort(hrng.choice(free_slots, size=n_hard, replace=False))
    hard_sources = hrng.choice(free_sources, size=n_hard, replace=False)
    for i, (slot, src) in enumerate(zip(hard_slots, hard_sources)):
        transform = HARD_DUPLICATE_TRANSFORMS[i % len(HARD_DUPLICATE_TRANSFORMS)]
        planted[int(slot)] = (test_pool[int(src)], transform)

    pool_dir = out / "pool"
    pool_dir.mkdir(parents=True, exist_ok=True)
    global _POOL_JOB
    _POOL_JOB = (spec, pool_dir, planted, digits, pool_photos(photos))
    truth = []
    kinds: dict[str, int] = {}
    shards = range(spec.n_shards)
    with contextlib.ExitStack() as stack:
        stack.callback(globals().__setitem__, "_POOL_JOB", None)  # also when a shard fails
        if workers > 1 and spec.n_shards > 1:  # forked workers inherit _POOL_JOB: nothing pickled but results
            import concurrent.futures
            import multiprocessing

            pool = stack.enter_context(concurrent.futures.ProcessPoolExecutor(
                min(workers, spec.n_shards), mp_context=multiprocessing.get_context("fork")))
            written = pool.map(_write_pool_shard, shards)
        else:
            written = map(_write_pool_shard, shards)
        done = zip(shards, written)
        if progress:  # the pairs, not the map: zip stops before asking the map for more
            done = progress_of(done, "world pool", spec.n_shards, "shards", log)
        for shard, (shard_truth, shard_kinds, n) in done:
            truth += shard_truth
            for kind, count in shard_kinds.items():
                kinds[kind] = kinds.get(kind, 0) + count
            if progress:
                log.info("pool shard %d/%d written (%d samples)", shard + 1, spec.n_shards, n)
    pd.DataFrame(truth, columns=["pool_key", "pool_shard", "dataset", "test_key", "transform"]).to_csv(
        out / "planted_duplicates.csv", index=False)
    summary["pool"] = {"samples": spec.pool_size, "shards": spec.n_shards, "kinds": kinds,
                       "planted_duplicates": len(truth)}
    (out / "world.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


_POOL_JOB = None  # (spec, pool folder, planted copies, digits, photos) of the pool being written


def _write_pool_shard(shard: int) -> tuple[list[dict], dict[str, int], int]:
    """Write pool shard ``shard`` (tar, parquet, stats) of the pool in ``_POOL_JOB``; return its
    planted copies' rows, its sample kinds and its sample count. Each sample is a pure function
    of (spec, index): the shards are the same whichever process writes them."""
    spec, pool_dir, planted, digits, renditions = _POOL_JOB
    start, stop = shard * spec.shard_size, min(spec.pool_size, (shard + 1) * spec.shard_size)
    rows, truth, kinds = [], [], {}
    with ShardWriter(pool_dir / f"{shard:05d}.tar") as w:
        for index in range(start, stop):
            key = f"{shard:05d}{index - start:04d}"
            img, text, meta = pool_sample(spec, index, digits, renditions)
            if index in planted:
                (dataset, test_key, test_img), transform = planted[index]
                img = near_duplicate(test_img, transform, rng_for(spec.seed, "planted", 1, index))
                meta = {"kind": "planted", "caption_kind": "full", "dataset": dataset,
                        "test_key": test_key, "transform": transform}
                truth.append({"pool_key": key, "pool_shard": f"{shard:05d}", "dataset": dataset,
                              "test_key": test_key, "transform": transform})
            data = jpeg(img)
            w.write(key, {"jpg": data, "txt": text, "json": {"key": key, "caption": text, **meta}})
            kinds[meta["kind"]] = kinds.get(meta["kind"], 0) + 1
            rows.append({"url": f"world://{spec.seed}/{index}", "key": key, "caption": text,
                         "status": "success", "error_message": None, "width": img.size[0],
                         "height": img.size[1], "sha256": _sha256(data)})
    pd.DataFrame(rows).to_parquet(pool_dir / f"{shard:05d}.parquet", index=False)
    (pool_dir / f"{shard:05d}_stats.json").write_text(json.dumps(
        {"count": len(rows), "successes": len(rows), "failed_to_download": 0,
         "failed_to_resize": 0}, indent=1))
    return truth, kinds, len(rows)


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
