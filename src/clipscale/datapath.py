"""open_clip_train's webdataset training pipeline with its per-sample stages done a batch at a time.

open_clip_train (``data.get_wds_dataset``) ends its training pipeline with six webdataset stages
that each handle one sample and pass it on: ``select`` (drop samples without a caption or an
image), ``decode("pilrgb")`` (webdataset's generic decoder: every member of the sample through a
list of handlers), ``rename``, ``map_dict`` (the image transform and the tokenizer), ``to_tuple``
and ``batched`` (``torch.stack`` of the samples). On this project's 32-px images that costs about
as much in switching from one kind of work to the next, sample after sample, and in the generic
decoder's Python, as in the work itself (benchmarks/README.md, "How far from the limit").

``fuse`` replaces those six stages by one, ``batches``, that gives the same batches:

* per sample, as upstream and in the same order: the select predicate, the decode (the image
  member that ``rename`` would pick, opened by PIL as webdataset's ``pilrgb`` handler opens it,
  and the caption as UTF-8; any other member still goes through webdataset's decoder, whose
  result ``to_tuple`` drops, so that a sample with an unreadable member is skipped as before), the
  decode's error handler (install_skip_counting's counting one when installed), and the image
  transform's random draws: with ``clipscale.augment.FastTrainTransform``, only the crop's draw
  (``torch.rand``) here; any other transform whole here;
* per batch, when it is complete (when the first sample of the next one was drawn, as webdataset's
  ``batched`` does, so that torch's generator, which ``clipscale.resume`` reseeds every batch,
  is drawn in the same order as upstream): the crops' pixels (PIL), the captions' tokens, and
  ToTensor + Normalize as one numpy expression on the batch's uint8 stack.

For a seed the batches are bit-identical to upstream's (tests/test_augment.py): same samples,
same crops, same float32 values, same token ids.

Before the shuffle, open_clip reads the shards with webdataset's ``tar_file_expander`` (Python's
tarfile in stream mode: about 25 µs of Python per member, three members a sample here).
``install_tar_reader`` gives it ``tar_file_expander`` of this module: plain ustar/GNU archives in
a local file are parsed here (each header checked as tarfile checks it), yielding the same file
dicts; an archive with anything else (pax or long-name headers, compression, links, a bad
checksum, truncation) is read by webdataset's own from the start, skipping what was already
yielded, so its samples and its errors are upstream's.
"""

from __future__ import annotations

import io

IMAGE_KEYS = ("jpg", "png", "jpeg", "webp")  # open_clip's rename(image="jpg;png;jpeg;webp")


class DataPathError(RuntimeError):
    """open_clip_train's pipeline is not the one ``fuse`` knows."""


def decode_image(data: bytes):
    """webdataset's ``pilrgb`` image handler: the same PIL calls, the same pixels (its second
    ``convert("RGB")`` of an RGB image is a copy, left out)."""
    import PIL.Image

    with io.BytesIO(data) as stream:
        img = PIL.Image.open(stream)
        img.load()
        if img.mode != "RGB":
            img = img.convert("RGB")
    return img


def decode_sample(sample: dict, decoder) -> tuple:
    """(image, caption) of a selected sample as decode("pilrgb") + rename(image=..., text="txt")
    give them: the first of IMAGE_KEYS by ``decode_image``, the caption as UTF-8, and every other
    member (not ``__``-prefixed) through webdataset's ``decoder`` as upstream does, in the
    sample's order (so that the first error raised is upstream's), its result dropped."""
    image_key = next(k for k in IMAGE_KEYS if k in sample)
    for key, value in sample.items():
        if key == image_key:
            img = decode_image(value)
        elif key == "txt":
            text = value.decode("utf-8")
        elif key[:2] != "__":
            decoder.decode1(key, value)
    return img, text


