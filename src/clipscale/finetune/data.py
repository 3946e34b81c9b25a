"""A fine-tuning task's data: its shards, the validation split, batches of undecoded samples, each
sample's seeded decoding (the same whichever process decodes it), this process among the job's (``Ranks``)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("clipscale.finetune")


IMAGE_KEYS = "jpg;jpeg;png;webp"


class FinetuneError(RuntimeError):
    """A fine-tuning job that cannot run (a set without train split or class names, ...)."""


@dataclass
class TaskData:
    """A downstream set in clip_benchmark's webdataset layout (classnames.txt, templates,
    train/ and test/ shards)."""

    name: str
    root: Path
    held_out: frozenset = frozenset()  # (url, key) of training samples held out for validation

    def shards(self, split: str) -> list[str]:
        urls = sorted(str(p) for p in (self.root / split).glob("*.tar"))
        if not urls:
            raise FinetuneError(f"downstream set {self.name}: {self.root / split} holds no .tar shards")
        return urls

    def _lines(self, name: str) -> list[str]:
        path = self.root / name
        if not path.is_file():
            raise FinetuneError(f"downstream set {self.name}: {path} is missing (fine-tuning needs class "
                                f"names and zero-shot templates)")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]

    @property
    def classes(self) -> list[str]:
        return self._lines("classnames.txt")

    @property
    def templates(self) -> list[str]:
        return self._lines("zeroshot_classification_templates.txt")

    def members(self, split: str) -> list[tuple[str, str]]:
        """The labelled samples of a split in stream order, as webdataset names them: (shard url,
        sample key) of each .cls member in its shards' tar headers."""
        out = []
        for url in self.shards(split):
            try:
                with tarfile.open(url) as tar:
                    out += [(url, _sample_key(m.name)) for m in tar if m.name.endswith(".cls")]
            except (tarfile.TarError, OSError) as e:
                raise FinetuneError(f"downstream set {self.name}: shard {url} cannot be read: {e}") from None
        if not out:
            raise FinetuneError(f"downstream set {self.name}: {self.root / split} holds no labelled samples")
        return out

    def count(self, split: str) -> int:
        """Samples of a split: the labels (.cls members) in its shards' tar headers, less the
        training samples held out for validation (``held_out``)."""
        n = len(self.members(split))
        return n - len(self.held_out) if split == "train" else n


def _sample_key(member: str) -> str:
    """webdataset's sample key of a tar member (its path up to the first dot of its file name)."""
    head, _, name = member.rpartition("/")
    return (head + "/" if head else "") + name.split(".", 1)[0]


def validation_split(task: TaskData, fraction: float, max_samples: int, seed: int) -> frozenset:
    """Ilharco et al.'s validation split, carved from a set's train split: ``fraction`` of its
    samples (rounded down), at most ``max_samples``, drawn at random (from ``seed`` and the set's
    name) as (shard url, key) pairs. Patching chooses its a on these; the joint fine-tuning
    trains on the rest."""
    members = task.members("train")
    size = min(int(len(members) * fraction), max_samples)
    if size < 1:
        raise FinetuneError(f"downstream set {task.name}: {fraction:g} of its {len(members)} training samples is "
                            f"no sample: too few for a validation split (finetune.patching.validation)")
    if size >= len(members):
        raise FinetuneError(f"downstream set {task.name}: a validation split of {size} leaves none of its "
                            f"{len(members)} training samples to train on")
    digest = hashlib.blake2b(f"{seed}/{task.name}/validation".encode(), digest_size=8).digest()
    picks = np.random.default_rng(int.from_bytes(digest, "little")).permutation(len(members))[:size]
    return frozenset(members[i] for i in sorted(picks))


class Skipped:
    """webdataset handler: counts (and logs the first few) samples that fail to decode."""

    def __init__(self, where: str):
        self.where, self.n, self.examples = where, 0, []

    def __call__(self, exn: Exception) -> bool:
        self.n += 1
        if len(self.examples) < 5:
            self.examples.append(f"{type(exn).__name__}: {exn}"[:300])
            log.warning("%s: skipped a sample: %s", self.where, self.examples[-1])
        return True


def _all_shards(src, group=None):
    """webdataset node splitter: every process reads every shard (the training stream is the
    same on every process, which takes its share of each batch; the test shards are split by
    ``_test_batches``)."""
    yield from src


