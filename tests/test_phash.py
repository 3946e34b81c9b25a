"""The batched pHash is bit-identical to imagehash.phash, on real images and on odd inputs."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
import scipy.fftpack
from PIL import Image

from clipscale import phash as P

SKIMAGE_NAMES = [
    "astronaut", "camera", "chelsea", "coffee", "coins", "moon", "rocket", "immunohistochemistry",
    "page", "text", "clock", "logo", "checkerboard", "cat", "grass", "gravel", "brick",
    "colorwheel", "microaneurysms", "horse", "binary_blobs",
]


def _skimage_images():
    import skimage.data

    out = {}
    for name in SKIMAGE_NAMES:
        array = getattr(skimage.data, name)()
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        out[name] = Image.fromarray(array)
    return out


@pytest.fixture(scope="module")
def real_images() -> list[Image.Image]:
    from sklearn.datasets import load_digits, load_sample_images

    images = list(_skimage_images().values())
    images += [Image.fromarray(a) for a in load_sample_images().images]
    # 1797 8x8 digits: tiny images with many equal pixels (ties at the median are likely)
    images += [Image.fromarray((a * 16).clip(0, 255).astype(np.uint8)) for a in load_digits().images]
    return images


def reference(image: Image.Image) -> int:
    return int(str(imagehash.phash(image)), 16)


def test_batched_equals_imagehash_on_real_images(real_images):
    ours = P.phash_images(real_images, batch_size=500)  # several batches, a partial last one
    ref = np.array([reference(im) for im in real_images], dtype=np.uint64)
    assert ours.dtype == np.uint64 and ours.shape == (len(real_images),)
    mismatched = np.nonzero(ours != ref)[0]
    assert mismatched.size == 0, f"{mismatched.size} of {len(ref)} differ, e.g. index {mismatched[:5]}"
    # the hashes are informative: the real images do not collapse onto a few values
    assert len(np.unique(ours[:30])) >= 25


def test_hex_string_is_imagehash_str(real_images):
    for image in real_images[:40]:
        h = P.phash(image)
        text = str(imagehash.phash(image))
        assert P.to_hex(h) == text
        assert P.from_hex(text) == h
        assert P.from_imagehash(imagehash.phash(image)) == h
        assert P.to_imagehash(h) == imagehash.phash(image)
        assert imagehash.hex_to_hash(P.to_hex(h)) == imagehash.phash(image)


def test_bit_order_is_row_major_msb_first():
    bits = np.zeros((1, 64), dtype=bool)
    bits[0, 0] = True  # coefficient (0, 0)
    assert P.bits_to_uint64(bits)[0] == np.uint64(1) << np.uint64(63)
    bits[0, 0], bits[0, 63] = False, True  # coefficient (7, 7)
    assert P.bits_to_uint64(bits)[0] == 1
    h = np.array([0x8000000000000001, 0x0123456789ABCDEF], dtype=np.uint64)
    assert (P.bits_to_uint64(P.uint64_to_bits(h)) == h).all()
    ih = P.to_imagehash(0x8000000000000001)
    assert ih.hash[0, 0] and ih.hash[7, 7] and ih.hash.sum() == 2


def test_from_hex_rejects_bad_strings():
    for bad in ["", "abc", "0123456789abcdeg", "0" * 17]:
        with pytest.raises(ValueError, match="16 hex digits"):
            P.from_hex(bad)


def _mode_images() -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    import skimage.data

    base = Image.fromarray(skimage.data.chelsea())
    grad = np.add.outer(np.arange(40), np.arange(70))
    rgba = np.asarray(base.convert("RGBA")).copy()
    rgba[..., 3] = rng.integers(0, 256, rgba.shape[:2])
    return {
        "L": base.convert("L"),
        "RGBA": Image.fromarray(rgba, "RGBA"),
        "P": base.quantize(colors=17),
        "P-transparency": Image.open(_png_bytes(base.quantize(colors=5), transparency=2)),
        "CMYK": base.convert("CMYK"),
        "1": base.convert("1"),
        "LA": base.convert("LA"),
        "I;16": Image.fromarray((grad * 900).astype(np.uint16)),  # values up to ~97000 wrap
        "I;16-full": Image.fromarray(rng.integers(0, 65536, (33, 47)).astype(np.uint16)),
        "I": Image.fromarray((grad * 3 - 60).astype(np.int32), "I"),  # negative and > 255
        "F": Image.fromarray((np.sin(grad / 7.0) * 300).astype(np.float32), "F"),
        "YCbCr": base.convert("YCbCr"),
        "HSV": base.convert("HSV"),
    }


def _png_bytes(image: Image.Image, **kw) -> io.BytesIO:
    buf = io.BytesIO()
    image.save(buf, "PNG", **kw)
    buf.seek(0)
    return buf


MODES = ["L", "RGBA", "P", "P-transparency", "CMYK", "1", "LA", "I;16", "I;16-full", "I", "F",
         "YCbCr", "HSV"]


@pytest.fixture(scope="module")
def mode_images():
    images = _mode_images()
    assert sorted(images) == sorted(MODES)
    return images


@pytest.mark.parametrize("mode", MODES)
def test_modes_equal_imagehash(mode, mode_images):
    image = mode_images[mode]
    assert P.phash(image) == reference(image)
    assert P.phash_images([image, image])[1] == reference(image)


@pytest.mark.parametrize(
    "size,value",
    [((1, 1), 0), ((1, 1), 200), ((2, 3), 17), ((32, 32), 255), ((5, 900), 1), ((700, 1), 128)],
)
def test_constant_and_tiny_images(size, value):
    for mode in ("L", "RGB", "I;16", "F"):
        color = (value, value // 2, 3) if mode == "RGB" else value
        image = Image.new(mode, size, color)
        assert P.phash(image) == reference(image), (mode, size, value)


def test_tiny_random_images():
    rng = np.random.default_rng(1)
    images = []
    for _ in range(200):
        h, w = rng.integers(1, 12, size=2)
        images.append(Image.fromarray(rng.integers(0, 256, (h, w, 3)).astype(np.uint8)))
    ours = P.phash_images(images)
    assert [int(h) for h in ours] == [reference(im) for im in images]


def test_decode_jpeg_and_png_bytes_equals_imagehash(real_images):
    for image in real_images[:12]:
        for fmt in ("JPEG", "PNG"):
            buf = io.BytesIO()
            (image.convert("RGB") if fmt == "JPEG" else image).save(buf, fmt)
            data = buf.getvalue()
            assert P.phash_bytes(data) == reference(Image.open(io.BytesIO(data)))


def test_batch_hasher_keeps_order(real_images):
    hasher = P.BatchHasher(batch_size=7)
    for image in real_images[:30]:
        hasher.add(P.prepare(image))
    assert len(hasher) == 30
    out = hasher.flush()
    assert list(out) == [reference(im) for im in real_images[:30]]
    assert len(hasher.flush()) == 0 and len(hasher) == 0


def test_decode_errors_are_raised():
    with pytest.raises(Image.UnidentifiedImageError):
        P.decode(b"this is a caption, not an image")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3)).astype(np.uint8)).save(
        buf, "JPEG"
    )
    with pytest.raises(OSError):
        P.decode(buf.getvalue()[: len(buf.getvalue()) // 2])  # truncated JPEG


def test_hash_pixels_shape_is_checked():
    with pytest.raises(ValueError, match="32, 32"):
        P.hash_pixels(np.zeros((3, 16, 16), dtype=np.uint8))
    assert P.hash_pixels(np.zeros((0, 32, 32), dtype=np.uint8)).shape == (0,)


def test_hamming():
    a = np.array([0, 0xFF, 2**64 - 1], dtype=np.uint64)
    assert list(P.hamming(a, np.uint64(0))) == [0, 8, 64]
    assert P.hamming(np.uint64(5), np.uint64(6)) == 2


def test_matmul_dct_is_not_a_substitute():
    """Why the batch goes through scipy.fftpack: a DCT as a matrix product rounds differently,
    and on images whose coefficients tie with the median (constant images, a checkerboard) the
    bits flip. This documents the design choice; it fails if the two ever agree on all images."""
    import skimage.data

    images = [Image.fromarray(skimage.data.checkerboard())]
    images += [Image.new("L", (5, 5), c) for c in (0, 7, 255)] + [Image.new("RGB", (1, 1), (3, 200, 9))]
    pixels = np.stack([P.prepare(im) for im in images]).astype(np.float64)
    n = np.arange(32)
    basis = 2 * np.cos(np.pi * n[:8, None] * (2 * n[None, :] + 1) / 64)  # DCT-II, fftpack scale
    low = (basis @ pixels @ basis.T).reshape(len(images), 64)
    matmul = P.bits_to_uint64(low > np.median(low, axis=1, keepdims=True))
    ref = np.array([reference(im) for im in images], dtype=np.uint64)
    assert (P.hash_pixels(pixels.astype(np.uint8)) == ref).all()
    # the matrix product is numerically close to fftpack ...
    exact = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=1), axis=2)[:, :8, :8]
    assert np.allclose(low.reshape(-1, 8, 8), exact, atol=1e-9 * np.abs(exact).max())
    # ... and still gives other hashes
    assert (matmul != ref).any()


def test_images_with_exact_ties_at_the_median():
    """Mirror-symmetric and periodic images: half or more of the 64 coefficients are zero in exact
    arithmetic, so the median sits among them and every bit depends on how the DCT rounds. A DCT
    as a matrix product gets most of these wrong; ours must match imagehash on all of them."""
    rng = np.random.default_rng(0)
    images = []
    for i in range(150):
        half = rng.integers(0, 256, (32, 16)).astype(np.uint8)
        a = np.concatenate([half, half[:, ::-1]], axis=1)
        if i % 3 == 1:
            a = np.concatenate([a[:16], a[:16][::-1]], axis=0)
        if i % 3 == 2:
            a = np.tile(rng.integers(0, 256, (4, 4)).astype(np.uint8), (8, 8))
        images.append(Image.fromarray(a))
    ref = np.array([reference(im) for im in images], dtype=np.uint64)
    assert (P.phash_images(images) == ref).all()
    pixels = np.stack([P.prepare(im) for im in images]).astype(np.float64)
    n = np.arange(32)
    basis = 2 * np.cos(np.pi * n[:8, None] * (2 * n[None, :] + 1) / 64)
    low = (basis @ pixels @ basis.T).reshape(len(images), 64)
    matmul = P.bits_to_uint64(low > np.median(low, axis=1, keepdims=True))
    assert (matmul != ref).mean() > 0.5