def batches(data, select, handler, decoder, transform, text_fn, batchsize: int, partial: bool,
            collation_fn):
    """The stages select, decode("pilrgb", handler), rename(image="jpg;png;jpeg;webp",
    text="txt"), map_dict(image=transform, text=text_fn), to_tuple("image", "text") and
    batched(batchsize, collation_fn, partial) of webdataset, as one stage (see the module)."""
    import webdataset.filters as wf

    from clipscale.augment import FastTrainTransform

    fast = transform if isinstance(transform, FastTrainTransform) and collation_fn is wf.default_collation_fn \
        else None
    batch: list[tuple] = []

    def finish(batch):
        texts = [text_fn(text) for _, text in batch]
        if fast is None:
            return collation_fn([(image, text) for (image, _), text in zip(batch, texts)])
        images = fast.normalize_batch([fast.crop_bytes(img, params) for (img, params), _ in batch])
        return [images, collation_fn([(text,) for text in texts])[0]]  # torch.stack of token tensors

    for sample in data:
        if not select(sample):
            continue
        try:
            img, text = decode_sample(sample, decoder)
        except Exception as exn:  # as webdataset's _decode
            if handler(exn):
                continue
            break
        item = ((img, fast.draw(img)) if fast is not None else transform(img), text)
        if len(batch) >= batchsize:
            yield finish(batch)
            batch = []
        batch.append(item)
    if batch and (len(batch) == batchsize or partial):
        yield finish(batch)


def _tail(steps: list) -> tuple[int, dict]:
    """Where open_clip's six per-sample stages start in ``steps``, and their arguments."""
    import webdataset.filters as wf

    kinds = (wf._select, wf._decode, wf._rename, wf._map_dict, wf._to_tuple, wf._batched)
    for start in range(len(steps) - len(kinds) + 1):
        window = steps[start:start + len(kinds)]
        if all(getattr(s, "f", None) is k for s, k in zip(window, kinds)):
            break
    else:
        raise DataPathError("open_clip_train's pipeline has no select, decode, rename, map_dict, "
                            "to_tuple, batched stages: open_clip changed; update clipscale.datapath")
    select, decode, rename, map_dict, to_tuple, batched = window
    expected = (len(select.args) == 1 and not select.kw
                and decode.args == ("pilrgb",) and set(decode.kw) <= {"handler"}
                and rename.kw == {"image": ";".join(IMAGE_KEYS), "text": "txt"} and not rename.args
                and set(map_dict.kw) == {"image", "text"} and not map_dict.args
                and to_tuple.args == ("image", "text") and not to_tuple.kw
                and len(batched.args) == 1 and set(batched.kw) <= {"partial", "collation_fn"})
    if not expected:
        raise DataPathError(f"open_clip_train's pipeline stages changed ({window}): update "
                            f"clipscale.datapath")
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(wf._batched).parameters.items()}
    return start, {
        "select": select.args[0],
        "handler": decode.kw.get("handler", wf.reraise_exception),
        "transform": map_dict.kw["image"], "text_fn": map_dict.kw["text"],
        "batchsize": batched.args[0],
        "partial": batched.kw.get("partial", defaults["partial"]),
        "collation_fn": batched.kw.get("collation_fn", defaults["collation_fn"]),
    }


def fuse(loader) -> None:
    """Replace the six per-sample stages of open_clip's pipeline behind ``loader`` (the
    WebLoader of ``get_wds_dataset``, before its first iteration) by ``batches``; raises
    DataPathError if the pipeline is not the one this module knows."""
    import webdataset.autodecode as wa
    import webdataset.filters as wf

    inner = getattr(loader, "pipeline", [None])[0]
    dataset = getattr(inner, "dataset", None)
    steps = getattr(dataset, "pipeline", None)
    if not isinstance(steps, list):
        raise DataPathError(f"{type(loader).__name__} does not hold open_clip's DataPipeline: "
                            f"open_clip or webdataset changed; update clipscale.datapath")
    if any(getattr(s, "f", None) is batches for s in steps):
        return
    start, kw = _tail(steps)
    decoder = wa.Decoder([wa.imagehandler("pilrgb")])  # as webdataset's _decode builds it
    steps[start:start + 6] = [wf.FilterFunction(batches, decoder=decoder, **kw)]


# --- reading the shards --------------------------------------------------------------------

BLOCK = 512
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x28\xb5\x2f\xfd")  # gz, bz2, xz, zstd: tarfile's "r|*"


class _NotPlain(Exception):
    """A header the plain reader leaves to tarfile."""


