"""Matching modes: which hashes of a test image (and of a pool image) are compared.

pHash (the paper's method, mode ``phash``) is blind to edits that are common between web copies
and benchmark images: a mirrored copy, a frame or letterbox bars around it, a crop of its
centre. Each further mode adds hashes of *variants* of the test images (the small side), hashed
in the downstream hash job and stored as extra uint64 columns ``phash_<variant>`` of its parquet:

- ``mirror``: the horizontal mirror of each test image (variant ``mirror``);
- ``trim``: each image with its uniform borders and bars cut off (variant ``trim``: the bounding
  box inside the rows and columns at the edges that are the corners' grey, where they form a
  band: uniform and ending in a clear step to the picture, see ``trim_box``; a dark sky or a
  plain background that fades into a photograph is no border).
  Trimming the test image finds a pool copy when the *test* image has the bars; a framed *pool*
  copy of a test image is only found when the pool images are trimmed too (``dedup.trim_pool``:
  a ``phash_trim`` column written by the pool hash jobs, which decode every image once for both
  hashes). Trimmed test hashes are then matched against trimmed pool hashes (an image without a
  border is its own trim, so its two hashes are equal);
- ``crops``: centre crops of each test image keeping a fraction of each side
  (``dedup.crops``, variants ``crop80``, ``crop90``, ...): a pool copy that is a crop of the
  test image.

Every variant's hash is ``imagehash.phash`` of the variant image (the same batched pHash). Each
mode's pairs are written with the mode's name (column ``mode`` of the matches), so the overlap
table, the planted recall and the filtered subsets can report or use each mode on its own.
- ``embedding``: the cosine similarity of a CLIP image encoder's features, searched with faiss
  (``clipscale.dedup.embedding``): no hashes; its pairs join the others' in the matches.

A mode is an entry of MODES.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageOps

from clipscale.config import schema_default
from clipscale.dedup.formats import DedupError

TRIM_TOLERANCE = 12     # grey levels (of 255) a border pixel may differ from the corners' grey
TRIM_SHARE = 0.9        # share of a border row's (column's) pixels within the tolerance
TRIM_BAND_STD = 5.0     # a border band's grey varies less than this (standard deviation, grey levels)
TRIM_STEP = 0.4         # share of a line just inside a band that differs from the border: the step
TRIM_STEP_TOLERANCE = 18  # grey levels from the border's that a pixel of the step differs by at least
TRIM_STEP_LINES = 3     # the lines inside a band where the step is looked for (a resized edge blurs)
TRIM_MIN_CUT = 0.04     # less than this share of each side to trim: left as it is
TRIM_MIN_KEEP = 0.2     # a trim keeping less than this share of a side of the image is no border
DEFAULT_CROPS = tuple(schema_default("dedup", "crops"))  # the schema's dedup.crops, for library callers


@dataclass(frozen=True)
class Mode:
    name: str
    description: str
    pool_variant: str | None = None  # the pool column it compares with: phash_<pool_variant>
    hashes: bool = True  # compares pHashes (False: mode embedding, clipscale.dedup.embedding)


MODES: dict[str, Mode] = {m.name: m for m in (
    Mode("phash", "the paper's pHash of the test image against the pool's"),
    Mode("mirror", "pHash of the test image's horizontal mirror"),
    Mode("trim", "pHash with uniform borders and bars trimmed (test and, with trim_pool, pool)",
         pool_variant="trim"),
    Mode("crops", "pHash of centre crops of the test image (dedup.crops)"),
    Mode("embedding", "cosine similarity of a CLIP image encoder's features (dedup.embedding), "
                      "searched with faiss", hashes=False),
)}


def check_modes(modes: Iterable[str]) -> list[str]:
    modes = list(modes)
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise DedupError(f"unknown dedup mode(s) {unknown}; known: {list(MODES)}")
    if len(set(modes)) != len(modes):
        raise DedupError(f"a dedup mode is given twice: {modes}")
    return modes


def crop_variant(fraction: float) -> str:
    if not 0 < fraction < 1:
        raise DedupError(f"a centre crop keeps a fraction of each side in (0, 1), got {fraction}")
    return f"crop{round(100 * fraction)}"


def mode_variants(mode: str, crops: Sequence[float] = DEFAULT_CROPS) -> list[str]:
    """The test-image variants a mode compares ('' is the image itself; none for a mode that
    compares no hashes)."""
    if not MODES[mode].hashes:
        return []
    if mode == "phash":
        return [""]
    if mode == "crops":
        return list(dict.fromkeys(crop_variant(f) for f in crops))
    return [mode]


def downstream_variants(modes: Iterable[str], crops: Sequence[float] = DEFAULT_CROPS) -> list[str]:
    """The variants the downstream hash jobs hash besides the image itself (columns phash_<v>)."""
    out = [v for m in check_modes(modes) for v in mode_variants(m, crops)]
    return [v for v in dict.fromkeys(out) if v]


def pool_variants(modes: Iterable[str], trim_pool: bool = True) -> list[str]:
    """The variants the pool hash jobs hash besides the image itself: 'trim' for mode trim with
    trim_pool (every pool image trimmed: one more pHash per image, the decode shared)."""
    return ["trim"] if "trim" in check_modes(modes) and trim_pool else []


def settings(dedup: Mapping) -> dict:
    """The dedup config's matching settings: modes, crops, trim_pool (the schema's defaults
    where the section lacks them)."""
    from clipscale.config import section

    full = section({"dedup": dict(dedup)}, "dedup")
    return {"modes": check_modes(full["modes"]), "crops": list(full["crops"]),
            "trim_pool": bool(full["trim_pool"])}


def removal_modes(dedup: Mapping) -> list[str]:
    """The modes whose matches dedup.remove_duplicates removes: true = every configured mode,
    a list = those modes (each must be configured), false = none."""
    modes = settings(dedup)["modes"]
    remove = dedup.get("remove_duplicates", False)
    if remove is True:
        return modes
    if not remove:
        return []
    missing = [m for m in check_modes(remove) if m not in modes]
    if missing:
        raise DedupError(f"dedup.remove_duplicates names modes {missing} that dedup.modes "
                         f"{modes} does not match")
    return list(remove)


# the variants ----------------------------------------------------------------------------------


def trim_box(image: Image.Image, tolerance: int = TRIM_TOLERANCE,
             share: float = TRIM_SHARE) -> tuple[int, int, int, int] | None:
    """The box of the image without its uniform border, or None when there is none.

    Works on the grey image (what pHash sees; JPEG keeps its edges sharper than the colours'):
    a row or column at an edge is border while at least ``share`` of its pixels are within
    ``tolerance`` grey levels of the corners' (median) grey, so the ringing that JPEG leaves
    along a frame does not stop the trim. Those lines are cut from a side only when they form a
    band (``_band``): uniform (their grey's standard deviation at most TRIM_BAND_STD) and
    ending in a clear step (in one of the TRIM_STEP_LINES lines inside it at least TRIM_STEP of
    the pixels are not the border's grey). The dark sky of a night photograph or the plain
    ground around a cell passes the first test but fades into the picture: left as it is.
    No trim (None) when less than TRIM_MIN_CUT of each side would go, or when less than
    TRIM_MIN_KEEP of a side would stay (an image on a plain background)."""
    grey = np.asarray(image if image.mode == "L" else image.convert("L"), dtype=np.int16)
    if grey.ndim != 2 or min(grey.shape) < 3:
        return None
    h, w = grey.shape
    corner = np.median([grey[0, 0], grey[0, -1], grey[-1, 0], grey[-1, -1]])

    def border(line):
        return np.count_nonzero(np.abs(line - corner) <= tolerance) >= share * len(line)

    if not any(border(line) for line in (grey[0], grey[-1], grey[:, 0], grey[:, -1])):
        return None  # the common case, decided on the four edges alone
    near = np.abs(grey - corner) <= tolerance
    rows, cols = near.mean(axis=1) >= share, near.mean(axis=0) >= share
    if rows.all():  # a uniform image
        return None
    top, bottom = int(np.argmin(rows)), h - int(np.argmin(rows[::-1]))
    left, right = int(np.argmin(cols)), w - int(np.argmin(cols[::-1]))
    # the picture within the border lines of every side: its pixels that clearly differ
    inside = np.abs(grey[top:bottom, left:right] - corner) <= TRIM_STEP_TOLERANCE
    k = TRIM_STEP_LINES
    top = top if _band(grey[:top], inside[:k]) else 0
    bottom = bottom if _band(grey[bottom:], inside[::-1][:k]) else h
    left = left if _band(grey[:, :left], inside.T[:k]) else 0
    right = right if _band(grey[:, right:], inside.T[::-1][:k]) else w
    if (w - (right - left)) < TRIM_MIN_CUT * w and (h - (bottom - top)) < TRIM_MIN_CUT * h:
        return None
    if right - left < TRIM_MIN_KEEP * w or bottom - top < TRIM_MIN_KEEP * h:
        return None
    return left, top, right, bottom


def _band(band: np.ndarray, inside: np.ndarray) -> bool:
    """Whether the border lines of one side (their grey, ``band``) are a border: uniform (grey
    std <= TRIM_BAND_STD) and ending in a step (one of the ``inside`` lines next to them, within
    the other sides' border lines, has >= TRIM_STEP of its pixels off the border's grey)."""
    if band.size == 0 or band.std() > TRIM_BAND_STD:
        return False
    return bool((1 - inside.mean(axis=1)).max() >= TRIM_STEP)


def trim(image: Image.Image, tolerance: int = TRIM_TOLERANCE, passes: int = 3) -> Image.Image:
    """The image without its uniform borders: trimmed again while a border is left (a frame
    around bars, a frame around a picture on a plain ground), at most ``passes`` times, and
    never to less than TRIM_MIN_KEEP of a side of the image as given (a pass that would cut
    further is not made)."""
    width, height = image.size
    for _ in range(passes):
        box = trim_box(image, tolerance)
        if box is None:
            break
        left, top, right, bottom = box
        if right - left < TRIM_MIN_KEEP * width or bottom - top < TRIM_MIN_KEEP * height:
            break
        image = image.crop(box)
    return image


def centre_crop(image: Image.Image, fraction: float) -> Image.Image:
    """The centre of the image keeping ``fraction`` of each side, at its own pixels."""
    w, h = image.size
    cw, ch = max(1, round(w * fraction)), max(1, round(h * fraction))
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.crop((left, top, left + cw, top + ch))


_CROP = re.compile(r"crop(\d+)")


def variant_function(variant: str) -> Callable[[Image.Image], Image.Image]:
    """image -> the variant image ('mirror', 'trim', 'crop80', ...)."""
    if variant == "mirror":
        return ImageOps.mirror
    if variant == "trim":
        return trim
    m = _CROP.fullmatch(variant)
    if m and 0 < int(m.group(1)) < 100:
        fraction = int(m.group(1)) / 100
        return lambda image: centre_crop(image, fraction)
    raise DedupError(f"unknown image variant {variant!r} (mirror, trim, crop<percent>)")


def column(variant: str) -> str:
    """The hash column of a variant: phash for the image itself, phash_<variant> otherwise."""
    return f"phash_{variant}" if variant else "phash"
