"""Per-sample steps of open_clip's training data path, the same results at a fraction of their
CPU cost: the default training transform (``FastTrainTransform``) and the tokenizer
(``CachedTokenizer``).

open_clip (``open_clip.transform.image_transform(is_train=True)`` without colour jitter, grey
scale or timm) augments each training image with torchvision's ``RandomResizedCrop`` (bicubic),
``convert("RGB")``, ``ToTensor`` and ``Normalize``. On small images most of that time is not
pixels: torchvision draws a crop with up to ten tries of four one-element torch operations each
(about 170 µs a sample on this project's 32-px images), and ``ToTensor`` + ``Normalize`` are
five more tensor operations (about 210 µs). With the data read in the training process (the
embedded default's ``train.workers: 0``) or by a few loader workers feeding a GPU, that is
CPU time every sample pays.

``FastTrainTransform`` does the same: the crop's area and aspect ratio are drawn as torchvision
draws them (uniform area in ``scale``, log-uniform aspect ratio in ``ratio``, ten tries, then
the same central fallback), from one ``torch.rand`` per image, so the draws still come from
torch's generator (which ``clipscale.resume`` reseeds at each batch: a resumed run augments its
batches as the uninterrupted run did); the pixels go through the PIL calls of torchvision's
``resized_crop`` (crop, bicubic resize), and the conversion to a normalized tensor is the very
operations of ``ToTensor`` and ``Normalize`` (to float32, divide by 255, subtract the mean,
divide by the std), which ``normalize_batch`` runs once on a batch's stack
(``clipscale.datapath`` does the pixel work of a batch at a time): for the same crop the tensor
is bit-identical
(tests/test_augment.py). Any other training transform (colour jitter, grey scale, timm's) is
left as open_clip made it.

The tokenizer (open_clip's BPE tokenizer: ftfy, regex, BPE merges and a new tensor per caption,
about 150 µs a caption here) runs again on every caption each time it is drawn, although an
image-text pool repeats captions (the embedded world's 48,000 have 7,679 distinct ones; alt-text
pools repeat "image", file names and product titles). ``CachedTokenizer`` remembers the tokens of
the first ``maxsize`` distinct captions it sees and returns a copy of them.
"""

from __future__ import annotations

import math

TRIES = 10  # torchvision's RandomResizedCrop.get_params


