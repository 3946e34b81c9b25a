"""Perceptual hash (pHash), batched, bit-identical to ``imagehash.phash`` (hash_size 8).

The paper (Sec. 3, Table 3) looks for downstream test images in LAION with a 64-bit pHash. This
module computes the same hash as ``imagehash.phash(image)`` (imagehash 4.3), faster, in batches:

1. per image, in Pillow (C): ``image.convert('L').resize((32, 32), LANCZOS)``, exactly as
   imagehash does (no EXIF transpose, no draft-mode JPEG decoding: both change the pixels);
2. per batch, in numpy/scipy: the unnormalised DCT-II of ``scipy.fftpack.dct`` over axis 0 and
   then axis 1 of each 32x32 image, the top-left 8x8 block (DC included), bit = value > median
   of those 64 values.

Step 2 runs the same pocketfft transforms as imagehash, only stacked over a batch axis, so every
float is the same and the hash is bit-identical (tests/test_phash.py checks this against imagehash
on real images and odd modes). Two shortcuts that look equivalent are not:

- a DCT written as a matrix product (``C @ X @ C.T``) rounds differently; on constant images and
  on images with many equal coefficients (a checkerboard) the values tie with the median and the
  bits flip;
- Pillow's JPEG draft mode (decoding straight to grey or to a reduced size) is 1.5-2x faster but
  gives other pixels.

The second DCT pass only transforms the 8 rows that are kept (each row is an independent 1-D
transform, so this changes no value).

Bit order of the uint64: bit 63 (most significant) is coefficient (0, 0), bit 62 is (0, 1), ...
bit 0 is (7, 7): row-major over the 8x8 block, most significant first. This is the order of
``str(imagehash.phash(img))``, so ``to_hex(h) == str(imagehash.phash(img))`` and
``int(str(imagehash.phash(img)), 16) == h``.
"""

from __future__ import annotations

import io
from typing import Iterable

import numpy as np
import scipy.fftpack
from PIL import Image, UnidentifiedImageError

HASH_SIZE = 8
HIGHFREQ_FACTOR = 4
IMG_SIZE = HASH_SIZE * HIGHFREQ_FACTOR  # 32
RESAMPLE = Image.Resampling.LANCZOS  # imagehash's ANTIALIAS

# Tar member extensions that hold the image of a sample, in order of preference.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm", "pgm", "tif", "tiff", "gif")


def prepare(image: Image.Image) -> np.ndarray:
    """The 32x32 uint8 grey image that imagehash takes the DCT of."""
    return np.asarray(image.convert("L").resize((IMG_SIZE, IMG_SIZE), RESAMPLE))


