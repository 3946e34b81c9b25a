"""ImageNet-ReaL (Beyer et al. 2020, "Are we done with ImageNet?"), one of Table 9's robustness
columns, as a set the fine-tuning jobs evaluate: ImageNet's 50,000 validation images with their
reassessed labels (``real.json`` of google-research/reassessed-imagenet: for the i-th image,
ILSVRC2012_val_<i+1>.JPEG, a list of classes, empty where the raters kept none), written in
clip_benchmark's webdataset layout with the labels as each sample's ``labels.json``. A prediction
is right when it is one of the image's labels; images without labels are left out (timm's
``RealLabelsImagenet``). clip_benchmark's ImageNet webdataset keeps no file names, so the set is
made from the validation images themselves:

    python -m clipscale.finetune.real --val ILSVRC2012/val --real real.json \\
        --classes data/wds/imagenet1k --out data/wds/imagenet-real

(``--val``: the images, flat or in class folders; ``--classes``: the ImageNet set whose
``classnames.txt`` and templates the fine-tuned head uses). Then ``finetune.sets:
{imagenet-real: {path: data/wds/imagenet-real}}`` and ``imagenet-real`` among
``finetune.classification.robustness``.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import tarfile
from pathlib import Path

NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG$", re.IGNORECASE)
WNID = re.compile(r"^n\d{8}$")
TEXT_FILES = ("classnames.txt", "zeroshot_classification_templates.txt")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_real_set(val_dir: str | Path, real_json: str | Path, classes_dir: str | Path, out: str | Path,
                  shard_size: int = 10000) -> dict:
    """Write the ImageNet-ReaL test split to ``out/test/*.tar`` (each sample: the image as
    ``jpeg``, ``labels.json`` its ReaL labels, ``cls`` its original label when the images sit in
    class folders, wnids in sorted order) and copy the class names and templates of
    ``classes_dir``. Returns counts (images, with labels, without)."""
    labels = json.loads(Path(real_json).read_text())
    images = {}
    for path in Path(val_dir).rglob("*"):
        m = NAME.search(path.name)
        if m and path.is_file():
            images[int(m.group(1))] = path
    if not images:
        raise FileNotFoundError(f"{val_dir}: no ILSVRC2012_val_*.JPEG images")
    if max(images) > len(labels):
        raise ValueError(f"{real_json} has labels for {len(labels)} images; {val_dir} holds "
                         f"ILSVRC2012_val_{max(images):08d}.JPEG")
    wnids = sorted({p.parent.name for p in images.values() if WNID.match(p.parent.name)})
    out = Path(out)
    (out / "test").mkdir(parents=True, exist_ok=True)
    for name in TEXT_FILES:
        src = Path(classes_dir) / name
        if not src.is_file():
            raise FileNotFoundError(f"{src} is missing (the fine-tuned head's classes and templates)")
        shutil.copyfile(src, out / name)
    order = sorted(images)
    for start in range(0, len(order), shard_size):
        with tarfile.open(out / "test" / f"{start // shard_size:06d}.tar", "w") as tar:
            for number in order[start:start + shard_size]:
                path, key = images[number], f"ILSVRC2012_val_{number:08d}"
                _add(tar, f"{key}.jpeg", path.read_bytes())
                _add(tar, f"{key}.labels.json", json.dumps([int(x) for x in labels[number - 1]]).encode())
                if path.parent.name in wnids:
                    _add(tar, f"{key}.cls", str(wnids.index(path.parent.name)).encode())
    with_labels = sum(1 for n in order if labels[n - 1])
    return {"images": len(order), "with_labels": with_labels, "without_labels": len(order) - with_labels}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipscale.finetune.real", description=make_real_set.__doc__)
    parser.add_argument("--val", required=True, help="ImageNet's validation images (flat or in class folders)")
    parser.add_argument("--real", required=True, help="real.json of google-research/reassessed-imagenet")
    parser.add_argument("--classes", required=True, help="the ImageNet webdataset folder (classnames, templates)")
    parser.add_argument("--out", required=True)
    a = parser.parse_args(argv)
    print(json.dumps(make_real_set(a.val, a.real, a.classes, a.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
