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


def batches(data, select, handler, decoder, transform, text_fn, batchsize: int, partial: bool,
            collation_fn):
    """The stages select, decode("pilrgb", handler), rename(image="jpg;png;jpeg;webp",
    text="txt"), map_dict(image=transform, text=text_fn), to_tuple("image", "text") and
    batched(batchsize, collation_fn, partial) of webdataset, as one stage (see the module)."""
    from clipscale.augment import FastTrainTransform

    fast = transform if isinstance(transform, FastTrainTransform) else None
    batch: list[tuple] = []

    def finish(batch):
        texts = [text_fn(text) for _, text in batch]
        if fast is None:
            return collation_fn([(image, text) for (image, _), text in zip(batch, texts)])
        import torch

        images = fast.normalize_batch([fast.crop_bytes(img, params) for (img, params), _ in batch])
        return [images, torch.stack(texts)]

    for sample in data:
        if not select(sample):
            continue
        try:
            image_key = next(k for k in IMAGE_KEYS if k in sample)
            for key, value in sample.items():  # in upstream's order: the same first error
                if key == image_key:
                    img = decode_image(value)
                elif key == "txt":
                    text = value.decode("utf-8")
                elif key[:2] != "__":
                    decoder.decode1(key, value)  # decoded by upstream too, then dropped
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
