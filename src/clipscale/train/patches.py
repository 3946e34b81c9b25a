"""Patches installed into open_clip_train before its ``main`` runs: skip counting, the data path,
the shuffle buffer, the optimizer's multi-tensor steps, offline wandb, safe saving, and the loss
guard (divergence)."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections import Counter, deque
from pathlib import Path

from clipscale import files, grid, resume, stopping
from clipscale.train.records import DivergenceError, SKIPPED_NAME, SKIP_DIR_ENV, TrainingError, rank, run_dir

log = logging.getLogger("clipscale.train")


MAX_SKIP_EXAMPLES = 3  # examples kept per skip reason


# ---------------------------------------------------------------------------------------------
# samples skipped by open_clip's data pipeline
# ---------------------------------------------------------------------------------------------


class _SkipCounter:
    """This process's skipped samples, rewritten to its own small file in ``$CLIPSCALE_SKIP_DIR``
    at each skip (skips are rare next to decoding). A file per process because the pipeline runs
    in data worker processes whose memory the training process never sees; a forked worker
    starts its own counts and file."""

    pid: int | None = None

    def add(self, reason: str, key: str | None, url: str | None, error: str | None = None) -> None:
        folder = os.environ.get(SKIP_DIR_ENV)
        if not folder:
            return
        if self.pid != os.getpid():
            self.pid, self.counts, self.examples = os.getpid(), Counter(), []
            self.path = Path(folder) / f"rank{rank()}-pid{self.pid}-{time.time_ns()}.json"
        self.counts[reason] += 1
        if self.counts[reason] <= MAX_SKIP_EXAMPLES:
            self.examples.append({"reason": reason, "key": key, "url": url, "error": error})
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"by_reason": self.counts, "examples": self.examples}))
        os.replace(tmp, self.path)  # never half a file for the summing process to read


_skips = _SkipCounter()
_last_sample: tuple[str | None, str | None] = (None, None)  # (key, url) of the sample in decoding


def _upstream(name: str):
    """open_clip_train.data's own function ``name``, also once this process has patched it (a
    worker started by spawn imports the module afresh, unpatched)."""
    import open_clip_train.data as oct_data

    return getattr(oct_data, "_clipscale_originals", {}).get(name) or getattr(oct_data, name)


def _select_counting(sample: dict) -> bool:
    """open_clip's filter_no_caption_or_no_image (which drops silently), counting the drops."""
    global _last_sample
    _last_sample = (sample.get("__key__"), sample.get("__url__"))
    if _upstream("filter_no_caption_or_no_image")(sample):
        return True
    lacks = {"no caption": "txt" not in sample,
             "no image": not any(ext in sample for ext in ("png", "jpg", "jpeg", "webp"))}
    _skips.add(", ".join(r for r, true in lacks.items() if true) or "filtered out", *_last_sample)
    return False


def _decode_error_skipped(exn: Exception) -> bool:
    """open_clip's log_and_continue for the decode stage, counting the skip. The sample is the one
    the filter passed last: the pipeline's stages are generators pulling one sample at a time."""
    _skips.add(f"decode error: {type(exn).__name__}", *_last_sample, error=repr(exn)[:300])
    return _upstream("log_and_continue")(exn)


def _read_error_skipped(exn: Exception) -> bool:
    """log_and_continue for reading the tar files (webdataset appends the shard url to args)."""
    url = next((a for a in reversed(getattr(exn, "args", ())) if isinstance(a, str)), None)
    _skips.add(f"read error: {type(exn).__name__}", None, url, error=repr(exn)[:300])
    return _upstream("log_and_continue")(exn)


def _tarfile_to_samples_counting(src, handler=None):
    """open_clip's tarfile_to_samples_nothrow with the counting handler (its default handler,
    log_and_continue, was bound when it was defined: patching that name does not reach it)."""
    return _upstream("tarfile_to_samples_nothrow")(src, handler=_read_error_skipped)


