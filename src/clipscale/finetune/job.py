"""One fine-tuning job: a checkpoint and a protocol (the paper's Sec. 4.4, supplement B.2.2).

* ``classification`` (ImageNet-style, the paper's Table 9): the image encoder and a head
  initialised from the zero-shot classifier are fine-tuned on the main set's train split with the
  recipe (``clipscale.finetune.recipe``), then evaluated (the EMA weights when the recipe keeps an
  EMA) on its test split and its robustness sets with its head (restricted to a set's classes
  when it holds a subset of them: ImageNet-A, -R; a test sample with a ``labels.json`` list,
  ImageNet-ReaL's, is right when the top class is in it). Rows: task ``finetune``, metric
  ``imagenet_ft_acc1``, as the paper's Table 9.
* ``classification_in12k``: the same after an intermediate step (``finetune.intermediate``, the
  paper's ImageNet-12k with Table 11's recipe; its own saved place ``state_intermediate.pt``)
  whose EMA encoder the ImageNet step starts from; metric ``imagenet_ft_acc1_in12k``.
* ``classification_hires``, ``classification_in12k_hires``: the two at a larger image size
  (``finetune.classification.high_res``, per model: Table 9's 384 px for ViT-B, 336 px for
  ViT-L/H), the model made for that size and its position embeddings interpolated (the
  intermediate step at the checkpoint's size); metrics ``imagenet_ft_acc1_<size>px[_in12k]``.
* ``patching`` (the paper's Tables 7-8, after Ilharco et al. 2022): the image encoder is
  fine-tuned jointly on several tasks, one task's batch per step in turn, each task's head fixed
  to its zero-shot classifier; then theta = (1 - a) theta_zero-shot + a theta_fine-tuned for a in
  0, 0.1, ..., 1, and the a that maximises the tasks' mean accuracy while the control task (the
  main set, ImageNet in the paper) stays within ``control_tolerance`` points of the zero-shot
  model. As Ilharco et al., a is chosen on validation splits carved from the train splits
  (``finetune.patching.validation``: 10%, at most 5,000 samples, drawn from the seed; the joint
  fine-tuning trains on the rest), and the test splits are evaluated at a = 0, the chosen a and
  1 (fraction 0: a chosen on the test splits). Rows per task and the control:
  ``patching``/``zeroshot_acc1`` (a = 0), ``finetune``/``ft_acc1`` (a = 1),
  ``patching``/``patched_acc1`` (the chosen a); the whole sweep is in the result file.

Data parallel: the job's processes (``finetune.nproc`` per node on ``finetune.nodes`` nodes,
started by ``launch`` as training starts its ranks: torchrun on one node, srun across nodes) each
run a share of every step's batch, in micro-batches of at most ``finetune.micro_batch_size``
(gradient accumulation), under bf16 autocast on GPUs (``finetune.precision``). It is the same
optimisation as one batch of ``recipe.batch_size`` in one process, up to floating point: every
process reads the same stream of undecoded samples and decodes its own contiguous share of each
batch; each sample is augmented with a random state of its own (from the seed, the step and its
place in the batch), so which process augments it does not matter; each micro-batch's mean loss
is weighted by its share of the whole batch before DDP averages the gradients. Only stochastic
depth draws per process (the same in distribution). The test splits are evaluated shard by shard
across the processes, their counts summed.

Resumable: the job saves its place (weights, EMA, optimizer, step) to ``state.pt`` beside its
result every ``save_minutes``, at the end of training and when SIGTERM or the walltime warning
SIGUSR1 arrives; a restarted job continues from there (the data stream is reseeded by the step,
so a resumed run sees other batches than an uninterrupted one would, not the same ones again).
A state made with other settings or from another checkpoint file is not resumed. Corrupt
images are skipped, counted and reported in the result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import logging
import math
import os
import random
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from clipscale import files
from clipscale.config import ConfigError
from clipscale.finetune import recipe as rc

log = logging.getLogger("clipscale.finetune")

RESULT_FORMAT = 1
PROTOCOLS = ("classification", "classification_in12k", "classification_hires", "classification_in12k_hires",
             "patching")
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


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fingerprint(settings: Mapping, checkpoint_stamp: Mapping) -> str:
    blob = json.dumps({"settings": settings, "checkpoint": checkpoint_stamp}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_state(path: Path, expected: str) -> dict | None:
    """The saved place of this job (weights-only load), or None: no file, unreadable (logged), or
    made with other settings or another checkpoint file."""
    if not path.exists():
        return None
    try:
        state = files.load_weights_only(path)
    except Exception as e:  # noqa: BLE001 - an unreadable state is not resumed
        log.warning("%s cannot be read (%s: %s): starting afresh", path, type(e).__name__, e)
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != expected:
        log.warning("%s was saved with other settings or from another checkpoint file: starting afresh", path)
        return None
    return state


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


def micro_batches(n: int, micro: int | None) -> list[slice]:
    """``n`` samples in the fewest near-equal micro-batches of at most ``micro`` (None: one)."""
    parts = 1 if not micro or n <= micro else math.ceil(n / micro)
    bounds = [n * k // parts for k in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


class Trainer:
    """The fine-tuning loop shared by both protocols: ``tasks`` are trained in turn, one batch each
    per step (one task: ImageNet-style). Each process takes its share of every batch (``ranks``),
    in micro-batches of at most ``micro_batch`` samples."""

    def __init__(self, model: rc.Classifier, recipe: rc.Recipe, tasks: list[TaskData], transform, *,
                 device: str, seed: int, state_path: Path, fingerprint: str, save_minutes: float,
                 ranks: Ranks = Ranks(), micro_batch: int | None = None):
        import torch

        self.model, self.recipe, self.tasks = model.to(device), recipe, tasks
        self.transform, self.device, self.seed = transform, device, seed
        self.ranks, self.micro_batch = ranks, micro_batch
        self.state_path, self.fingerprint, self.save_s = state_path, fingerprint, 60 * save_minutes
        self.n_train = sum(t.count("train") for t in tasks)
        self.total = recipe.steps(self.n_train)
        self.opt = rc.optimizer(self.model, recipe)
        self.sched = rc.scheduler(self.opt, recipe, self.n_train)
        self.ema = rc.ema(self.model, recipe, self.n_train)
        self.criterion = rc.loss(recipe)
        self.skipped = Skipped("fine-tuning data")
        self.step, self.resumed_from = 0, None
        self.losses: list[float] = []
        state = load_state(state_path, fingerprint)
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            if self.ema is not None:
                self.ema.module.load_state_dict(state["ema"])
            torch.set_rng_state(state["rng"])
            self.step = self.resumed_from = int(state["step"])
            self.skipped.n = int(state.get("skipped", 0))
            self.losses = [float(x) for x in state.get("losses", [])]
            log.info("resumed from %s at step %d of %d", state_path, self.step, self.total)
        self.net = self.model
        if ranks.world > 1:  # after loading: DDP broadcasts rank 0's weights
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(self.model, device_ids=[device] if device.startswith("cuda") else None)

    def ema_decays(self) -> dict:
        """The EMA's decay at the first and the last update step (0: no EMA)."""
        return {"first": rc.ema_decay(self.recipe, 1, self.n_train),
                "last": rc.ema_decay(self.recipe, self.total, self.n_train)}

    def save(self, done: bool = False) -> None:
        import torch

        if self.ranks.rank != 0:
            return
        files.torch_save({"fingerprint": self.fingerprint, "step": self.step, "done": done,
                          "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                          "ema": self.ema.module.state_dict() if self.ema is not None else {},
                          "rng": torch.get_rng_state(), "skipped": self.skipped.n, "losses": self.losses},
                         self.state_path)

    def _streams(self):
        return {t.name: iter(_train_batches(t, self.recipe.batch_size, self.skipped,
                                            seed=self.seed * 1_000_003 + self.step * 101 + i))
                for i, t in enumerate(self.tasks)}

    def _train_step(self, task: TaskData, batch: list[dict]) -> float:
        """One optimizer step on this process's share of ``batch``; the batch's mean loss."""
        import torch

        lo, hi = self.ranks.share(len(batch))
        images, labels = decode_share(batch[lo:hi], lo, self.transform, self.skipped, seed=self.seed,
                                      task=task.name, step=self.step)
        if not labels:  # (DDP needs every process's forward pass)
            raise FinetuneError(f"downstream set {task.name}: none of the {hi - lo} samples of process "
                                f"{self.ranks.rank}'s share of a training batch decodes ({self.skipped.n} skipped)")
        n_all, = self.ranks.sum(len(labels))
        x = torch.stack(images).to(self.device)
        y = torch.as_tensor(labels, dtype=torch.long).to(self.device)
        parts = micro_batches(len(labels), self.micro_batch)
        self.opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for k, part in enumerate(parts):
            n = part.stop - part.start
            last = k == len(parts) - 1
            sync = contextlib.nullcontext() if last or self.net is self.model else self.net.no_sync()
            with sync:
                with self.ranks.autocast():
                    logits = self.net(x[part], task.name)
                loss = self.criterion(logits.float(), y[part])
                # this part's share of the whole batch (DDP then averages over the processes)
                weight = n * self.ranks.world / n_all
                (loss if weight == 1 else loss * weight).backward()
                loss_sum += loss.item() * n
        loss_all, = self.ranks.sum(loss_sum)
        mean = loss_all / n_all
        if not math.isfinite(mean):
            raise FinetuneError(f"fine-tuning diverged at step {self.step} (loss {mean}): "
                                f"lower finetune.recipe.lr")
        rc.clip_gradients(self.model, self.recipe)
        self.opt.step()
        return mean

    def run(self) -> rc.Classifier:
        """Train to the recipe's last step (from a saved place if there is one); the model to
        evaluate (the EMA's when the recipe keeps one)."""
        from clipscale import stopping

        _seed_everything(self.seed + self.step)
        self.model.train()
        streams = self._streams()
        last_save, t0, start = time.time(), time.time(), self.step
        log.info("fine-tuning %d steps of batch %d on %s (%d training samples), lr %g, layer decay %g, "
                 "EMA decay %s; %d process(es), micro-batches of at most %s, %s", self.total, self.recipe.batch_size,
                 ", ".join(t.name for t in self.tasks), self.n_train, self.recipe.lr, self.recipe.layer_decay,
                 "{first:g} at step 1, {last:g} at the last".format(**self.ema_decays()), self.ranks.world, self.micro_batch or "the whole share",
                 "bf16 autocast" if self.ranks.bf16 else "fp32")
        with stopping.stop_on_signals(watch_parent=False) as stop:
            while self.step < self.total:
                task = self.tasks[self.step % len(self.tasks)]
                try:
                    batch = next(streams[task.name])
                except StopIteration:
                    raise FinetuneError(f"downstream set {task.name}: fewer training samples than a batch "
                                        f"of {self.recipe.batch_size} (its training split holds "
                                        f"{self.n_train} over all sets, split over {self.ranks.world} "
                                        f"process(es))") from None
                self.sched.step_update(num_updates=self.step)
                loss = self._train_step(task, batch)
                self.step += 1
                if self.ema is not None:
                    self.ema.update(self.model, step=self.step)
                self.losses.append(round(loss, 5))
                if self.step % 50 == 0 or self.step == self.total:
                    rate = (self.step - start) / max(1e-9, time.time() - t0)
                    log.info("step %d/%d loss %.4f (%.2f steps/s, %d samples skipped)", self.step, self.total,
                             float(np.mean(self.losses[-50:])), rate, self.skipped.n)
                # every process stops at the same step when any was asked to
                stop_now, = self.ranks.sum(stop.save_requested)
                if stop_now:
                    self.save()
                    self.ranks.barrier()  # rank 0's place is saved before any process exits
                    raise stopping.TrainingStopped(stop.signum or stopping.WALLTIME_SIGNAL,
                                                   f"saved at step {self.step} in {self.state_path}")
                if time.time() - last_save > self.save_s:
                    self.save()
                    last_save = time.time()
        skipped, = self.ranks.sum(self.skipped.n)
        self.skipped.n = int(skipped)
        self.save(done=True)
        trained = self.ema.module if self.ema is not None else self.model
        return trained.eval()