def _train_batches(task: TaskData, batch_size: int, skipped: Skipped, *, seed: int):
    """Endless batches of undecoded samples of the train split (lists of webdataset's sample
    dicts), less its held-out validation samples: shards in a deterministic shuffled order,
    samples through a seeded buffer, the same batches on every process."""
    import webdataset as wds

    urls = task.shards("train")
    ds = wds.WebDataset(urls, shardshuffle=len(urls), detshuffle=True, handler=skipped, nodesplitter=_all_shards)
    if task.held_out:
        held = task.held_out
        ds = ds.select(lambda sample: (sample.get("__url__"), sample.get("__key__")) not in held)
    ds = ds.shuffle(2000, rng=random.Random(seed)).batched(batch_size, collation_fn=list, partial=False)
    return _endless(ds)


def _test_batches(task: TaskData, transform, batch_size: int, skipped: Skipped, ranks: "Ranks"):
    """Batches (images, label sets) of this process's shards of the test split (every
    ``ranks.world``-th shard), one pass in shard order; a sample's label set is its
    ``labels.json`` when it has one (ImageNet-ReaL), else its ``cls``."""
    import webdataset as wds

    urls = task.shards("test")[ranks.rank::ranks.world]
    if not urls:
        return iter(())
    return (wds.WebDataset(urls, shardshuffle=False, handler=skipped, nodesplitter=_all_shards)
            .decode("pil", handler=skipped).to_tuple(IMAGE_KEYS, "labels.json;cls", handler=skipped)
            .map_tuple(transform, _label_set).batched(batch_size, partial=True))


def sample_seed(seed: int, task: str, step: int, index: int) -> int:
    """The random state of one training sample's augmentation: from the job's seed, the task,
    the step and the sample's place in the step's batch (not from which process decodes it)."""
    digest = hashlib.blake2b(f"{seed}/{task}/{step}/{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


@contextlib.contextmanager
def _seeded(seed: int):
    """Python's, numpy's and torch's CPU random state set to ``seed`` (timm's RandAugment draws
    from the first two, torchvision's crops and flips and random erasing from torch), restored
    after."""
    import torch

    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def decode_share(samples: list[dict], first: int, transform, skipped: Skipped, *, seed: int, task: str,
                 step: int) -> tuple[list, list[int]]:
    """Decode and augment undecoded samples (``first``: the place of the first in the step's
    batch); those that fail are skipped and counted."""
    import webdataset as wds

    decoder = wds.autodecode.Decoder([wds.autodecode.imagehandler("pil")])
    keys = IMAGE_KEYS.split(";")
    images, labels = [], []
    for i, sample in enumerate(samples):
        try:
            decoded = decoder(sample)
            image = next((decoded[k] for k in keys if k in decoded), None)
            if image is None or "cls" not in decoded:
                raise ValueError(f"sample {decoded.get('__key__')} lacks an image or a label "
                                 f"({sorted(k for k in decoded if not k.startswith('__'))})")
            with _seeded(sample_seed(seed, task, step, first + i)):
                images.append(transform(image))
            labels.append(int(decoded["cls"]))
        except Exception as e:  # noqa: BLE001 - a sample that does not decode is skipped, as webdataset's handler does
            skipped(e)
    return images, labels


def _endless(ds):
    """Pass after pass over a dataset (the shuffle buffer's RNG goes on: each pass in another
    order); stops only when a whole pass yields nothing."""
    while True:
        empty = True
        for batch in ds:
            empty = False
            yield batch
        if empty:
            return


@dataclass(frozen=True)
class Ranks:
    """This process among the job's processes (one process: rank 0 of 1, no process group), and
    the precision of its forward passes."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"
    bf16: bool = False

    def share(self, n: int) -> tuple[int, int]:
        """Bounds of this process's contiguous part of ``n`` items (parts differ by one at most)."""
        return n * self.rank // self.world, n * (self.rank + 1) // self.world

    def sum(self, *values: float) -> list[float]:
        """Each value summed over the processes."""
        if self.world == 1:
            return [float(v) for v in values]
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def autocast(self):
        import torch

        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.split(":")[0], dtype=torch.bfloat16)


def _label_set(label) -> tuple[int, ...]:
    """A test sample's correct classes: its .cls, or its labels.json list (ImageNet-ReaL's
    reassessed labels: several, or none for an image ReaL leaves out)."""
    if isinstance(label, (list, tuple)):
        return tuple(int(x) for x in label)
    return (int(label),)