def install_skip_counting() -> None:
    """Count what open_clip's webdataset pipeline skips (it only logs "Ignoring" per sample).

    Patches names that ``open_clip_train.data.get_wds_dataset`` looks up when it builds the
    pipeline; fails loudly if upstream renamed them or stopped using them there.
    """
    import open_clip_train.data as oct_data

    wrappers = {"filter_no_caption_or_no_image": _select_counting,
                "log_and_continue": _decode_error_skipped,
                "tarfile_to_samples_nothrow": _tarfile_to_samples_counting}
    build = getattr(oct_data, "get_wds_dataset", None)
    used = set(build.__code__.co_names) if build is not None else set()
    missing = [n for n in wrappers if not hasattr(oct_data, n) or n not in used]
    if missing:
        raise TrainingError(f"open_clip_train.data.get_wds_dataset no longer uses {missing}: "
                            f"open_clip changed; update clipscale.train.install_skip_counting")
    if not hasattr(oct_data, "_clipscale_originals"):
        oct_data._clipscale_originals = {n: getattr(oct_data, n) for n in wrappers}
        for name, wrapper in wrappers.items():
            setattr(oct_data, name, wrapper)


def install_fast_data_path() -> None:
    """Give open_clip_train's data pipeline ``clipscale.augment``'s faster equivalents of its
    default training transform (the same crop distribution and, for a crop, the same tensor) and
    of its tokenizer (tokens of repeated captions remembered); any other transform passes
    unchanged; and the training pipeline's per-sample stages done a batch at a time and its shards
    read without tarfile, the same batches (``clipscale.datapath``). Patches the name ``get_data``
    that open_clip_train's main calls; fails loudly if upstream stopped calling it there."""
    import open_clip_train.main as oct_main

    from clipscale import augment, datapath

    main = getattr(oct_main, "main", None)
    upstream_main = main is not None and getattr(main, "__module__", None) == oct_main.__name__
    if not hasattr(oct_main, "get_data") or (upstream_main and "get_data" not in main.__code__.co_names):
        raise TrainingError("open_clip_train.main.main no longer calls get_data: open_clip changed; "
                            "update clipscale.train.install_fast_data_path")
    datapath.install_tar_reader()  # the shards read without tarfile's per-member Python
    if getattr(oct_main.get_data, "_clipscale_fast", False):
        return
    original = oct_main.get_data

    def get_data(args, preprocess_fns, *rest, **kwargs):
        preprocess_train, preprocess_val = preprocess_fns
        fast = augment.faster(preprocess_train)
        if fast is not preprocess_train:
            log.info("training transform: %r (open_clip's default, faster)", fast)
        if kwargs.get("tokenizer") is not None:
            kwargs["tokenizer"] = augment.CachedTokenizer(kwargs["tokenizer"])
            log.info("tokenizer: %r", kwargs["tokenizer"])
        data = original(args, (fast, preprocess_val), *rest, **kwargs)
        if "train" in data:  # its per-sample stages a batch at a time (clipscale.datapath)
            datapath.fuse(data["train"].dataloader)
        return data

    get_data._clipscale_fast = True
    oct_main.get_data = get_data