def _label_set(label) -> tuple[int, ...]:
    """A test sample's correct classes: its .cls, or its labels.json list (ImageNet-ReaL's
    reassessed labels: several, or none for an image ReaL leaves out)."""
    if isinstance(label, (list, tuple)):
        return tuple(int(x) for x in label)
    return (int(label),)


def _features(model: rc.Classifier, batches, ranks: Ranks):
    """Features and label sets of batches of (images, label sets)."""
    import torch

    feats, labels = [], []
    model.eval()
    with torch.no_grad():
        for images, target in batches:
            with ranks.autocast():
                feats.append(model.features(images.to(ranks.device)).float().cpu())
            labels += list(target)
    if not feats:
        return torch.empty(0, 0), []
    return torch.cat(feats), labels


def held_out_samples(task: TaskData, skipped: Skipped, ranks: Ranks = Ranks()) -> list[dict]:
    """This process's share of a set's held-out validation samples (``task.held_out``), undecoded:
    read once from the train shards that hold them, kept for the whole sweep."""
    import webdataset as wds

    picks = sorted(task.held_out)[ranks.rank::ranks.world]
    mine = set(picks)
    urls = sorted({url for url, _ in mine})
    if not urls:
        return []
    ds = (wds.WebDataset(urls, shardshuffle=False, handler=skipped, nodesplitter=_all_shards)
          .select(lambda sample: (sample.get("__url__"), sample.get("__key__")) in mine))
    return list(ds)


