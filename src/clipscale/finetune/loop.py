"""The fine-tuning loop: seeding, the job's saved place, ranks and micro-batches, the ``Trainer``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from clipscale import files
from clipscale.finetune import recipe as rc
from clipscale.finetune.data import FinetuneError, Ranks, Skipped, TaskData, _train_batches, decode_share

log = logging.getLogger("clipscale.finetune")


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
