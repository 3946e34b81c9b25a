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
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from clipscale.config import section
from clipscale.logs import progress as progress_of
from clipscale.shards import ShardWriter

log = logging.getLogger(__name__)

SHAPES = ["circle", "square", "triangle", "diamond", "cross", "ring"]
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
    "white": (240, 240, 240),
    "cyan": (40, 210, 220),
}
COUNTS = ["one", "two", "three", "four"]
SIZES = ["small", "large"]
POSITIONS = ["top left", "top right", "bottom left", "bottom right"]
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

UNRELATED = [
    "IMG_{n}.jpg", "free stock image {n}", "wallpaper hd {n}", "untitled", "click to enlarge",
    "product photo {n}", "screenshot {n}", "thumbnail", "image may contain: text", "DSC{n}",
]

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
_SUPERSAMPLE = 4


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
# drawing


def _background(rng: np.random.Generator, size: int, photo: np.ndarray | None = None) -> Image.Image:
    if photo is not None:
        h, w = photo.shape[:2]
        crop = int(rng.integers(min(h, w) // 4, min(h, w) // 2 + 1))
        y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        img = Image.fromarray(photo[y : y + crop, x : x + crop]).convert("RGB")
        return img.resize((size, size), Image.BILINEAR)
    # a random low-frequency field (an 8x8 grid of colours, smoothly upsampled) makes every
    # background distinct at the scale pHash sees, plus fine sensor-like noise
    base = rng.uniform(10, 80, size=3)
    field = Image.fromarray(rng.uniform(0, 255, size=(8, 8, 3)).astype(np.uint8), "RGB")
    field = np.asarray(field.resize((size, size), Image.BICUBIC), dtype=float)
    amplitude = rng.uniform(0.25, 0.4)
    noise = rng.normal(0, rng.uniform(2, 10), size=(size, size, 3))
    arr = np.clip(base + amplitude * (field - 128) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float,
                fill: tuple, outline_only: bool, angle: float) -> None:
    width = max(1, int(r * 0.35))
    if shape in ("circle", "ring"):
        box = [cx - r, cy - r, cx + r, cy + r]
        if shape == "ring" or outline_only:
            draw.ellipse(box, outline=fill, width=width)
        else:
            draw.ellipse(box, fill=fill)
        return
    if shape == "cross":
        t = r * 0.22  # thin arms: a plus sign, not a blob like a square
        pts = [(-t, -r), (t, -r), (t, -t), (r, -t), (r, t), (t, t), (t, r), (-t, r), (-t, t),
               (-r, t), (-r, -t), (-t, -t)]
    elif shape == "square":
        s = r * 0.85
        pts = [(-s, -s), (s, -s), (s, s), (-s, s)]
    elif shape == "triangle":
        pts = [(0, -r), (r * 0.95, r * 0.75), (-r * 0.95, r * 0.75)]
    elif shape == "diamond":
        pts = [(0, -r), (r * 0.55, 0), (0, r), (-r * 0.55, 0)]  # slim: not a triangle
    else:
        raise ValueError(f"unknown shape {shape!r}")
    c, s_ = math.cos(angle), math.sin(angle)
    poly = [(cx + x * c - y * s_, cy + x * s_ + y * c) for x, y in pts]
    if outline_only:
        draw.polygon(poly, outline=fill, width=width)
    else:
        draw.polygon(poly, fill=fill)


def render(attrs: dict, rng: np.random.Generator, size: int, photo: np.ndarray | None = None,
           outline_only: bool = False) -> Image.Image:
    """Draw the scene described by attrs (shape, colour, count, size, position)."""
    big = size * _SUPERSAMPLE
    img = _background(rng, big, photo)
    draw = ImageDraw.Draw(img)
    count = COUNTS.index(attrs["count"]) + 1
    large = attrs["size"] == "large"
    jitter = rng.uniform(-18, 18, size=3)
    fill = tuple(int(np.clip(v + j, 0, 255)) for v, j in zip(COLOURS[attrs["colour"]], jitter))
    if count == 1:
        r = big * (rng.uniform(0.21, 0.23) if large else rng.uniform(0.16, 0.18))
        cells = [POSITIONS.index(attrs["position"])]
    else:
        r = big * (rng.uniform(0.19, 0.21) if large else rng.uniform(0.14, 0.16))
        cells = rng.permutation(4)[:count]  # one object per quadrant: countable, no overlap
    margin = big * 0.02
    lo, hi = r + margin, big / 2 - r - margin  # the object stays inside its quadrant
    centres = []
    for cell in cells:
        qx, qy = int(cell) % 2, int(cell) // 2
        cx = qx * big / 2 + (rng.uniform(lo, hi) if hi > lo else big / 4)
        cy = qy * big / 2 + (rng.uniform(lo, hi) if hi > lo else big / 4)
        centres.append((cx, cy))
    angle = rng.uniform(-0.3, 0.3)
    for cx, cy in centres:
        _draw_shape(draw, attrs["shape"], cx, cy, r, fill, outline_only, angle)
    return img.resize((size, size), Image.LANCZOS)


def random_attrs(rng: np.random.Generator) -> dict:
    count = COUNTS[int(rng.choice(4, p=[0.4, 0.2, 0.2, 0.2]))]
    return {
        "shape": SHAPES[int(rng.integers(len(SHAPES)))],
        "colour": list(COLOURS)[int(rng.integers(len(COLOURS)))],
        "count": count,
        "size": SIZES[int(rng.integers(2))],
        "position": POSITIONS[int(rng.integers(4))] if count == "one" else None,
    }


def describe(attrs: dict) -> str:
    """The full description: 'a large red circle in the top left', 'three small blue squares'."""
    if attrs["count"] == "one":
        noun = f"{attrs['size']} {attrs['colour']} {attrs['shape']}"
        article = "an" if noun[0] in "aeiou" else "a"
        return f"{article} {noun} in the {attrs['position']}"
    return f"{attrs['count']} {attrs['size']} {attrs['colour']} {attrs['shape']}s"


_CAPTION_TEMPLATES = ["{d}", "a photo of {d}", "{d} on a dark background", "picture of {d}",
                      "{d}, digital art", "an image of {d}"]


def caption(attrs: dict, rng: np.random.Generator, noise: float, short: float = 0.0) -> tuple[str, str]:
    """(caption, kind): kind is 'full', 'short' (the object only), 'partial' (attributes
    dropped) or 'unrelated'."""
    template = _CAPTION_TEMPLATES[int(rng.integers(len(_CAPTION_TEMPLATES)))]
    u = rng.random()
    if u >= noise + short:
        return template.format(d=describe(attrs)), "full"
    if u >= noise:
        if attrs["count"] == "one":
            return template.format(d=f"a {attrs['shape']}"), "short"
        return template.format(d=f"{attrs['count']} {attrs['shape']}s"), "short"
    if rng.random() < 0.5:
        plural = attrs["count"] != "one"
        options = [attrs["shape"] + ("s" if plural else ""), f"{attrs['colour']} shape",
                   f"{attrs['colour']} {attrs['shape']}" + ("s" if plural else "")]
        return template.format(d=options[int(rng.integers(len(options)))]), "partial"
    text = UNRELATED[int(rng.integers(len(UNRELATED)))].format(n=int(rng.integers(1000, 9999)))
    return text, "unrelated"


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


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


def render_digit(image8: np.ndarray, rng: np.random.Generator, size: int) -> Image.Image:
    arr = (image8 / 16.0 * 255).astype(np.uint8)
    img = Image.fromarray(arr, "L").resize((size, size), Image.BICUBIC)
    ink = np.array(list(COLOURS.values())[int(rng.integers(len(COLOURS)))], dtype=float)
    paper = rng.uniform(0, 60, size=3)
    a = np.asarray(img, dtype=float)[..., None] / 255.0
    rgb = np.clip(paper * (1 - a) + ink * a + rng.normal(0, 4, size=a.shape[:2] + (3,)), 0, 255)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


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


NEAR_DUPLICATE_TRANSFORMS = ["resize", "reencode", "blur", "crop", "colour_shift"]
# edits common between web copies and benchmark images that pHash is blind to (planted apart:
# ``WorldSpec.hard_duplicates``); crop80/crop90 keep the centre 80%/90% of each side
HARD_DUPLICATE_TRANSFORMS = ["flip", "frame", "bars", "crop80", "crop90"]


def near_duplicate(img: Image.Image, transform: str, rng: np.random.Generator) -> Image.Image:
    """A near-duplicate of a test image, as found on the web."""
    w, h = img.size
    if transform == "resize":
        factor = float(rng.choice([0.75, 1.5, 2.0]))
        return img.resize((max(8, int(w * factor)), max(8, int(h * factor))), Image.BICUBIC)
    if transform == "reencode":
        return Image.open(io.BytesIO(jpeg(img, quality=int(rng.integers(30, 60))))).convert("RGB")
    if transform == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=0.6))
    if transform == "crop":
        m = max(1, int(round(w * 0.04)))
        return img.crop((m, m, w - m, h - m)).resize((w, h), Image.BICUBIC)
    if transform == "colour_shift":
        return ImageEnhance.Brightness(ImageEnhance.Color(img).enhance(1.3)).enhance(1.1)
    if transform == "flip":
        return ImageOps.mirror(img)
    if transform == "frame":  # a uniform frame of 10% of the side on every side (passe-partout)
        fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
        return ImageOps.expand(img, border=(max(1, round(0.1 * w)), max(1, round(0.1 * h))), fill=fill)
    if transform == "bars":  # letterbox: dark bars above and below, a quarter of the height each
        bar = max(1, round(0.25 * h))
        grey = int(rng.integers(0, 24))
        canvas = Image.new("RGB", (w, h + 2 * bar), (grey, grey, grey))
        canvas.paste(img, (0, bar))
        return canvas
    if transform in ("crop80", "crop90"):  # the centre, at its own pixels (not resized)
        keep = int(transform[4:]) / 100
        cw, ch = max(1, round(w * keep)), max(1, round(h * keep))
        left, top = (w - cw) // 2, (h - ch) // 2
        return img.crop((left, top, left + cw, top + ch))
    raise ValueError(f"unknown transform {transform!r}")


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