def _sample_batches(samples: list[dict], transform, batch_size: int, skipped: Skipped):
    """Batches (images, label sets) of undecoded samples (those that fail to decode are skipped
    and counted)."""
    import torch
    import webdataset as wds

    decoder = wds.autodecode.Decoder([wds.autodecode.imagehandler("pil")])
    keys = IMAGE_KEYS.split(";")
    images, labels = [], []
    for sample in samples:
        try:
            decoded = decoder(sample)
            image = next((decoded[k] for k in keys if k in decoded), None)
            if image is None or "cls" not in decoded:
                raise ValueError(f"sample {decoded.get('__key__')} lacks an image or a label")
            images.append(transform(image))
            labels.append(_label_set(decoded["cls"]))
        except Exception as e:  # noqa: BLE001 - as webdataset's handler does
            skipped(e)
        if len(images) == batch_size:
            yield torch.stack(images), labels
            images, labels = [], []
    if images:
        yield torch.stack(images), labels


def accuracy(model: rc.Classifier, head: str, task: TaskData, transform, batch_size: int, skipped: Skipped,
             ranks: Ranks = Ranks(), samples: list[dict] | None = None, columns: list[int] | None = None) -> float:
    """Top-1 accuracy (%) of ``head`` on a set's test split (its shards shared among the
    processes, their counts summed), or on ``samples`` (each process's share of a validation
    split). A sample is right when the top class is one of its label set (one class, or
    ImageNet-ReaL's several); samples with an empty label set are left out (ReaL's rule).
    ``columns``: the head's columns of the set's classes (a subset of the head's: ImageNet-A)."""
    batches = (_test_batches(task, transform, batch_size, skipped, ranks) if samples is None
               else _sample_batches(samples, transform, batch_size, skipped))
    feats, labels = _features(model, batches, ranks)
    correct = total = 0
    if labels:
        weights = model.heads[head].detach().float().cpu()
        top = (feats @ (weights if columns is None else weights[:, columns])).argmax(1).tolist()
        for pred, ok in zip(top, labels):
            if ok:
                total += 1
                correct += pred in ok
    correct, total = ranks.sum(correct, total)
    if not total:
        raise FinetuneError(f"downstream set {task.name}: no decodable {'test' if samples is None else 'validation'} "
                            f"image with a label")
    return 100.0 * correct / total


