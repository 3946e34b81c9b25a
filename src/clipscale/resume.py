"""Resuming a run exactly where it stopped, also in the middle of a virtual epoch.

A long run spans many Slurm jobs (walltime windows). open_clip saves a checkpoint per virtual
epoch only, and resumes at the start of the epoch after it; a window that ends between two
checkpoints would lose its work, and a window shorter than an epoch would never progress. So:

* **a checkpoint at a step boundary**: when a training process is asked to stop and keep its
  place (the walltime warning SIGUSR1 that ``sbatch --signal`` sends, or SIGTERM: preemption,
  ``scontrol requeue``, ``scancel``, a stopped workflow; ``clipscale.stopping``), it finishes
  the step it is in, rank 0 writes ``<run>/partial.pt`` (model, optimizer and scaler state,
  epoch and step within it: open_clip's checkpoint format plus ``step_in_epoch``; written to a
  temporary file and renamed, so a kill during the save leaves the previous one), and every rank
  stops at that same step (ranks agree on it with one all-reduce of a flag per step);
* **resume from it**: open_clip resumes from the newest epoch checkpoint as always; at the start
  of that epoch this module loads ``partial.pt`` of the same epoch over it, makes the data
  pipeline drop the samples of the batches already trained on right after its shuffle (read from
  the tars but not decoded: cheap) and shifts the learning-rate schedule by as many steps. The
  run's total steps and schedule are those of an uninterrupted run;
* **a data order that does not depend on where a run was resumed**: webdataset's sample shuffle
  is seeded from the clock (``webdataset.filters._shuffle``), so no two runs see the same data.
  ``seeded_shuffle`` replaces it, for open_clip's pipeline, by one seeded from (open_clip's
  --seed, rank, data worker, epoch), and restarts the augmentation RNG at every batch of the
  stream from that and the batch's index. With it, a run interrupted and resumed, at an epoch
  boundary or in the middle of one, computes the same losses and weights, bit for bit (same
  device, threads and versions), as one never interrupted (tests/test_train.py). With W data
  workers (the loader takes their batches in turn) a stop is delayed to a multiple of W steps in
  the epoch, at most W - 1 more, so that the resumed epoch takes them in the same order.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path
from typing import Any

from clipscale import files, stopping

log = logging.getLogger("clipscale.train")

PARTIAL_NAME = "partial.pt"  # <run dir>/partial.pt: the checkpoint at a step inside an epoch


class PartialCheckpointError(RuntimeError):
    pass


class SegmentDone(Exception):
    """The job's segment of the run ends here: checkpoint ``epoch`` is saved (train.segments)."""

    def __init__(self, epoch: int):
        self.epoch = epoch
        super().__init__(f"segment ends at epoch {epoch}")


def partial_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / PARTIAL_NAME


def describe(state: dict) -> str:
    return f"epoch {state['epoch']} + {state['step_in_epoch']} of {state['num_batches']} steps"


