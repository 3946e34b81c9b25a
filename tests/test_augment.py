"""clipscale.augment: open_clip's default training transform and tokenizer, faster, doing the same."""

from __future__ import annotations

import math

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from scipy import stats
from torchvision.transforms import functional as F

from clipscale import augment


def image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


def open_clip_steps(size: int):
    """open_clip's default training Compose and its four steps."""
    transform = open_clip.image_transform(size, is_train=True)
    return transform, transform.transforms


@pytest.mark.parametrize("size", [32, 224])
def test_open_clips_default_training_transform_is_replaced(size):
    transform, (crop, _, _, norm) = open_clip_steps(size)
    fast = augment.faster(transform)
    assert isinstance(fast, augment.FastTrainTransform)
    assert fast.size == [size, size] and fast.scale == crop.scale == (0.9, 1.0)
    assert fast.ratio == pytest.approx(crop.ratio) and fast.interpolation == crop.interpolation
    assert fast.mean.tolist() == pytest.approx(list(norm.mean))


@pytest.mark.filterwarnings("ignore:Unused augmentation cfg items")  # open_clip's, harmless
@pytest.mark.parametrize("train,aug_cfg", [
    (False, None),  # evaluation: resize + centre crop
    (True, {"color_jitter_prob": 0.5, "color_jitter": (0.4, 0.4, 0.4, 0.1)}),
    (True, {"gray_scale_prob": 0.2}),
], ids=["eval", "colour-jitter", "grey-scale"])
def test_other_transforms_are_left_as_open_clip_made_them(train, aug_cfg):
    transform = open_clip.image_transform(32, is_train=train, aug_cfg=aug_cfg)
    assert augment.faster(transform) is transform


@pytest.mark.parametrize("width,height,mode", [(32, 32, "RGB"), (40, 27, "RGB"), (300, 200, "L"),
                                               (33, 64, "RGBA")])
def test_for_a_crop_the_tensor_is_bit_identical_to_torchvisions(width, height, mode):
    transform, (crop, convert, to_tensor, norm) = open_clip_steps(32)
    fast = augment.faster(transform)
    img = image(width, height, mode)
    rng = np.random.default_rng(1)
    for _ in range(20):
        h, w = int(rng.integers(1, height + 1)), int(rng.integers(1, width + 1))
        i, j = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        expected = norm(to_tensor(convert(F.resized_crop(img, i, j, h, w, crop.size, crop.interpolation,
                                                         antialias=crop.antialias))))
        got = fast.apply(img, (i, j, h, w))
        assert got.dtype == expected.dtype == torch.float32 and got.shape == expected.shape == (3, 32, 32)
        assert torch.equal(got, expected)