def zero_shot_head(clip_model, tokenizer, task: TaskData, device: str):
    """The zero-shot classifier of a set (clip_benchmark's, from its class names and templates):
    (embed_dim, n_classes)."""
    from clip_benchmark.metrics.zeroshot_classification import zero_shot_classifier

    return zero_shot_classifier(clip_model, tokenizer, task.classes, task.templates, device, amp=False).float().cpu()


# ---------------------------------------------------------------------------------------------
# the two protocols


@dataclass
class Loaded:
    """A checkpoint's CLIP model (eval mode), its evaluation transform and tokenizer, and the
    mean and std of its preprocessing (for the training transform)."""

    clip: object
    transform: object
    tokenizer: object
    image_size: int
    mean: tuple
    std: tuple

    @classmethod
    def load(cls, name: str, path: str, device: str, image_size: int | None = None) -> "Loaded":
        """The checkpoint as clip_benchmark loads it (weights only); at another ``image_size``
        (Table 9's 336/384 px rows) the model made for that size (open_clip's
        ``force_image_size``), its position embeddings interpolated from the checkpoint's
        (open_clip's ``resize_pos_embed``: bicubic), its evaluation transform at that size."""
        import open_clip

        from clipscale.evaluate.benchmark import Model

        if image_size:
            model, _, transform = open_clip.create_model_and_transforms(name, pretrained=path,
                                                                        force_image_size=image_size)
            model = model.to(device).eval()
            clip, tokenizer = model, open_clip.get_tokenizer(name)
        else:
            m = Model.load(name, path, device, amp=False)
            clip, transform, tokenizer = m.model, m.transform, m.tokenizer
        size = clip.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else int(size)
        cfg = getattr(clip.visual, "preprocess_cfg", {}) or {}
        mean = tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
        std = tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD))
        return cls(clip, transform, tokenizer, size, mean, std)

    def resized(self, visual_state: Mapping) -> dict:
        """Image encoder weights of another image size (an intermediate step's at the
        checkpoint's size) with their position embeddings interpolated to this model's grid."""
        from open_clip.model import resize_pos_embed

        state = {f"visual.{k}": v for k, v in visual_state.items()}
        resize_pos_embed(state, self.clip)
        return {k.removeprefix("visual."): v for k, v in state.items()}

    def classifier(self, tasks: list[TaskData], device: str, train_heads: bool) -> rc.Classifier:
        import copy

        heads = {t.name: zero_shot_head(self.clip, self.tokenizer, t, device) for t in tasks}
        scale = float(self.clip.logit_scale.exp().item())
        return rc.Classifier(copy.deepcopy(self.clip.visual), heads, scale, train_heads=train_heads)


def class_columns(main: TaskData, other: TaskData) -> list[int] | None:
    """The main set's head columns of another set's classes, in its order: None when it has the
    same classes (its head as it is); for a subset (ImageNet-A's and -R's 200 of ImageNet's
    1,000 classes) the columns of those classes, the prediction made among them (timm's class
    mask); anything else is refused."""
    mine, theirs = main.classes, other.classes
    if theirs == mine:
        return None
    free: dict[str, list[int]] = {}
    for i, name in enumerate(mine):
        free.setdefault(name, []).append(i)
    columns = []
    for name in theirs:
        if not free.get(name):
            raise FinetuneError(f"robustness set {other.name} has other classes than {main.name}: "
                                f"{name!r} is not among them ({theirs[:5]} vs {mine[:5]})")
        columns.append(free[name].pop(0))
    return columns