def read_partial(path: str | Path) -> dict | None:
    """The partial checkpoint at ``path`` (loaded with weights_only=True, memory-mapped: its
    weights are read only when used), or None if absent."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = files.load_weights_only(path)
    except Exception as e:  # noqa: BLE001 - unreadable or unsafe: not resumable
        raise PartialCheckpointError(f"{path}: cannot be loaded with weights_only=True "
                                     f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})")
    keys = ("epoch", "step_in_epoch", "num_batches", "state_dict", "optimizer")
    if not isinstance(state, dict) or any(k not in state for k in keys):
        raise PartialCheckpointError(f"{path}: not a partial checkpoint (needs {', '.join(keys)})")
    return state


def peek(path: str | Path) -> dict | None:
    """epoch, step_in_epoch, num_batches, global_step of the partial checkpoint (no weights), or
    None if there is none or it cannot be used."""
    try:
        state = read_partial(path)
    except PartialCheckpointError:
        return None
    if state is None:
        return None
    return {k: state[k] for k in ("epoch", "step_in_epoch", "num_batches", "global_step") if k in state}


def check_partial(path: str | Path, epochs_done: int, epochs: int) -> dict | None:
    """Before a resume (rank 0): keep ``partial.pt`` only if it continues the newest epoch
    checkpoint (its epoch is ``epochs_done``); remove it when an epoch checkpoint after it exists
    (that one holds all it had), move it aside when it is not usable (``.rejected``/``.corrupt``).
    Returns what it says (no weights) or None."""
    path = Path(path)
    if not path.exists():
        return None
    reason, suffix = None, ".rejected"
    try:
        state = read_partial(path)
    except PartialCheckpointError as e:
        reason, suffix, state = str(e), ".corrupt", None
    if state is not None:
        if state["epoch"] < epochs_done:  # an epoch checkpoint after it holds all it had
            finished(path.parent)
            log.info("removed %s (%s): epoch checkpoint %d is newer", path, describe(state), epochs_done)
            return None
        elif state["epoch"] > epochs_done or state["epoch"] >= epochs:
            reason = f"it continues epoch {state['epoch']}, but the newest epoch checkpoint is {epochs_done}"
        elif not 0 < state["step_in_epoch"] < state["num_batches"]:
            reason = f"step {state['step_in_epoch']} is not inside an epoch of {state['num_batches']} steps"
    if reason is None:
        return {k: state[k] for k in ("epoch", "step_in_epoch", "num_batches", "global_step") if k in state}
    target = path.with_name(path.name + suffix)
    path.replace(target)
    log.warning("partial checkpoint %s not resumed from: %s; moved to %s", path, reason, target)
    return None


# ---------------------------------------------------------------------------------------------
# inside open_clip's training loop


@dataclasses.dataclass
class _Epoch:
    """The epoch in progress in this process."""

    epoch: int
    num_batches: int
    loader: _ResumedLoader
    model: Any
    optimizer: Any
    scaler: Any
    args: Any
    micro: int = 0  # backward passes in this epoch (accum_freq of them per step)

    @property
    def accum(self) -> int:
        return max(1, getattr(self.args, "accum_freq", 1))

    @property
    def done(self) -> int:
        """Steps done in this epoch (the step being trained is not applied yet). With gradient
        accumulation (open_clip's --accum-freq K) a step is K batches, all read before its first
        backward pass."""
        return self.loader.position // self.accum - 1

    @property
    def global_step(self) -> int:
        return self.epoch * self.num_batches + self.done


class _ResumedLoader:
    """open_clip's train dataloader for an epoch that starts at batch ``start``: the data
    pipeline itself drops what the first ``start`` batches were made of, before decoding
    (``seeded_shuffle``), so this yields the epoch's remaining ``num_batches - start`` batches.
    ``position`` is the index (in the epoch) of the next batch."""

    def __init__(self, inner, start: int, num_batches: int):
        self.inner, self.position, self.limit = inner, start, num_batches

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __len__(self):
        return len(self.inner)

    def __iter__(self):
        it = iter(self.inner)
        while self.position < self.limit:
            try:
                batch = next(it)
            except StopIteration:
                return
            self.position += 1
            yield batch


class _State:
    run_dir: Path | None = None
    name: str = ""
    rank: int = 0
    first_epoch: bool = True
    current: _Epoch | None = None
    partial_epoch: int | None = None  # the epoch of partial.pt, while this process knows of one
    until: int | None = None  # this job's segment ends with this epoch's checkpoint
    steps: int = 0  # steps this process trained (step boundaries passed)
    drop_batches: int = 0  # the resumed epoch starts at this batch: the data stream drops them
    batch_size: int = 0
    seed: int = 0  # open_clip's --seed + rank: the data streams' seeds derive from it
    shared_epoch: Any = None  # open_clip's SharedEpoch (shared with the data workers)


_state = _State()


def _unwrapped(model):
    return model.module if hasattr(model, "module") else model  # DistributedDataParallel


def _train_one_epoch(original):
    def train_one_epoch(model, data, loss, epoch, optimizer, scaler, scheduler, dist_model, args, tb_writer=None):
        if _state.until is not None and epoch >= _state.until:
            raise SegmentDone(epoch)  # every rank, at the same epoch: checkpoint `epoch` is saved
        skip = 0
        first, _state.first_epoch = _state.first_epoch, False
        path = partial_path(_state.run_dir)
        if _state.rank == 0 and not first and _state.partial_epoch is not None and epoch > _state.partial_epoch:
            finished(_state.run_dir)  # epoch checkpoint `epoch` was just saved: it is newer
            _state.partial_epoch = None
        state = read_partial(path) if first and path.exists() else None
        num_batches = data["train"].dataloader.num_batches // args.accum_freq
        if state is not None and state["epoch"] == epoch:
            if state["num_batches"] != num_batches:
                raise PartialCheckpointError(
                    f"{path}: saved with {state['num_batches']} steps per epoch, this run has "
                    f"{num_batches}: it belongs to other settings")
            target = _unwrapped(model)
            target.load_state_dict(state["state_dict"])
            optimizer.load_state_dict(state["optimizer"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            skip = state["step_in_epoch"]
            _state.partial_epoch = epoch
            if _state.rank == 0:
                log.info("resuming from %s (%s): the data stream drops its first %d batches, undecoded",
                         path, describe(state), skip)
        # read by seeded_shuffle, in this process or in the data workers (forked at the first epoch);
        # a step is accum_freq batches (the loader stops after the epoch's last whole step: open_clip
        # reads the rest of an epoch's batches and trains none of them)
        accum = max(1, args.accum_freq)
        _state.drop_batches, _state.batch_size = skip * accum, args.batch_size
        _state.seed, _state.shared_epoch = args.seed + _state.rank, data["train"].shared_epoch
        loader = _ResumedLoader(data["train"].dataloader, skip * accum, num_batches * accum)
        data = {**data, "train": dataclasses.replace(data["train"], dataloader=loader)}
        if skip and not args.skip_scheduler:
            shifted = scheduler

            def scheduler(step, shifted=shifted):
                return shifted(step + skip)
        _state.current = _Epoch(epoch, num_batches, loader, model, optimizer, scaler, args)
        try:
            return original(model, data, loss, epoch, optimizer, scaler, scheduler, dist_model, args, tb_writer)
        finally:
            _state.current = None

    train_one_epoch._clipscale_resume = True
    return train_one_epoch


def _agree(want: bool, args) -> bool:
    """Whether any rank wants to stop (one all-reduce of a flag, every step)."""
    if not getattr(args, "distributed", False):
        return want
    import torch
    import torch.distributed as dist

    flag = torch.tensor([1 if want else 0], device=args.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def last_micro_batch() -> bool:
    """Whether the backward pass just done completes a step (always, without accumulation)."""
    cur = _state.current
    return cur is None or cur.micro % cur.accum == 0


def step_boundary() -> None:
    """Called before every backward pass: if this process (or any rank) was asked to stop and
    keep its place, save the partial checkpoint (rank 0) and stop every rank here."""
    cur = _state.current
    stop = stopping.current()
    want = bool(stop is not None and stop.save_requested)
    if cur is None:
        return
    micro, cur.micro = cur.micro, cur.micro + 1
    if micro % cur.accum:  # a step's later backward passes (gradient accumulation): not a boundary
        return
    if not _agree(want, cur.args):
        _state.steps += 1
        return
    import torch

    step = cur.done
    if _state.steps and (step * cur.accum) % max(1, cur.args.workers):
        # the loader takes batches from the W data workers in turn: stopping at a multiple of W
        # lets the resumed epoch take them in the same order (at most W - 1 more steps)
        _state.steps += 1
        return
    saved = ""
    if _state.steps == 0:
        saved = "before this process trained a step: the place is the one it resumed from"
    elif step == 0:
        saved = f"at the start of epoch {cur.epoch}: nothing to save"
    elif _state.rank == 0:
        state = {"epoch": cur.epoch, "step_in_epoch": step, "num_batches": cur.num_batches,
                 "global_step": cur.global_step, "name": _state.name,
                 "state_dict": _unwrapped(cur.model).state_dict(),
                 "optimizer": cur.optimizer.state_dict()}
        if cur.scaler is not None:
            state["scaler"] = cur.scaler.state_dict()
        path = partial_path(_state.run_dir)
        files.torch_save(state, path)
        _state.partial_epoch = cur.epoch
        saved = f"saved {path} ({describe(state)})"
    if getattr(cur.args, "distributed", False):
        torch.distributed.barrier()
    signum = stop.signum if stop is not None and stop.signum else stopping.WALLTIME_SIGNAL
    if stop is not None:
        stop.place = {"epoch": cur.epoch, "step_in_epoch": step, "global_step": cur.global_step}
    raise stopping.TrainingStopped(signum, saved or (stop.why if stop is not None else ""))


# ---------------------------------------------------------------------------------------------
# a data order that does not depend on where the run was resumed


def seeded_shuffle(bufsize=1000, initial=100, **kwargs):
    """webdataset.shuffle for open_clip's pipeline: seeded from (open_clip's --seed, rank, data
    worker, epoch), and reseeding the augmentation RNG at each batch of its stream from that and
    the batch's index; at a resume inside an epoch it first drops (undecoded) the samples of the
    batches already trained on."""
    from webdataset.filters import _shuffle

    def stage(src):  # runs where the data is read (a data worker, or the training process)
        import torch

        info = torch.utils.data.get_worker_info()
        epoch = _state.shared_epoch.get_value() if _state.shared_epoch is not None else 0
        base = _mix(_state.seed, info.id if info else 0, epoch)
        samples = _shuffle(src, bufsize, initial, rng=random.Random(base))
        drop = _take_drop()
        for _ in range(drop):  # what the batches trained before the resume were made of: not decoded
            if next(samples, None) is None:
                return
        # the augmentation RNG restarts at each batch of this stream (samples are decoded and
        # augmented as they are pulled, one batch at a time): a resume at any batch is exact
        generator, size = torch.random.default_generator, max(1, _state.batch_size)
        for n, sample in enumerate(samples, start=drop):
            if n % size == 0:
                generator.manual_seed(_mix(base, n // size))
            yield sample

    return stage


def _worker_seed(original):
    """open_clip_train.data.pytorch_worker_seed, which ResampledShards2 seeds itself with at each
    epoch (``pytorch_worker_seed(epoch)``), counting the epoch also when the data is read in the
    training process: upstream (open_clip_train 3.3.0) falls back to webdataset's rank-based seed
    and drops the increment there, so with train.workers 0 every virtual epoch drew the same
    shards in the same order (a run saw the same few shards again and again)."""

    def pytorch_worker_seed(increment=0):
        import torch

        if torch.utils.data.get_worker_info() is not None:
            return original(increment)
        return _mix(original(0), increment)

    pytorch_worker_seed._clipscale = True
    return pytorch_worker_seed


def _take_drop() -> int:
    """Samples this data stream drops at the start of a resumed epoch (once per process: a data
    worker forked at the resume has its own copy). In the training
    process (workers 0) that is every skipped batch; a data worker made every W-th batch (the
    loader takes batches from the W workers in turn), so it drops its own."""
    import torch

    batches, _state.drop_batches = _state.drop_batches, 0
    info = torch.utils.data.get_worker_info()
    if info is not None:
        batches = len(range(info.id, batches, info.num_workers))
    return batches * _state.batch_size


def _mix(*values: int) -> int:
    """A seed from integers (deterministic across processes, unlike hash())."""
    out = 0
    for v in values:
        out = (out * 1_000_003 + int(v)) % (2 ** 63)
    return out


def install(run_dir: str | Path, name: str, rank: int, until: int | None = None) -> None:
    """Hook this module into open_clip_train in this process (module attributes only; fails
    loudly if upstream renamed what is hooked). ``until``: stop (``SegmentDone``) once the
    checkpoint of that epoch is saved."""
    import open_clip_train.data as oct_data
    import open_clip_train.main as oct_main
    import webdataset

    build = getattr(oct_data, "get_wds_dataset", None)
    if not hasattr(oct_main, "train_one_epoch") or build is None or "shuffle" not in build.__code__.co_names:
        raise RuntimeError("open_clip_train changed (main.train_one_epoch, data.get_wds_dataset's "
                           "wds.shuffle): update clipscale.resume.install")
    _state.run_dir, _state.name, _state.rank = Path(run_dir), name, rank
    _state.first_epoch, _state.current, _state.partial_epoch, _state.until = True, None, None, until
    _state.steps, _state.drop_batches, _state.shared_epoch = 0, 0, None
    if not getattr(oct_main.train_one_epoch, "_clipscale_resume", False):
        oct_main.train_one_epoch = _train_one_epoch(oct_main.train_one_epoch)
    if not getattr(oct_data.pytorch_worker_seed, "_clipscale", False):
        oct_data.pytorch_worker_seed = _worker_seed(oct_data.pytorch_worker_seed)
    if webdataset.shuffle is not seeded_shuffle:
        if oct_data.wds is not webdataset:
            raise RuntimeError("open_clip_train.data.wds is not the webdataset module: update "
                               "clipscale.resume.install")
        webdataset.shuffle = seeded_shuffle  # open_clip_train.data calls wds.shuffle(...)


def global_step() -> int | None:
    """The step being trained (0-based, counted over the whole run), or None outside an epoch."""
    cur = _state.current
    return None if cur is None else cur.global_step


def finished(run_dir: str | Path) -> None:
    """A newer epoch checkpoint exists: the partial checkpoint (and a half-written one) is
    obsolete. Files moved aside (``.rejected``, ``.corrupt``) are kept."""
    path = partial_path(run_dir)
    for obsolete in (path, files.temporary(path)):
        obsolete.unlink(missing_ok=True)