@pytest.mark.parametrize("width,height", [(32, 32), (640, 480), (100, 400)])
def test_crops_are_drawn_as_torchvision_draws_them(width, height):
    """Same distribution of crop area, aspect ratio, place and central fallback (two-sample KS
    tests on 4,000 draws each, fixed seeds)."""
    transform, (crop, *_) = open_clip_steps(32)
    fast = augment.faster(transform)
    img = image(width, height)
    torch.manual_seed(0)
    ours = [fast.crop_params(width, height, torch.rand(4 * augment.TRIES).tolist()) for _ in range(4000)]
    torch.manual_seed(1)
    theirs = [crop.get_params(img, crop.scale, crop.ratio) for _ in range(4000)]
    ours, theirs = np.array(ours, dtype=float), np.array(theirs, dtype=float)
    for a in (ours, theirs):
        i, j, h, w = a.T
        assert (h >= 1).all() and (w >= 1).all() and (i >= 0).all() and (j >= 0).all()
        assert (i + h <= height).all() and (j + w <= width).all()
    features = {"area": lambda a: a[:, 2] * a[:, 3], "aspect": lambda a: a[:, 3] / a[:, 2],
                "top": lambda a: a[:, 0], "left": lambda a: a[:, 1]}
    for name, f in features.items():
        assert stats.ks_2samp(f(ours), f(theirs)).pvalue > 1e-3, name
    centre = ((height - ours[:, 2]) // 2 == ours[:, 0]) & ((width - ours[:, 3]) // 2 == ours[:, 1])
    centre_theirs = ((height - theirs[:, 2]) // 2 == theirs[:, 0]) & ((width - theirs[:, 3]) // 2 == theirs[:, 1])
    assert abs(centre.mean() - centre_theirs.mean()) < 0.03


def test_the_fallback_is_torchvisions_central_crop():
    transform = augment.faster(open_clip_steps(32)[0])
    never = [1.0, 1.0, 0.0, 0.0] * augment.TRIES  # the largest area at the widest ratio: never fits
    assert transform.crop_params(32, 32, never) == (0, 0, 32, 32)
    assert transform.crop_params(100, 20, never) == (0, 36, 20, 27)  # wider than 4:3: h * 4/3, centred
    assert transform.crop_params(20, 100, never) == (36, 0, 27, 20)
    fits = [0.0, 0.5, 1.0 - 1e-12, 0.0] + never[4:]  # 90% of the area, ratio 1: the first try
    side = int(round(math.sqrt(0.9 * 32 * 32)))
    assert transform.crop_params(32, 32, fits) == (32 - side, 0, side, side)


def test_the_same_torch_seed_gives_the_same_augmentation():
    """The draws come from torch's generator, which clipscale.resume reseeds at every batch (a
    resumed run augments as the uninterrupted one did)."""
    fast = augment.faster(open_clip_steps(32)[0])
    img = image(48, 40)
    torch.manual_seed(3)
    first = [fast(img) for _ in range(5)]
    torch.manual_seed(3)
    again = [fast(img) for _ in range(5)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(first[0], b) for b in first[1:])  # it does augment


class CountingTokenizer:
    """open_clip's tokenizer, counting the captions it tokenizes."""

    def __init__(self, context_length: int = 20):
        self.inner = open_clip.get_tokenizer("ViT-B-32", context_length=context_length)
        self.calls = 0

    def __call__(self, texts, context_length=None):
        self.calls += 1
        return self.inner(texts, context_length)

    @property
    def context_length(self):
        return self.inner.context_length


def test_the_cached_tokenizer_gives_open_clips_tokens_and_tokenizes_a_caption_once():
    counting = CountingTokenizer()
    tok = augment.CachedTokenizer(counting)
    captions = ["a small red triangle", "three rings", "a small red triangle", "IMG_4276.jpg",
                "three rings", "", "naïve café ☕ " * 8]  # the last one longer than the context
    for text in captions:
        got = tok(text)
        assert got.dtype == torch.long and got.shape == (1, 20)
        assert torch.equal(got, counting.inner(text)), text
    assert counting.calls == len(set(captions))
    # what open_clip's pipeline does with it (tokenizer(text)[0]) cannot change the remembered tokens
    tok("three rings")[0].fill_(7)
    assert torch.equal(tok("three rings"), counting.inner("three rings"))
    assert tok.context_length == 20  # attributes are the wrapped tokenizer's


def test_the_cached_tokenizer_passes_lists_and_arguments_through_and_stays_bounded():
    counting = CountingTokenizer()
    tok = augment.CachedTokenizer(counting, maxsize=2)
    batch = ["one ring", "two rings"]
    assert torch.equal(tok(batch), counting.inner(batch))
    assert torch.equal(tok("one ring", context_length=8), counting.inner("one ring", 8))
    assert counting.calls == 2  # neither is remembered
    for text in ["a", "b", "c", "a", "b", "c"]:
        assert torch.equal(tok(text), counting.inner(text))
    assert counting.calls == 2 + 4  # a and b remembered, c (over maxsize) tokenized twice


ODD_CAPTIONS = ["", " ", "\n\t", "A RED Triangle", "a red triangle ", "&amp; caf\u00e9 &lt;3",
                "\u4e09\u4e2a\u5706\u73af", "\U0001f600\U0001f600 smile", "\u00c5ngstr\u00f6m\u0301",
                "word " * 400, "x" * 2000, "IMG_4276.jpg", "a\u200bzero\u00a0width"]


@pytest.mark.parametrize("context_length", [16, 77])  # the embedded models' and open_clip's default
def test_the_cached_tokenizer_gives_open_clips_ids_on_the_worlds_captions(small_world, context_length):
    """Every caption of the small world's pool (repeated, as shards repeat them) and odd inputs:
    the cache's token ids are those of open_clip's SimpleTokenizer, at first sight and from cache."""
    import tarfile

    captions = []
    for shard in sorted((small_world / "pool").glob("*.tar")):
        with tarfile.open(shard) as tar:
            captions += [tar.extractfile(m).read().decode("utf-8") for m in tar.getmembers()
                         if m.name.endswith(".txt")]
    assert len(captions) >= 500 and len(set(captions)) < len(captions)  # the world repeats captions
    reference = open_clip.tokenizer.SimpleTokenizer(context_length=context_length)
    tok = augment.CachedTokenizer(open_clip.tokenizer.SimpleTokenizer(context_length=context_length))
    for text in captions + ODD_CAPTIONS + captions[::-1] + ODD_CAPTIONS:
        got = tok(text)
        want = reference(text)
        assert got.dtype == want.dtype and torch.equal(got, want), text[:80]
    assert len(tok._tokens) == len(set(captions + ODD_CAPTIONS))


# --- clipscale.datapath: open_clip's per-sample pipeline stages, done a batch at a time --------


def _shard_with_faults(small_world, out, every: int = 10) -> None:
    """The small world's first shard with every ``every``-th image corrupt, caption missing and
    json unreadable (at different keys), and one PNG and one grey-scale image: what the stages
    before the batch must skip or convert as upstream does."""
    import io
    import tarfile

    with tarfile.open(small_world / "pool" / "00000.tar") as src, tarfile.open(out, "w") as dst:
        for n, member in enumerate(src.getmembers()):
            key, ext = member.name.split(".", 1)
            data = src.extractfile(member).read()
            k = int(key)
            if ext == "txt" and k % every == 7:
                continue
            if ext == "jpg" and k % every == 3:
                data = b"this is not a JPEG"
            if ext == "json" and k % every == 5:
                data = b"{not json"
            if ext == "jpg" and k in (1, 2):  # a PNG (RGBA) and a grey-scale JPEG
                buf = io.BytesIO()
                img = Image.open(io.BytesIO(data))
                img.convert("RGBA" if k == 1 else "L").save(buf, "PNG" if k == 1 else "JPEG")
                data, ext = buf.getvalue(), ("png" if k == 1 else "jpg")
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))