def run_classification(loaded: Loaded, recipe: rc.Recipe, main: TaskData, robustness: list[TaskData], *,
                       device: str, seed: int, state_path: Path, fp: str, save_minutes: float,
                       ranks: Ranks = Ranks(), micro_batch: int | None = None, metric: str = "imagenet_ft_acc1",
                       start: Mapping | None = None) -> dict:
    """ImageNet-style fine-tuning on ``main``; accuracy on its test split and the robustness sets
    (with the main set's head, restricted to a robustness set's classes when it has a subset of
    them). ``start``: image encoder weights to start from (an intermediate step's) instead of the
    checkpoint's."""
    model = loaded.classifier([main], device, train_heads=recipe.train_head)
    columns = {t.name: class_columns(main, t) for t in robustness}  # before any training: refused early
    if start is not None:
        model.visual.load_state_dict(start)
    rc.add_stochastic_depth(model.visual, recipe.drop_path)
    train_tf = rc.train_transform(recipe, loaded.image_size, loaded.mean, loaded.std)
    trainer = Trainer(model, recipe, [main], train_tf, device=device, seed=seed, state_path=state_path,
                      fingerprint=fp, save_minutes=save_minutes, ranks=ranks, micro_batch=micro_batch)
    trained = trainer.run()
    skipped = Skipped("test sets")
    rows = [{"task": "finetune", "dataset": t.name, "metric": metric,
             "value": accuracy(trained, main.name, t, loaded.transform, recipe.batch_size, skipped, ranks,
                               columns=columns.get(t.name))}
            for t in [main, *robustness]]
    test_skipped, = ranks.sum(skipped.n)
    return {"rows": rows, "steps": trainer.total, "resumed_from_step": trainer.resumed_from,
            "train_samples": trainer.n_train, "ema_decay": trainer.ema_decays(),
            "final_loss": float(np.mean(trainer.losses[-20:])),
            "skipped": {"train": trainer.skipped.n, "test": int(test_skipped),
                        "examples": trainer.skipped.examples + skipped.examples}}


def run_intermediate(loaded: Loaded, recipe: rc.Recipe, task: TaskData, *, device: str, seed: int,
                     state_path: Path, fp: str, save_minutes: float, ranks: Ranks = Ranks(),
                     micro_batch: int | None = None) -> tuple[dict, dict]:
    """classification_in12k's intermediate step: the image encoder and a head initialised from
    the zero-shot classifier fine-tuned on ``task``'s train split (the paper's ImageNet-12k,
    Table 11); the trained (EMA) encoder's weights and what to record of the step."""
    model = loaded.classifier([task], device, train_heads=recipe.train_head)
    rc.add_stochastic_depth(model.visual, recipe.drop_path)
    train_tf = rc.train_transform(recipe, loaded.image_size, loaded.mean, loaded.std)
    trainer = Trainer(model, recipe, [task], train_tf, device=device, seed=seed, state_path=state_path,
                      fingerprint=fp, save_minutes=save_minutes, ranks=ranks, micro_batch=micro_batch)
    trained = trainer.run()
    weights = {k: v.detach().clone() for k, v in trained.visual.state_dict().items()}
    return weights, {"dataset": task.name, "steps": trainer.total, "resumed_from_step": trainer.resumed_from,
                     "train_samples": trainer.n_train, "ema_decay": trainer.ema_decays(),
                     "final_loss": float(np.mean(trainer.losses[-20:])), "skipped_train": trainer.skipped.n}


def run_patching(loaded: Loaded, recipe: rc.Recipe, tasks: list[TaskData], control: TaskData, *, alphas: int,
                 tolerance: float, device: str, seed: int, state_path: Path, fp: str, save_minutes: float,
                 ranks: Ranks = Ranks(), micro_batch: int | None = None) -> dict:
    """Joint fine-tuning on ``tasks`` (fixed zero-shot heads; their held-out validation samples
    left out), then the patching sweep. With validation splits (every set's ``held_out``), a is
    chosen on them, as Ilharco et al. choose it, and the test splits are evaluated at a = 0, the
    chosen a and a = 1 only; without, a is chosen on the test splits."""
    model = loaded.classifier([*tasks, control], device, train_heads=False)
    zero_shot = {k: v.detach().clone() for k, v in model.visual.state_dict().items()}
    rc.add_stochastic_depth(model.visual, recipe.drop_path)
    train_tf = rc.train_transform(recipe, loaded.image_size, loaded.mean, loaded.std)
    trainer = Trainer(model, recipe, tasks, train_tf, device=device, seed=seed, state_path=state_path,
                      fingerprint=fp, save_minutes=save_minutes, ranks=ranks, micro_batch=micro_batch)
    trained = trainer.run()
    fine_tuned = {k: v.detach().clone() for k, v in trained.visual.state_dict().items()}
    every = [*tasks, control]
    on_validation = all(t.held_out for t in every)
    skipped, val_skipped = Skipped("test sets"), Skipped("validation splits")
    held = {t.name: held_out_samples(t, val_skipped, ranks) for t in every} if on_validation else {}

    def evaluate(alpha: float, validation: bool) -> dict[str, float]:
        trained.visual.load_state_dict(rc.interpolate(zero_shot, fine_tuned, alpha))
        return {t.name: accuracy(trained, t.name, t, loaded.transform, recipe.batch_size,
                                 val_skipped if validation else skipped, ranks,
                                 samples=held[t.name] if validation else None) for t in every}

    sweep = []
    for i in range(alphas):
        alpha = round(i / (alphas - 1), 6)
        acc = evaluate(alpha, on_validation)
        sweep.append({"alpha": alpha, "accuracy": acc, "tasks_mean": float(np.mean([acc[t.name] for t in tasks])),
                      "control": acc[control.name]})
        if ranks.rank == 0:
            log.info("patching a = %.2f: tasks' mean %.2f, control %s %.2f (%s)", alpha, sweep[-1]["tasks_mean"],
                     control.name, acc[control.name], "validation splits" if on_validation else "test splits")
    chosen = rc.choose_alpha(sweep, tolerance)
    if on_validation:
        test = {a: evaluate(a, False) for a in sorted({0.0, chosen["alpha"], 1.0})}
    else:
        test = {p["alpha"]: p["accuracy"] for p in sweep}
    test_skipped, val_n = ranks.sum(skipped.n, val_skipped.n)
    rows = []
    for t in every:
        rows.append({"task": "patching", "dataset": t.name, "metric": "zeroshot_acc1", "value": test[0.0][t.name]})
        rows.append({"task": "finetune", "dataset": t.name, "metric": "ft_acc1", "value": test[1.0][t.name]})
        rows.append({"task": "patching", "dataset": t.name, "metric": "patched_acc1",
                     "value": test[chosen["alpha"]][t.name]})
    return {"rows": rows, "alpha": chosen["alpha"], "sweep": sweep,
            "alpha_chosen_on": "validation" if on_validation else "test",
            "validation_samples": {t.name: len(t.held_out) for t in every} if on_validation else {},
            "test_accuracy": [{"alpha": a, "accuracy": acc} for a, acc in test.items()] if on_validation else [],
            "control": control.name,
            "control_tolerance": tolerance, "steps": trainer.total, "resumed_from_step": trainer.resumed_from,
            "train_samples": trainer.n_train, "ema_decay": trainer.ema_decays(),
            "final_loss": float(np.mean(trainer.losses[-20:])),
            "skipped": {"train": trainer.skipped.n, "test": int(test_skipped), "validation": int(val_n),
                        "examples": trainer.skipped.examples + skipped.examples + val_skipped.examples}}