class FastTrainTransform:
    """RandomResizedCrop(size, scale, ratio, bicubic, antialias) -> RGB -> ToTensor ->
    Normalize(mean, std), as a callable on PIL images."""

    def __init__(self, size: tuple[int, int], scale: tuple[float, float], ratio: tuple[float, float],
                 interpolation, antialias, mean, std):
        import numpy as np

        self.size = list(size)
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        self.interpolation = interpolation
        self.antialias = antialias
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self._mean_t = self._std_t = None  # as tensors, made at first use

    def crop_params(self, width: int, height: int, draws: list[float]) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the crop: torchvision's get_params with its random
        numbers given (4 per try: area, aspect ratio, top, left)."""
        area = height * width
        lo, hi = self.log_ratio
        for t in range(TRIES):
            u_area, u_ratio, u_top, u_left = draws[4 * t: 4 * t + 4]
            target_area = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * u_area)
            aspect_ratio = math.exp(lo + (hi - lo) * u_ratio)
            w = round(math.sqrt(target_area * aspect_ratio))
            h = round(math.sqrt(target_area / aspect_ratio))
            if 0 < w <= width and 0 < h <= height:
                # torch.randint(0, n) drawn as floor(u * n): uniform over the n places
                i = min(int(u_top * (height - h + 1)), height - h)
                j = min(int(u_left * (width - w + 1)), width - w)
                return i, j, h, w
        in_ratio = float(width) / float(height)  # torchvision's fallback: a central crop
        if in_ratio < min(self.ratio):
            w = width
            h = round(w / min(self.ratio))
        elif in_ratio > max(self.ratio):
            h = height
            w = round(h * max(self.ratio))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def draw(self, img) -> tuple[int, int, int, int]:
        """The crop (top, left, height, width) for ``img``: 4 x TRIES numbers from torch's
        generator, one ``torch.rand`` call."""
        import torch

        width, height = img.size
        return self.crop_params(width, height, torch.rand(4 * TRIES).tolist())

    def crop_bytes(self, img, params: tuple[int, int, int, int]) -> bytes:
        """The crop resized to ``size``, in RGB: H x W x 3 uint8 pixels as bytes. PIL's own calls,
        as torchvision's ``resized_crop`` makes them for a PIL image (crop, then resize with the
        interpolation unless the crop already has the size; PIL always antialiases)."""
        from PIL import Image

        top, left, height, width = params
        img = img.crop((left, top, left + width, top + height))
        if [height, width] != self.size:
            img = img.resize((self.size[1], self.size[0]), self._pil_interpolation())
        if img.mode != "RGB":
            img = img.convert("RGB")
        return img.tobytes()

    def _pil_interpolation(self):
        from torchvision.transforms.functional import pil_modes_mapping

        return pil_modes_mapping[self.interpolation]

    def normalize_batch(self, crops: list[bytes]):
        """The tensor B x 3 x H x W of a batch of ``crop_bytes``: ``torch.stack`` of each one's
        ``apply``, bit for bit, as one pass of each of torchvision's operations over the batch
        (ToTensor: to float32, divide by 255; Normalize: subtract the mean, divide by the std,
        in place)."""
        import torch

        h, w = self.size
        if getattr(self, "_mean_t", None) is None:
            self._mean_t = torch.as_tensor(self.mean).view(1, 3, 1, 1)
            self._std_t = torch.as_tensor(self.std).view(1, 3, 1, 1)
        pixels = torch.frombuffer(bytearray(b"".join(crops)), dtype=torch.uint8)
        pixels = pixels.view(len(crops), h, w, 3).permute(0, 3, 1, 2).contiguous()
        return pixels.to(torch.float32).div_(255).sub_(self._mean_t).div_(self._std_t)

    def apply(self, img, params: tuple[int, int, int, int]):
        """The transform with a given crop (top, left, height, width): a float32 tensor C x H x W."""
        return self.normalize_batch([self.crop_bytes(img, params)])[0]

    def __call__(self, img):
        return self.apply(img, self.draw(img))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
                f"interpolation={self.interpolation.value}, mean={self.mean.tolist()}, "
                f"std={self.std.tolist()})")


def faster(transform):
    """The FastTrainTransform doing what ``transform`` does when it is open_clip's default
    training Compose (RandomResizedCrop, MaybeConvertMode, MaybeToTensor, Normalize, in that order
    and with RGB), else ``transform`` itself."""
    from open_clip.transform import MaybeConvertMode, MaybeToTensor
    from torchvision.transforms import Compose, Normalize, RandomResizedCrop

    steps = getattr(transform, "transforms", None) if isinstance(transform, Compose) else None
    kinds = (RandomResizedCrop, MaybeConvertMode, MaybeToTensor, Normalize)
    if (steps is None or len(steps) != len(kinds)
            or any(type(s) is not k for s, k in zip(steps, kinds))
            or steps[1].mode != "RGB"):
        return transform
    crop, norm = steps[0], steps[3]
    if not (len(norm.mean) == len(norm.std) == 3):
        return transform
    return FastTrainTransform(crop.size, crop.scale, crop.ratio, crop.interpolation,
                              crop.antialias, norm.mean, norm.std)


class CachedTokenizer:
    """An open_clip tokenizer that remembers the tokens of single captions: ``tok(text)`` is a
    copy of ``tokenizer(text)`` (1 x context_length), computed once for each of the first
    ``maxsize`` distinct captions (later new captions are tokenized every time, so memory stays
    bounded: 32,768 captions of 77 tokens are about 30 MB per data process). Lists, other
    arguments and attributes go to the wrapped tokenizer unchanged."""

    def __init__(self, tokenizer, maxsize: int = 1 << 15):
        self.tokenizer = tokenizer
        self.maxsize = maxsize
        self._tokens: dict[str, object] = {}

    def __call__(self, texts, *args, **kwargs):
        if args or kwargs or not isinstance(texts, str):
            return self.tokenizer(texts, *args, **kwargs)
        tokens = self._tokens.get(texts)
        if tokens is None:
            tokens = self.tokenizer(texts)
            if len(self._tokens) < self.maxsize:
                self._tokens[texts] = tokens
        return tokens.clone()

    def __getattr__(self, name):  # context_length, vocab_size, ... of the wrapped tokenizer
        if name == "tokenizer":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.tokenizer, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.tokenizer!r}, maxsize={self.maxsize})"
