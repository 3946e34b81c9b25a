"""Drawing the embedded world: its vocabulary (shapes, colours, counts, sizes, positions, digits,
unrelated alt-text), the images (shapes on noisy gradients or photograph crops, outlines,
handwritten digits) and their captions, JPEG encoding, and the near-duplicate edits planted in the
pool. Pure functions of their arguments and the RNG they are given; ``clipscale.world`` decides
what is drawn where, from (seed, stream, index).
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

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

_SUPERSAMPLE = 4


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

def render_digit(image8: np.ndarray, rng: np.random.Generator, size: int) -> Image.Image:
    arr = (image8 / 16.0 * 255).astype(np.uint8)
    img = Image.fromarray(arr, "L").resize((size, size), Image.BICUBIC)
    ink = np.array(list(COLOURS.values())[int(rng.integers(len(COLOURS)))], dtype=float)
    paper = rng.uniform(0, 60, size=3)
    a = np.asarray(img, dtype=float)[..., None] / 255.0
    rgb = np.clip(paper * (1 - a) + ink * a + rng.normal(0, 4, size=a.shape[:2] + (3,)), 0, 255)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


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