def finetune_checkpoint(config: dict, model: str, scale: str, samples: str, protocol: str, output: str | Path, *,
                        run_record: str | Path | None = None, device: str | None = None,
                        threads: int | None = None) -> dict:
    """Fine-tune the final checkpoint of one of our runs with one protocol; write the result file
    (its table rows, the sweep, steps, skipped samples) to ``output``; its saved place is
    ``state.pt`` beside it, resumed only when made from the same checkpoint file with the same
    training settings (recipe, training sets, seed). In a process started by ``launch`` (several
    processes: torchrun's or srun's variables), this is one rank of the job: it joins the others'
    process group (NCCL on GPUs, gloo on CPUs) and rank 0 writes the files."""
    import torch

    from clipscale.evaluate.benchmark import resolve_device
    from clipscale.finetune import plan

    if protocol not in PROTOCOLS:
        raise ConfigError(f"finetune: unknown protocol {protocol!r} (expected one of {list(PROTOCOLS)})")
    ft = plan.section(config)
    torch.set_num_threads(threads or ft["threads"])
    device = device or resolve_device(ft["device"])
    output = Path(output)
    ranks, device = _join(config, device)
    try:
        return _finetune(config, model, scale, samples, protocol, output, run_record, device, ranks)
    finally:
        if ranks.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def _join(config: Mapping, device: str) -> tuple[Ranks, str]:
    """This process's place in the job (``clipscale.launch.dist_env``) and its device (its
    local rank's GPU); joins the job's process group when there are several processes."""
    import torch

    from clipscale import launch
    from clipscale.finetune import plan

    world = plan.world_size(config)
    bf16 = plan.bf16(config, device)
    if world == 1:
        return Ranks(device=device, bf16=bf16), device
    d = launch.apply_env()
    if d.world_size != world:
        raise FinetuneError(f"this process is one of {d.world_size} ({d.launcher}), but finetune.nproc x "
                            f"finetune.nodes is {world}: start the job with clipscale.finetune.launch")
    if device == "cuda":
        device = f"cuda:{d.local_rank}"
        torch.cuda.set_device(device)
    import torch.distributed as dist

    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", init_method="env://",
                            rank=d.rank, world_size=d.world_size)
    return Ranks(d.rank, d.world_size, device, bf16), device


