"""Evaluation speed per image on this CPU: the numbers clipscale.resources sizes evaluation jobs by.

    .venv/bin/python benchmarks/bench_eval_rate.py            # 256 images per measure (~2 min on 2 cores)
    .venv/bin/python benchmarks/bench_eval_rate.py --quick    # 64 images

1. Decode + preprocess, one process: a JPEG's bytes -> Pillow decode -> the model's evaluation
   transform (open_clip's: resize, centre crop, normalize) -> a 3x224x224 tensor, as each
   data-loading worker of an evaluation does. Two kinds: 500x375 photographs (ImageNet-like,
   the paper's sets) and 32x32 images (the embedded world). Seconds per image.
2. Image-tower compute, fp32, torch.no_grad, batches of 32: ViT-B-32 (4.4 GMAC per image,
   counted by torch's FLOP counter) on 1 thread and on every core; GMAC/s = images x GMAC per
   image / seconds. And the embedded world's vit-s (32 px), where the time per image is
   overhead, not arithmetic.

Prints one line per measure and a summary of the constants clipscale.resources uses
(CPU_GMAC_PER_S_PER_THREAD, DECODE_S_PER_IMAGE).
"""

from __future__ import annotations

import argparse
import io
import os
import time

import numpy as np
import torch
from PIL import Image


def _jpegs(n: int, size: tuple[int, int]) -> list[bytes]:
    import skimage.data

    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        a = photos[i % len(photos)]
        y, x = rng.integers(0, a.shape[0] // 4), rng.integers(0, a.shape[1] // 4)
        img = Image.fromarray(a[y:, x:, :3]).resize(size, Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def decode_rate(n: int, size: tuple[int, int], image_size: int) -> float:
    """Seconds per image: decode + the evaluation transform, one process."""
    import open_clip

    transform = open_clip.image_transform(image_size, is_train=False)
    data = _jpegs(n, size)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    for b in data:
        transform(Image.open(io.BytesIO(b)).convert("RGB"))
    return (time.perf_counter() - t0) / n


def image_gmac(model) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    size = model.visual.image_size
    size = size if isinstance(size, (list, tuple)) else (size, size)
    model.train()  # the counter misses MultiheadAttention's fused eval path (see clipscale.models)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.encode_image(torch.zeros(1, 3, *size))
    model.eval()
    return counter.get_total_flops() / 2 / 1e9


def encode_rate(model, n: int, threads: int, batch: int = 32) -> float:
    """Images per second through encode_image (fp32, no_grad), after one warm-up batch."""
    size = model.visual.image_size
    size = size if isinstance(size, (list, tuple)) else (size, size)
    torch.set_num_threads(threads)
    x = torch.randn(batch, 3, *size)
    with torch.no_grad():
        model.encode_image(x)
        t0 = time.perf_counter()
        for _ in range(max(1, n // batch)):
            model.encode_image(x)
    return max(1, n // batch) * batch / (time.perf_counter() - t0)


def main() -> None:
    import open_clip
    import yaml

    from clipscale import models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 64 if args.quick else 256
    cores = os.cpu_count() or 1
    print(f"host: {cores} cores, torch {torch.__version__}, {n} images per measure")

    photo = decode_rate(n, (500, 375), 224)
    tiny = decode_rate(n, (32, 32), 32)
    print(f"decode + transform, 500x375 JPEG -> 224: {photo * 1e3:.2f} ms/image ({1 / photo:.0f} images/s per process)")
    print(f"decode + transform, 32x32 JPEG -> 32:    {tiny * 1e3:.2f} ms/image ({1 / tiny:.0f} images/s per process)")

    vit_b = open_clip.create_model("ViT-B-32", pretrained=None, device="cpu").eval()
    g_b = image_gmac(vit_b)
    rates = {}
    for threads in sorted({1, cores}):
        ips = encode_rate(vit_b, n, threads)
        rates[threads] = ips * g_b
        print(f"ViT-B-32 image tower ({g_b:.2f} GMAC/image), {threads} thread(s): {ips:.1f} images/s, "
              f"{ips * g_b:.1f} GMAC/s ({ips * g_b / threads:.1f} per thread)")

    cfg = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "..", "config", "config.yaml")))
    models.register(cfg)
    vit_s = open_clip.create_model("vit-s", pretrained=None, device="cpu").eval()
    g_s = image_gmac(vit_s)
    ips = encode_rate(vit_s, n * 8, 1, batch=256)
    print(f"vit-s image tower ({g_s * 1e3:.2f} MMAC/image), 1 thread, batch 256: {ips:.0f} images/s "
          f"({1e3 / ips:.3f} ms/image, {ips * g_s:.2f} GMAC/s: overhead-bound)")
    print(f"summary: CPU_GMAC_PER_S_PER_THREAD ~ {rates[1]:.0f} (1 thread); "
          f"DECODE_S_PER_IMAGE ~ {photo:.4f} (photos), {tiny:.5f} (32 px)")


if __name__ == "__main__":
    main()