def decode(data: bytes, ext: str | None = None) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, ...) and prepare them; raises on a bad image.

    Pillow raises ``PIL.UnidentifiedImageError`` for bytes that are no image and ``OSError``
    for a truncated or corrupt one (Pillow's LOAD_TRUNCATED_IMAGES is left off). With ext
    'jpg'/'jpeg' the JPEG decoder is tried first (skips Pillow's format sniffing, ~20% faster
    on small images; the same decoder, so the same pixels); other bytes behind a .jpg name
    still go through the generic path.
    """
    with open_image(data, ext) as image:
        return prepare(image)


def open_image(data: bytes, ext: str | None = None) -> Image.Image:
    """Open encoded image bytes as ``decode`` does (the JPEG decoder first for 'jpg'/'jpeg'); the
    pixels are read when first used (a corrupt image raises then)."""
    if ext in ("jpg", "jpeg"):
        try:
            return Image.open(io.BytesIO(data), formats=_JPEG)
        except UnidentifiedImageError:
            pass
    return Image.open(io.BytesIO(data))


_JPEG = ["JPEG"]


def hash_pixels(pixels: np.ndarray) -> np.ndarray:
    """pHash of a stack of prepared images, shape (n, 32, 32) uint8 -> (n,) uint64."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 3 or pixels.shape[1:] != (IMG_SIZE, IMG_SIZE):
        raise ValueError(f"expected prepared images of shape (n, {IMG_SIZE}, {IMG_SIZE}), "
                         f"got {pixels.shape}")
    n = len(pixels)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    # The same pocketfft calls as imagehash (uint8 input is converted to float64 by fftpack),
    # vectorised over the batch axis; the second pass only on the 8 rows that are kept.
    dct = scipy.fftpack.dct(pixels, axis=1)[:, :HASH_SIZE, :]
    dct = scipy.fftpack.dct(dct, axis=2)[:, :, :HASH_SIZE]
    low = dct.reshape(n, HASH_SIZE * HASH_SIZE)
    med = np.median(low, axis=1, keepdims=True)
    return bits_to_uint64(low > med)


def bits_to_uint64(bits: np.ndarray) -> np.ndarray:
    """(n, 64) bool, most significant bit first -> (n,) uint64."""
    packed = np.packbits(np.asarray(bits, dtype=bool).reshape(len(bits), 64), axis=1)
    return np.ascontiguousarray(packed).view(">u8").ravel().astype(np.uint64)


def uint64_to_bits(hashes: np.ndarray) -> np.ndarray:
    """(n,) uint64 -> (n, 64) bool, most significant bit first (the 8x8 block, row-major)."""
    hashes = np.ascontiguousarray(np.asarray(hashes, dtype=np.uint64).astype(">u8"))
    return np.unpackbits(hashes.view(np.uint8).reshape(-1, 8), axis=1).astype(bool)


def phash_images(images: Iterable[Image.Image], batch_size: int = 4096) -> np.ndarray:
    """pHash of PIL images, as uint64 (same as imagehash.phash, see the module docstring)."""
    out = []
    buf = np.empty((batch_size, IMG_SIZE, IMG_SIZE), dtype=np.uint8)
    n = 0
    for image in images:
        buf[n] = prepare(image)
        n += 1
        if n == batch_size:
            out.append(hash_pixels(buf))
            n = 0
    out.append(hash_pixels(buf[:n]))
    return np.concatenate(out)


def phash(image: Image.Image) -> int:
    """pHash of one PIL image as a Python int (0 <= h < 2**64)."""
    return int(hash_pixels(prepare(image)[None])[0])


def phash_bytes(data: bytes) -> int:
    """pHash of one encoded image (JPEG, PNG, ... bytes)."""
    return int(hash_pixels(decode(data)[None])[0])


class BatchHasher:
    """Accumulate prepared images, hash them a batch at a time.

    ``add(pixels)`` and ``add_bytes(data)`` queue an image; ``flush()`` returns the hashes of the
    queued images in the order they were added (and empties the queue).
    """

    def __init__(self, batch_size: int = 4096):
        self.batch_size = batch_size
        self._buf = np.empty((batch_size, IMG_SIZE, IMG_SIZE), dtype=np.uint8)
        self._n = 0
        self._done: list[np.ndarray] = []

    def __len__(self) -> int:
        return self._n + sum(len(d) for d in self._done)

    def add(self, pixels: np.ndarray) -> None:
        self._buf[self._n] = pixels
        self._n += 1
        if self._n == self.batch_size:
            self._done.append(hash_pixels(self._buf))
            self._n = 0

    def add_bytes(self, data: bytes, ext: str | None = None) -> None:
        """Decode and queue; raises (and queues nothing) when the bytes are not a good image."""
        self.add(decode(data, ext))

    def flush(self) -> np.ndarray:
        self._done.append(hash_pixels(self._buf[: self._n]))
        self._n = 0
        out = np.concatenate(self._done)
        self._done = []
        return out


# Conversions ------------------------------------------------------------------------------------


def to_hex(h: int | np.integer) -> str:
    """uint64 hash -> 16 hex digits, the same string as ``str(imagehash.phash(img))``."""
    return f"{int(h):016x}"


def from_hex(text: str) -> int:
    """imagehash hex string (16 hex digits) -> int hash."""
    text = text.strip()
    if len(text) != 16:
        raise ValueError(f"not a 64-bit imagehash hex string (16 hex digits): {text!r}")
    try:
        return int(text, 16)
    except ValueError:
        raise ValueError(f"not a 64-bit imagehash hex string (16 hex digits): {text!r}") from None


def to_imagehash(h: int | np.integer):
    """uint64 hash -> ``imagehash.ImageHash`` (8x8 bool array)."""
    import imagehash

    return imagehash.ImageHash(uint64_to_bits(np.array([h], dtype=np.uint64))[0].reshape(8, 8))


def from_imagehash(ih) -> int:
    """``imagehash.ImageHash`` of hash_size 8 -> int hash."""
    bits = np.asarray(ih.hash, dtype=bool)
    if bits.size != 64:
        raise ValueError(f"expected a 64-bit (hash_size 8) ImageHash, got {bits.size} bits")
    return int(bits_to_uint64(bits.reshape(1, 64))[0])


def hamming(a, b) -> np.ndarray:
    """Hamming distance of uint64 hashes (broadcasting), as uint8."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    return np.bitwise_count(x).astype(np.uint8)