def install_shuffle_buffer(size: int) -> None:
    """open_clip_train's training-sample shuffle buffer (module constants that get_wds_dataset
    reads; 5,000 and 1,000 upstream): ``size`` samples, a fifth of them read before the first
    draw, as upstream's ratio."""
    import open_clip_train.data as oct_data

    if not hasattr(oct_data, "_SAMPLE_SHUFFLE_SIZE") or not hasattr(oct_data, "_SAMPLE_SHUFFLE_INITIAL"):
        raise TrainingError("open_clip_train.data has no _SAMPLE_SHUFFLE_SIZE/_INITIAL: open_clip "
                            "changed; update clipscale.train.install_shuffle_buffer")
    oct_data._SAMPLE_SHUFFLE_SIZE, oct_data._SAMPLE_SHUFFLE_INITIAL = size, max(1, size // 5)


def install_multi_tensor_adamw() -> None:
    """open_clip_train's AdamW stepped by torch's multi-tensor (``foreach``) implementation on
    CPU too. torch picks it by default only for CUDA tensors; on CPU its per-parameter loop cost
    the embedded default's ViT-XS 8.1 ms a step (32 us a sample at batch 256; ViT-M 24.5 ms), the
    multi-tensor one 4.2 ms (ViT-M 11.7), with the same parameters bit for bit
    (tests/test_train.py). torch's fused CPU kernel is faster still (1.1 ms) but differs in the
    last bit, so the default's numbers would move: not used. Patches the ``optim`` that
    open_clip_train.main reads ``AdamW`` from (only for open_clip's ``main``: the rest of the
    process keeps torch.optim); an explicit ``foreach`` is kept; fails loudly if upstream
    stopped creating its optimizer there."""
    import types

    import open_clip_train.main as oct_main

    optim = getattr(oct_main, "optim", None)
    main = getattr(oct_main, "main", None)
    if optim is None or not hasattr(optim, "AdamW") or (
            getattr(main, "__module__", None) == oct_main.__name__ and "AdamW" not in main.__code__.co_names):
        raise TrainingError("open_clip_train.main no longer creates optim.AdamW: open_clip changed; "
                            "update clipscale.train.install_multi_tensor_adamw")
    if getattr(optim.AdamW, "_clipscale_foreach", False):
        return
    upstream = optim.AdamW

    class AdamW(upstream):
        _clipscale_foreach = True

        def __init__(self, params, *args, foreach=None, **kwargs):
            super().__init__(params, *args, foreach=True if foreach is None else foreach, **kwargs)

    AdamW.__name__ = AdamW.__qualname__ = "AdamW"  # open_clip logs "Created AdamW (adamw) optimizer"
    patched = types.ModuleType(optim.__name__, optim.__doc__)
    patched.__dict__.update({k: v for k, v in vars(optim).items() if k not in ("__name__", "__doc__")})
    patched.AdamW = AdamW
    oct_main.optim = patched


def install_wandb_offline(run: grid.Run) -> None:
    """With ``wandb`` in train.report_to: log offline (``WANDB_MODE=offline`` unless the
    environment says otherwise) into the run's folder, and give each run its own W&B run.
    open_clip names the W&B run and its id after ``--name``, which is ``openclip`` for every run
    here (the folder layout): ``wandb sync`` would merge all runs into one. Patches the
    ``wandb.init`` that open_clip_train.main calls to use the run's name (id: the name with
    ``/`` as ``-``) and the project ``clipscale``, unless ``--wandb-project-name`` was given."""
    import open_clip_train.main as oct_main

    wandb = getattr(oct_main, "wandb", None)
    if wandb is None:
        raise TrainingError("train.report_to has wandb, but the wandb package is not installed "
                            "(pip install wandb) in this environment")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_DIR", str(run_dir(run).absolute()))
    init = getattr(wandb.init, "_clipscale_original", wandb.init)

    def run_init(*args, **kwargs):
        kwargs.update(name=run.name, id=re.sub(r"[^A-Za-z0-9_.-]", "-", run.name))
        if kwargs.get("project") in (None, "open-clip"):  # open_clip's default project name
            kwargs["project"] = "clipscale"
        return init(*args, **kwargs)

    run_init._clipscale_original = init
    wandb.init = run_init


def install_safe_saving() -> None:
    """open_clip_train saves each epoch checkpoint with ``torch.save(obj, path)`` straight to its
    name: on a full disk that left a half-written epoch_N.pt as the newest, and torch's error
    ("unexpected pos") named neither the file nor the cause. In this process ``torch.save`` to a
    path goes through ``files.torch_save``: a temporary file renamed once whole; a failed write
    removes it and raises ``files.WriteError`` naming the file ("no space left on device")."""
    import open_clip_train.main as oct_main
    import torch

    main = getattr(oct_main, "main", None)
    if getattr(main, "__module__", None) == oct_main.__name__ and "save" not in main.__code__.co_names:
        raise TrainingError("open_clip_train.main.main no longer calls torch.save: open_clip changed; "
                            "update clipscale.train.install_safe_saving")
    if getattr(torch.save, "_clipscale_original", None) is not None:
        return
    original = torch.save

    def save(obj, f, *args, **kwargs):
        if args or kwargs or not isinstance(f, (str, os.PathLike)):
            return original(obj, f, *args, **kwargs)
        files.torch_save(obj, f, save=original)

    save._clipscale_original = original
    torch.save = save


def skipped_summary(run: grid.Run) -> dict:
    """All skips of the run (every attempt, rank and worker): total, by reason, a few examples.
    A resampled sample counts each time it is drawn."""
    by_reason, examples = Counter(), []
    for f in sorted((run_dir(run) / SKIPPED_NAME).glob("*.json")):
        try:
            part = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        by_reason.update(part["by_reason"])
        examples += part["examples"]
    kept = [e for i, e in enumerate(examples)
            if sum(x["reason"] == e["reason"] for x in examples[:i]) < MAX_SKIP_EXAMPLES]
    return {"total": sum(by_reason.values()), "by_reason": dict(by_reason), "examples": kept}


class LossGuard:
    """Checks each loss before backward: NaN/inf or a spike fails the run at that step."""

    def __init__(self, run_name: str, max_jump: float, window: int = 50, min_history: int = 10):
        self.run_name, self.max_jump = run_name, max_jump
        self.history: deque[float] = deque(maxlen=window)
        self.min_history = min_history
        self.step = 0  # losses checked
        self.done = 0  # backward passes completed (an attempt's steps)
        self.loss_log = None  # an open file: "global step,loss" per step (rank 0)

    def check(self, value: float, log: bool = True) -> None:
        """``log``: write the loss to losses.csv (a step's last batch, with accumulation)."""
        self.step += 1
        if self.loss_log is not None and log:
            step = resume.global_step()
            self.loss_log.write(f"{'' if step is None else step},{value!r}\n")
        hint = ("resume from the last good checkpoint with another precision, e.g. "
                "train.precision: amp_bf16 -> fp32 (or lower lr), and re-run the workflow")
        if not math.isfinite(value):
            raise DivergenceError(
                f"run {self.run_name}: loss is {value} at step {self.step} (this process); {hint}")
        if len(self.history) >= self.min_history:
            mean = sum(self.history) / len(self.history)
            if value > self.max_jump * mean:
                raise DivergenceError(
                    f"run {self.run_name}: loss spike at step {self.step}: {value:.4f} > "
                    f"{self.max_jump} x running mean {mean:.4f}; {hint}")
        self.history.append(value)


_active_guard: LossGuard | None = None


def install_guards(guard: LossGuard) -> None:
    """Hook the loss check (and a pending stop) into open_clip_train, load its resume checkpoint
    with weights_only=True, and make DDP work on CPU (gloo).

    Patches module attributes of open_clip_train in this process only (no installed file is
    edited); fails loudly if upstream renamed what is patched.
    """
    import open_clip_train.main as oct_main
    import open_clip_train.train as oct_train
    import torch

    global _active_guard
    for module, name in ((oct_train, "backward"), (oct_main, "pt_load")):
        if not hasattr(module, name):
            raise TrainingError(f"{module.__name__}.{name} not found: open_clip changed; "
                                f"update clipscale.train.install_guards")
    _active_guard = guard  # a second run in this process is checked by its own guard
    original_backward = oct_train.backward
    if not getattr(original_backward, "_clipscale_guard", False):
        def guarded_backward(total_loss, scaler):
            if stopping.current() is not None:
                stopping.current().check()  # a signal that came while the last checkpoint was being saved
            resume.step_boundary()  # asked to stop and keep the place: save it, stop every rank
            _active_guard.check(float(total_loss.detach()), log=resume.last_micro_batch())
            out = original_backward(total_loss, scaler)
            _active_guard.done += resume.last_micro_batch()  # steps, not accumulated batches
            return out

        guarded_backward._clipscale_guard = True
        oct_train.backward = guarded_backward

    if not getattr(oct_main.pt_load, "_clipscale_safe", False):
        def pt_load(file_path, map_location=None):
            """open_clip_train.file_utils.pt_load saying weights_only=True: left implicit, torch's
            TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 would make it a full unpickle (code runs)."""
            import fsspec

            with fsspec.open(file_path, "rb") as f:
                return torch.load(f, map_location=map_location, weights_only=True)

        pt_load._clipscale_safe = True
        oct_main.pt_load = pt_load

    ddp = torch.nn.parallel.DistributedDataParallel
    if not getattr(ddp, "_clipscale_cpu", False):
        class CpuFriendlyDDP(ddp):
            """open_clip passes device_ids=[device]; gloo on CPU needs device_ids=None."""

            _clipscale_cpu = True

            def __init__(self, module, device_ids=None, **kwargs):
                if device_ids and all(torch.device(d).type == "cpu" for d in device_ids):
                    device_ids = None
                super().__init__(module, device_ids=device_ids, **kwargs)

        oct_main.torch.nn.parallel.DistributedDataParallel = CpuFriendlyDDP