def _finetune(config: dict, model: str, scale: str, samples: str, protocol: str, output: Path,
              run_record, device: str, ranks: Ranks) -> dict:
    from clipscale import grid, models
    from clipscale.evaluate.checkpoints import check_checkpoint, our_checkpoint, stamp, table_row
    from clipscale.finetune import plan

    ft = plan.section(config)
    run = grid.find_run(config, model, scale, samples)
    info = our_checkpoint(config, model, scale, samples, grid.hparams(config, run)["epochs"], run_record)
    check_checkpoint(info.path)
    recipe = rc.Recipe.of(plan.recipe_settings(config, protocol, model))
    sets = {name: TaskData(name, Path(plan.dataset_dir(config, name))) for name in plan.datasets(config, protocol)}
    seed = int(config.get("seed", 0))
    validation = ft["patching"]["validation"]
    if protocol == "patching" and validation["fraction"] > 0:  # Ilharco et al.'s validation splits
        for name in [*ft["patching"]["tasks"], ft["patching"]["control"]]:
            sets[name] = dataclasses.replace(sets[name], held_out=validation_split(
                sets[name], validation["fraction"], validation["max_samples"], seed))
    main = ft["classification"]["dataset"]
    trained_on = [main] if protocol.startswith("classification") else ft["patching"]["tasks"]
    settings = {"protocol": protocol, "recipe": plan.recipe_settings(config, protocol, model), "seed": seed,
                "train": {n: str(sets[n].root) for n in trained_on}}
    if protocol == "patching":
        settings["validation"] = validation if validation["fraction"] > 0 else None
    if plan.image_size(config, protocol, model):
        settings["image_size"] = plan.image_size(config, protocol, model)
    fp_intermediate = None
    if plan.with_intermediate(protocol):
        inter = ft["intermediate"]["dataset"]
        fp_intermediate = fingerprint({"protocol": "intermediate", "recipe": plan.intermediate_settings(config, model),
                                       "seed": seed, "train": {inter: str(sets[inter].root)}}, stamp(info.path))
        settings["intermediate"] = fp_intermediate
    fp = fingerprint(settings, stamp(info.path))
    models.register(config)
    t0 = time.time()
    size = plan.image_size(config, protocol, model)
    # the intermediate step runs at the checkpoint's size, the rest at the protocol's
    loaded = Loaded.load(info.model, info.path, device, image_size=None if plan.with_intermediate(protocol) else size)
    log.info("%s: %s fine-tuning of %s (%s) on %s", run.name, protocol, info.path, info.label, device)
    common = dict(device=device, seed=seed, state_path=output.parent / "state.pt", fp=fp,
                  save_minutes=ft["save_minutes"], ranks=ranks, micro_batch=plan.micro_batch_size(config, model))
    micro_hires = common["micro_batch"]
    if size and micro_hires:  # micro-batches sized at the checkpoint's size: as many pixels (tokens) at this one
        import open_clip

        native = open_clip.get_model_config(info.model)["vision_cfg"]["image_size"]
        native = native[0] if isinstance(native, (tuple, list)) else int(native)
        micro_hires = max(1, micro_hires * native * native // (size * size))
    if protocol.startswith("classification"):
        names = plan.datasets(config, "classification")
        extra, start = {}, None
        if plan.with_intermediate(protocol):  # at the checkpoint's image size
            inter = ft["intermediate"]["dataset"]
            log.info("%s: the intermediate step on %s first (finetune.intermediate)", run.name, inter)
            start, step = run_intermediate(loaded, rc.Recipe.of(plan.intermediate_settings(config, model)), sets[inter],
                                           **{**common, "state_path": output.parent / "state_intermediate.pt",
                                              "fp": fp_intermediate})
            extra = {"intermediate": {**step, "recipe": plan.intermediate_settings(config, model)}}
        if size:
            if start is not None:
                loaded = Loaded.load(info.model, info.path, device, image_size=size)
                start = loaded.resized(start)
            log.info("%s: fine-tuning at %d px (position embeddings interpolated), micro-batches of at most %s",
                     run.name, loaded.image_size, micro_hires)
            extra.update(image_size=loaded.image_size, micro_batch_size=micro_hires)
        out = run_classification(loaded, recipe, sets[names[0]], [sets[n] for n in names[1:]],
                                 metric=plan.classification_metric(config, protocol, model), start=start,
                                 **{**common, "micro_batch": micro_hires})
        out.update(extra)
    else:
        p = ft["patching"]
        out = run_patching(loaded, recipe, [sets[n] for n in p["tasks"]], sets[p["control"]], alphas=p["alphas"],
                           tolerance=p["control_tolerance"], **common)
    result = {"format": RESULT_FORMAT, "status": "ok", "protocol": protocol,
              "target": {"model": model, "scale": scale, "samples": samples, "protocol": protocol},
              "row": table_row(info), "checkpoint_path": info.path,
              "fingerprint": fp, "recipe": plan.recipe_settings(config, protocol, model), **out, "device": device,
              "processes": ranks.world, "micro_batch_size": out.get("micro_batch_size", plan.micro_batch_size(config, model)),
              "precision": "bf16 autocast" if ranks.bf16 else "fp32", "seconds": round(time.time() - t0, 2),
              "finished": datetime.datetime.now().isoformat(timespec="seconds")}
    if ranks.rank != 0:
        return result
    files.write_json(output, result)
    if out["skipped"]["train"] or out["skipped"]["test"]:
        log.warning("%s: skipped %d training and %d test samples that did not decode (see %s)", run.name,
                    out["skipped"]["train"], out["skipped"]["test"], output)
    log.info("%s %s done in %.0f s: %s", run.name, protocol, time.time() - t0,
             ", ".join(f"{r['dataset']} {r['metric']}={r['value']:.2f}" for r in out["rows"]))
    return result


# ---------------------------------------------------------------------------------------------
# the rule's job: one process, or the job's processes launched as training launches its ranks

FAILED_RANK = "failed.rank{rank}.txt"  # beside the result: why a process of a launched job failed


def run_job(config: dict, model: str, scale: str, samples: str, protocol: str, output: str | Path, *,
            run_record: str | Path | None = None, threads: int | None = None,
            log_file: str | Path | None = None) -> dict:
    """The rule finetune's job: ``finetune_checkpoint`` in this process (one process), or in the
    job's ``finetune.nproc`` x ``finetune.nodes`` processes (``clipscale.launch``: torchrun on
    one node, srun across the nodes of a Slurm job), waited for.

    A job that fails writes a failed result (its reason) and ends normally: the fine-tuning
    table lists it (FAILED) and nothing waits on it; delete the result to try again (the job
    resumes from its saved place). A job stopped by a signal (the walltime, Ctrl-C, scancel)
    saved its place and fails, for Snakemake to start it again; so does a launched job whose
    processes died without a reason (killed)."""
    from clipscale import ownership

    output = Path(output)
    try:  # before anything in the folder is touched (state.pt, the result, config.json)
        claim = ownership.claim(output.parent, f"fine-tuning {model}/{scale}/{samples} {protocol}")
    except ownership.OwnedElsewhere as e:  # no failed result: the folder's files are the owner's
        raise FinetuneError(str(e)) from None
    try:
        return _run_job(config, model, scale, samples, protocol, output, run_record, threads, log_file)
    finally:
        ownership.release(output.parent, claim)


def _run_job(config, model, scale, samples, protocol, output: Path, run_record, threads, log_file) -> dict:
    from clipscale.finetune import plan
    from clipscale.finetune.results import write_failure

    if plan.world_size(config) == 1:
        try:
            return finetune_checkpoint(config, model, scale, samples, protocol, output, run_record=run_record,
                                       threads=threads)
        except Exception as e:  # noqa: BLE001 - any failure is the job's result (a stop is no Exception)
            log.exception("%s/%s/%s %s: fine-tuning failed", model, scale, samples, protocol)
            return write_failure(output, model, scale, samples, protocol, f"{type(e).__name__}: {e}")
    return _launched(config, model, scale, samples, protocol, output, run_record, log_file)


def _launched(config: dict, model: str, scale: str, samples: str, protocol: str, output: Path, run_record,
              log_file) -> dict:
    from clipscale import stopping
    from clipscale.finetune import plan
    from clipscale.finetune.results import write_failure
    from clipscale.launch import build_command, step_environment

    ft = plan.section(config)
    output.parent.mkdir(parents=True, exist_ok=True)
    for old in output.parent.glob(FAILED_RANK.format(rank="*")):
        old.unlink()
    resolved = output.parent / "config.json"  # every process reads the same resolved config
    resolved.write_text(json.dumps(config, indent=1, default=str))
    args = ["--config-json", str(resolved), "--model", model, "--scale", scale, "--samples", samples,
            "--protocol", protocol, "--out", str(output)]
    if run_record:
        args += ["--run-record", str(run_record)]
    cmd = build_command(["-m", "clipscale.finetune"], args, nproc=ft["nproc"], nodes=ft["nodes"],
                        cpus_per_task=ft["threads"], gpus=bool(ft["gpus_per_node"]))
    log.info("launching: %s", " ".join(cmd))
    with open(log_file, "a") if log_file else contextlib.nullcontext() as sink:
        status, stopped = stopping.run_until_stopped(cmd, stdout=sink, environ=step_environment())
    reasons = [p.read_text().strip() for p in sorted(output.parent.glob(FAILED_RANK.format(rank="*")))]
    if status == 0 and output.exists():
        return json.loads(output.read_text())
    if reasons:
        return write_failure(output, model, scale, samples, protocol, reasons[0])
    state = output.parent / "state.pt"
    how = f"were stopped ({stopped})" if stopped else f"exited with status {status} and no reason"
    raise FinetuneError(f"{model}/{scale}/{samples} {protocol}: the fine-tuning processes {how}; running "
                        f"the workflow again resumes from {state if state.exists() else 'the start'}")


def main(argv: list[str] | None = None) -> int:
    """One process of a launched fine-tuning job (``python -m clipscale.finetune``)."""
    import argparse

    from clipscale import config as config_mod
    from clipscale.stopping import TrainingStopped

    parser = argparse.ArgumentParser(prog="python -m clipscale.finetune", description=main.__doc__)
    parser.add_argument("--config-json", required=True, help="the resolved config as JSON")
    for name in ("model", "scale", "samples", "protocol", "out"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--run-record")
    a = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0)))
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(f"%(asctime)s rank {rank} %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger("clipscale")
    root.addHandler(handler)
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    root.propagate = False
    try:
        cfg = config_mod.validate(json.loads(Path(a.config_json).read_text()), a.config_json)
        finetune_checkpoint(cfg, a.model, a.scale, a.samples, a.protocol, a.out, run_record=a.run_record)
    except TrainingStopped as e:
        log.warning("%s", e)
        return 128 + e.signum
    except Exception as e:  # noqa: BLE001 - the launcher writes the job's failed result from this
        log.exception("fine-tuning failed")
        (Path(a.out).parent / FAILED_RANK.format(rank=rank)).write_text(f"{type(e).__name__}: {e}\n")
        return 1
    return 0