def _plain_members(stream):
    """(name, bytes) of the regular files of an uncompressed tar archive, as tarfile's stream
    mode reads them, for archives of plain ustar/GNU headers (what webdataset's and Python's
    writers make of short ASCII names); raises _NotPlain at anything else (pax or GNU long-name
    headers, links, a bad checksum, truncation, an empty file), so that tarfile reads it."""
    import tarfile

    read = stream.read
    offset = 0
    while True:
        header = read(BLOCK)
        if not header and offset:
            return  # tarfile: an empty header after the first ends the archive
        if len(header) < BLOCK:
            raise _NotPlain("truncated header")
        if header.count(0) == BLOCK:
            if not offset:
                raise _NotPlain("empty archive")
            return  # the end-of-archive zero block
        if offset == 0 and header.startswith(_COMPRESSED):
            raise _NotPlain("compressed")
        kind = header[156:157]
        size_field = header[124:136]
        if kind not in (b"0", b"\x00") or header[345:500].count(0) != 155 or size_field[0] & 0x80:
            raise _NotPlain(f"header type {kind!r}")
        stored = int(header[148:156].split(b"\x00", 1)[0].strip() or b"-1", 8)
        if stored != sum(header) - sum(header[148:156]) + 256:  # chksum field counted as 8 spaces
            raise _NotPlain("checksum")
        name = header[:100].split(b"\x00", 1)[0].decode(tarfile.ENCODING, "surrogateescape")
        size = int(size_field.split(b"\x00", 1)[0].strip() or b"0", 8)
        if name.endswith("/"):
            raise _NotPlain("directory")
        data = read(size)
        padding = -size % BLOCK
        if len(data) < size or (padding and len(read(padding)) < padding):
            raise _NotPlain("truncated data")
        offset += BLOCK + size + padding
        yield name, data


def _upstream_expander():
    import webdataset.tariterators as wt

    return wt.tar_file_expander


def tar_file_expander(data, handler=None, select_files=None, rename_files=None):
    """webdataset's tar_file_expander (open_clip_train's tarfile_to_samples_nothrow reads the
    shards with it), yielding the same file dicts (fname, data, __url__) and handling errors the
    same way: plain archives in a seekable stream (a local shard) are parsed here, a dozen times
    faster than by tarfile; anything else, and any archive where the plain reader meets a header it
    leaves to tarfile, is read by webdataset's own (from the start, skipping what was yielded)."""
    import re

    import webdataset.tariterators as wt
    from webdataset.handlers import reraise_exception

    handler = handler or reraise_exception
    if select_files is not None or rename_files is not None:
        yield from _upstream_expander()(data, handler=handler, select_files=select_files, rename_files=rename_files)
        return
    meta = re.compile(r"__[^/]*__($|/)")  # tar_file_iterator's skip_meta
    for source in data:
        stream = source.get("stream") if isinstance(source, dict) else None
        seekable = getattr(stream, "seekable", None)
        if stream is None or seekable is None or not seekable() or stream.tell() != 0:
            yield from _upstream_expander()([source], handler=handler)
            continue
        url, done = source["url"], 0
        try:
            for name, value in _plain_members(stream):
                if ("/" not in name and name.startswith(wt.meta_prefix) and name.endswith(wt.meta_suffix)) \
                        or meta.match(name):
                    continue
                done += 1
                yield {"fname": name, "data": value, "__url__": url}
        except Exception:  # _NotPlain, or an error that tarfile shall meet and report itself
            stream.seek(0)
            for n, sample in enumerate(_upstream_expander()([source], handler=handler)):
                if n >= done:
                    yield sample


def install_tar_reader() -> None:
    """Make open_clip_train's tarfile_to_samples_nothrow read shards with ``tar_file_expander``
    (it looks the name up in open_clip_train.data at each call); raises DataPathError if upstream
    no longer reads them through that name."""
    import open_clip_train.data as oct_data

    reader = getattr(oct_data, "_clipscale_originals", {}).get("tarfile_to_samples_nothrow") \
        or getattr(oct_data, "tarfile_to_samples_nothrow", None)
    if reader is None or "tar_file_expander" not in reader.__code__.co_names \
            or getattr(oct_data, "tar_file_expander", None) is None:
        raise DataPathError("open_clip_train.data.tarfile_to_samples_nothrow no longer reads with "
                            "tar_file_expander: open_clip changed; update clipscale.datapath")
    import webdataset.tariterators as wt

    if oct_data.tar_file_expander not in (wt.tar_file_expander, tar_file_expander):
        raise DataPathError("open_clip_train.data.tar_file_expander is not webdataset's: update clipscale.datapath")
    oct_data.tar_file_expander = tar_file_expander