def _batches_of(shards, transform, tokenizer, fused: bool, batch: int, partial: bool = False):
    """open_clip_train.data.get_wds_dataset's training stages after its shuffle (a seeded one,
    reseeding torch at each batch of the stream as clipscale.resume does), optionally fused, and
    the batches with torch's generator drawn between them (as a training step could)."""
    import random

    import webdataset as wds
    from open_clip_train import data as oct_data

    from clipscale import datapath

    skipped = []

    def handler(exn):
        skipped.append(type(exn).__name__)
        return True

    def reseed(src):
        for n, sample in enumerate(src):
            if n % batch == 0:
                torch.manual_seed(n // batch)
            yield sample

    steps = [wds.SimpleShardList(shards), wds.tarfile_to_samples(),
             wds.shuffle(300, 60, rng=random.Random(0)), reseed,
             wds.select(oct_data.filter_no_caption_or_no_image), wds.decode("pilrgb", handler=handler),
             wds.rename(image="jpg;png;jpeg;webp", text="txt"),
             wds.map_dict(image=transform, text=lambda text: tokenizer(text)[0]),
             wds.to_tuple("image", "text"), wds.batched(batch, partial=partial)]
    loader = wds.WebLoader(wds.DataPipeline(*steps), batch_size=None, shuffle=False, num_workers=0)
    if fused:
        datapath.fuse(loader)
        assert [getattr(s, "f", None) for s in loader.pipeline[0].dataset.pipeline][-1] is datapath.batches
    random.seed(0)  # open_clip's grey scale and colour jitter draw from Python's generator
    out = []
    for b in loader:
        out.append(b)
        torch.rand(7)
    return out, skipped


@pytest.mark.parametrize("fast,partial", [(True, False), (False, True)], ids=["fast-transform", "other-transform"])
def test_the_fused_pipeline_gives_open_clips_batches_bit_for_bit(small_world, tmp_path, fast, partial):
    """The same batches (images' float32 values, token ids, order), the same samples skipped for
    the same reasons, with open_clip's default transform (FastTrainTransform, its pixel work done
    per batch) and with any other transform (run per sample as upstream)."""
    shard = tmp_path / "faulty.tar"
    _shard_with_faults(small_world, shard)
    if fast:
        transform = augment.faster(open_clip.image_transform(32, is_train=True))
        assert isinstance(transform, augment.FastTrainTransform)
    else:
        transform = open_clip.image_transform(32, is_train=True, aug_cfg={"gray_scale_prob": 0.5})
    tokenizer = augment.CachedTokenizer(open_clip.tokenizer.SimpleTokenizer(context_length=16))
    shards = [str(shard)] + sorted(str(p) for p in (small_world / "pool").glob("*.tar"))[1:2]
    want, want_skipped = _batches_of(shards, transform, tokenizer, False, 32, partial)
    got, got_skipped = _batches_of(shards, transform, tokenizer, True, 32, partial)
    assert len(got) == len(want) >= 3
    assert got_skipped == want_skipped and set(want_skipped) == {"UnidentifiedImageError", "JSONDecodeError"}
    for (gi, gt), (wi, wt) in zip(got, want):
        assert gi.dtype == wi.dtype == torch.float32 and gi.shape == wi.shape and gi.is_contiguous()
        assert torch.equal(gi, wi) and gt.dtype == wt.dtype and torch.equal(gt, wt)
    assert partial == (len(want[-1][0]) < 32)


def test_the_batch_normalisation_is_the_per_sample_one_bit_for_bit():
    fast = augment.faster(open_clip.image_transform(32, is_train=True))
    imgs = [image(40 + k, 30 + 2 * k, seed=k) for k in range(16)]
    torch.manual_seed(0)
    params = [fast.draw(im) for im in imgs]
    batch = fast.normalize_batch([fast.crop_bytes(im, p) for im, p in zip(imgs, params)])
    assert torch.equal(batch, torch.stack([fast.apply(im, p) for im, p in zip(imgs, params)]))


def test_the_fused_pipeline_refuses_a_pipeline_it_does_not_know():
    import webdataset as wds

    from clipscale import datapath

    steps = [wds.SimpleShardList(["x.tar"]), wds.tarfile_to_samples(), wds.decode("pil"),
             wds.to_tuple("jpg", "txt"), wds.batched(4)]
    loader = wds.WebLoader(wds.DataPipeline(*steps), batch_size=None, num_workers=0)
    with pytest.raises(datapath.DataPathError, match="open_clip changed"):
        datapath.fuse(loader)


def _odd_tars(small_world, folder):
    """Archives the fast reader must read as tarfile does, or leave to it: pax headers (a long
    and a non-ASCII name), gzip, a directory and webdataset meta files, a bad checksum in the
    middle, truncated data, an empty file, a GNU-format archive."""
    import gzip
    import io
    import tarfile

    with tarfile.open(small_world / "pool" / "00000.tar") as src:
        members = [(m.name, src.extractfile(m).read()) for m in src.getmembers()[:30]]

    def write(path, fmt=tarfile.USTAR_FORMAT, extra=(), dirs=False):
        with tarfile.open(path, "w", format=fmt) as dst:
            if dirs:
                dst.addfile(_dir("sub"))
            for name, data in list(members) + list(extra):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                dst.addfile(info, io.BytesIO(data))
        return path

    def _dir(name):
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        return info

    out = {"plain": write(folder / "plain.tar"),
           "gnu": write(folder / "gnu.tar", tarfile.GNU_FORMAT),
           "pax": write(folder / "pax.tar", tarfile.PAX_FORMAT,
                        [("x" * 120 + ".txt", b"long"), ("caf\u00e9.txt", b"accent")]),
           "meta": write(folder / "meta.tar", extra=[("__meta__.json", b"{}"), ("a/__x__/y.txt", b"z")],
                         dirs=True)}
    plain = out["plain"].read_bytes()
    (folder / "plain.tar.gz").write_bytes(gzip.compress(plain))
    out["gz"] = folder / "plain.tar.gz"
    bad = bytearray(plain)
    bad[512 * 12 + 10] ^= 0x55  # a byte of a later header's name: its checksum no longer matches
    (folder / "badsum.tar").write_bytes(bytes(bad))
    out["badsum"] = folder / "badsum.tar"
    (folder / "truncated.tar").write_bytes(plain[:512 * 20 + 100])
    out["truncated"] = folder / "truncated.tar"
    (folder / "empty.tar").write_bytes(b"")
    out["empty"] = folder / "empty.tar"
    return out


def test_the_fast_tar_reader_gives_webdatasets_samples_and_errors(small_world, tmp_path):
    """open_clip_train's tarfile_to_samples_nothrow with clipscale.datapath's tar_file_expander:
    the same samples (keys, bytes, urls) and the same errors handed to the handler, archive by
    archive and all in one stream."""
    import webdataset.tariterators as wt
    from open_clip_train import data as oct_data

    from clipscale import datapath

    tars = _odd_tars(small_world, tmp_path)
    tars["world"] = small_world / "pool" / "00001.tar"

    def read(urls, fast):
        errors = []

        def handler(exn):
            errors.append((type(exn).__name__, str(exn.args[0])[:60] if exn.args else ""))
            return True

        original = oct_data.tar_file_expander
        oct_data.tar_file_expander = datapath.tar_file_expander if fast else wt.tar_file_expander
        try:
            samples = list(oct_data.tarfile_to_samples_nothrow([{"url": str(u)} for u in urls], handler=handler))
        finally:
            oct_data.tar_file_expander = original
        return samples, errors

    for name, path in [*tars.items(), ("all", list(tars.values()))]:
        urls = path if isinstance(path, list) else [path]
        want, want_errors = read(urls, False)
        got, got_errors = read(urls, True)
        assert got == want and got_errors == want_errors, name
        if name in ("plain", "world", "gnu"):
            assert len(want) >= 10 and not want_errors
    assert read([tars["empty"]], False)[1]  # ReadError('empty file'): errors were compared
    assert 0 < len(read([tars["truncated"]], False)[0]) < len(read([tars["plain"]], False)[0])
    assert len(read([tars["badsum"]], False)[0]) < len(read([tars["plain"]], False)[0])


def test_the_fast_tar_reader_is_installed_where_open_clip_reads():
    from open_clip_train import data as oct_data

    from clipscale import datapath

    original = oct_data.tar_file_expander
    try:
        datapath.install_tar_reader()
        assert oct_data.tar_file_expander is datapath.tar_file_expander
        datapath.install_tar_reader()  # twice: the same
    finally:
        oct_data.tar_file_expander = original


def test_plain_shards_are_read_without_tarfile(small_world, monkeypatch):
    from open_clip_train import data as oct_data

    from clipscale import datapath

    def no_tarfile():
        raise AssertionError("left to tarfile")

    want = list(oct_data.tarfile_to_samples_nothrow([{"url": str(small_world / "pool" / "00000.tar")}]))
    monkeypatch.setattr(datapath, "_upstream_expander", no_tarfile)
    monkeypatch.setattr(oct_data, "tar_file_expander", datapath.tar_file_expander)
    got = list(oct_data.tarfile_to_samples_nothrow([{"url": str(small_world / "pool" / "00000.tar")}]))
    assert got == want and len(got) >= 100
