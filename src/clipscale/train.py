"""One open_clip training run per grid cell, as the paper trained them.

``python -m clipscale.train --config C --model M --scale S --samples N`` runs open_clip_train's own
``main`` in this process (so custom model configs can be registered first) with the paper's
recipe: --dataset-resampled, samples seen = epochs x train-num-samples, --local-loss
--gather-with-grad, a checkpoint per virtual epoch. Under torchrun or srun every process runs
this same module.

Resume: checkpoints live in the run's folder, which is not a Snakemake output, so a failed,
killed or timed-out job keeps them; the next attempt passes ``--resume latest`` and continues
from the newest readable checkpoint. Only ``run.json`` is the rule's output, written last.

Divergence: every loss is checked before its backward pass; NaN/inf, or a jump above
``max_loss_jump`` x the running mean, stops the run with a message naming the run and step.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections import deque
from pathlib import Path

from clipscale import config as config_mod
from clipscale import grid, models, paths
from clipscale.subsets import read_manifest

log = logging.getLogger("clipscale.train")

OPENCLIP_NAME = "openclip"  # open_clip's --name: logs and checkpoints under <run dir>/openclip/


class TrainingError(RuntimeError):
    pass


class DivergenceError(TrainingError):
    pass


def run_dir(run: grid.Run) -> Path:
    return Path(paths.fill(paths.RUN_DIR, **run.wildcards))


def checkpoint_dir(run: grid.Run) -> Path:
    return Path(paths.fill(paths.RUN_CHECKPOINTS, **run.wildcards))


def checkpoints(run: grid.Run) -> dict[int, Path]:
    """epoch -> checkpoint path, for the checkpoints of a run present on disk."""
    folder = checkpoint_dir(run)
    out = {}
    if folder.is_dir():
        for p in folder.glob("epoch_*.pt"):
            tail = p.stem.split("_", 1)[1]
            if tail.isdigit():
                out[int(tail)] = p
    return dict(sorted(out.items()))


def device_of(setting: str) -> str:
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device is 'cuda' but no CUDA device is visible")
    return setting


def open_clip_args(config: dict, run: grid.Run, manifest: dict, hp: dict) -> list[str]:
    """The open_clip_train command line of one run."""
    if hp["train_num_samples"] < hp["global_batch_size"]:
        raise TrainingError(
            f"{run.name}: {hp['train_num_samples']} samples per checkpoint is less than one global "
            f"batch ({hp['global_batch_size']}); lower train.checkpoints or batch_size")
    args = [
        "--model", run.model,
        "--train-data", manifest["url"],
        "--train-num-samples", str(hp["train_num_samples"]),
        "--dataset-type", "webdataset",
        "--dataset-resampled",
        "--epochs", str(hp["epochs"]),
        "--batch-size", str(hp["batch_size"]),
        "--lr", str(hp["lr"]),
        "--wd", str(hp["wd"]),
        "--beta2", str(hp["beta2"]),
        "--warmup", str(hp["warmup"]),
        "--precision", hp["precision"],
        "--workers", str(hp["workers"]),
        "--local-loss",
        "--gather-with-grad",
        "--save-frequency", "1",
        "--resume", "latest",
        "--logs", str(run_dir(run)),
        "--name", OPENCLIP_NAME,
        "--seed", str(config["seed"]),
        "--log-every-n-steps", "10",
        "--report-to", "",
    ]
    return args + list(hp.get("extra_args", []))


def check_shards(manifest: dict, manifest_path: str | Path) -> None:
    """Every local shard of the subset must be a non-empty file: with --dataset-resampled,
    open_clip skips unreadable shards forever (a hang that floods the log), so fail first."""
    from braceexpand import braceexpand

    missing = []
    for source in manifest["url"].split("::"):  # open_clip's separator of several sources
        if "://" in source or source.startswith("pipe:"):
            continue  # remote shards: open_clip reads them, nothing to check here
        missing += [u for u in braceexpand(source)
                    if not os.path.isfile(u) or os.path.getsize(u) == 0]
    if missing:
        raise TrainingError(
            f"subset {manifest_path}: {len(missing)} shard(s) missing or empty, e.g. {missing[0]}; "
            f"re-make the subset (or the pool it links to)")


def drop_corrupt_latest(run: grid.Run) -> None:
    """A job killed while torch.save wrote a checkpoint leaves an unreadable file that
    ``--resume latest`` would pick: move such files aside (kept, renamed *.corrupt)."""
    import torch

    for epoch, path in reversed(list(checkpoints(run).items())):
        try:
            torch.load(path, map_location="cpu", weights_only=False)
            return
        except Exception as e:  # noqa: BLE001 - any failure to load means unusable
            aside = path.with_suffix(".pt.corrupt")
            log.warning("checkpoint %s is unreadable (%s); moved to %s", path, e, aside)
            path.replace(aside)


class LossGuard:
    """Checks each loss before backward: NaN/inf or a spike fails the run at that step."""

    def __init__(self, run_name: str, max_jump: float, window: int = 50, min_history: int = 10):
        self.run_name, self.max_jump = run_name, max_jump
        self.history: deque[float] = deque(maxlen=window)
        self.min_history = min_history
        self.step = 0

    def check(self, value: float) -> None:
        self.step += 1
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
    """Hook the loss check into open_clip_train, and make DDP work on CPU (gloo).

    Patches module attributes of open_clip_train in this process only (no installed file is
    edited); fails loudly if upstream renamed what is patched.
    """
    import torch
    import open_clip_train.train as oct_train
    import open_clip_train.main as oct_main

    global _active_guard
    if not hasattr(oct_train, "backward"):
        raise TrainingError("open_clip_train.train.backward not found: open_clip changed; "
                            "update clipscale.train.install_guards")
    _active_guard = guard  # a second run in this process is checked by its own guard
    original_backward = oct_train.backward
    if not getattr(original_backward, "_clipscale_guard", False):
        def guarded_backward(total_loss, scaler):
            _active_guard.check(float(total_loss.detach()))
            return original_backward(total_loss, scaler)

        guarded_backward._clipscale_guard = True
        oct_train.backward = guarded_backward

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


def rank() -> int:
    for var in ("RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def train(config: dict, run: grid.Run, manifest_path: str | Path) -> dict:
    """Run (or resume) one training run; return the run record written to run.json."""
    import torch
    from open_clip_train.main import main as open_clip_main

    hp = grid.hparams(config, run)
    manifest = read_manifest(manifest_path)
    check_shards(manifest, manifest_path)
    device = device_of(hp.get("device", "auto"))
    if device == "cpu":
        torch.set_num_threads(hp.get("threads", 1))
        if hp["precision"] != "fp32":
            log.warning("precision %s on CPU is slow (bf16 autocast); fp32 is advised",
                        hp["precision"])
    models.register(config)
    if hp["world_size"] > 1:
        from clipscale.launch import apply_env

        apply_env()  # rank, world size, MASTER_ADDR/PORT from torchrun's or srun's variables
    # open_clip's --device defaults to cuda: without this, train.device: cpu is ignored on GPUs
    args = ["--device", device] + open_clip_args(config, run, manifest, hp)
    if rank() == 0:
        drop_corrupt_latest(run)
        done = checkpoints(run)
        start = max(done) if done else 0
        log.info("run %s: epochs %d x %d samples = %d samples seen, %s; resuming after epoch %d",
                 run.name, hp["epochs"], hp["train_num_samples"], hp["samples_seen_exact"], device,
                 start)
        log.info("open_clip_train %s", " ".join(args))
    guard = LossGuard(run.name, hp.get("max_loss_jump", 4.0))
    install_guards(guard)
    t0 = time.time()
    status = open_clip_main(args)
    seconds = time.time() - t0
    if status not in (None, 0):  # open_clip's main returns -1 on errors yet exits 0
        raise TrainingError(f"run {run.name}: open_clip_train returned {status}; see its log "
                            f"{run_dir(run) / OPENCLIP_NAME / 'out.log'}")
    final = checkpoint_dir(run) / f"epoch_{hp['epochs']}.pt"
    if not final.exists():
        raise TrainingError(f"run {run.name}: finished without its final checkpoint {final}")
    record = {
        "model": run.model,
        "scale": run.scale,
        "samples_seen": run.samples_seen,
        "samples_seen_exact": hp["samples_seen_exact"],
        "samples_seen_label": run.samples_label,
        "data_samples": manifest["n_samples"],
        "epochs": hp["epochs"],
        "train_num_samples": hp["train_num_samples"],
        "global_batch_size": hp["global_batch_size"],
        "world_size": hp["world_size"],
        "lr": hp["lr"],
        "warmup": hp["warmup"],
        "precision": hp["precision"],
        "device": device,
        "steps_this_attempt": guard.step,
        "seconds_this_attempt": round(seconds, 2),
        "final_checkpoint": str(final),
        "checkpoints": {str(e): str(p) for e, p in checkpoints(run).items()},
    }
    return record


def launch(config: dict, run: grid.Run, manifest: str | Path, out: str | Path,
           log_file: str | Path | None = None) -> None:
    """Start the run's processes (python, torchrun, or srun inside a Slurm job) and wait.

    The resolved config travels as JSON beside the run so every process sees the same one.
    """
    import subprocess

    from clipscale.launch import build_command

    hp = grid.hparams(config, run)
    folder = run_dir(run)
    folder.mkdir(parents=True, exist_ok=True)
    resolved = folder / "config.json"
    resolved.write_text(json.dumps(config, indent=1, default=str))
    args = ["--config-json", str(resolved), "--model", run.model, "--scale", run.scale,
            "--samples", run.samples_label, "--manifest", str(manifest), "--out", str(out)]
    cmd = build_command(["-m", "clipscale.train"], args, nproc=hp["nproc"], nodes=hp["nodes"],
                        cpus_per_task=hp.get("threads"))
    log.info("launching: %s", " ".join(cmd))
    if log_file:
        with open(log_file, "a") as sink:  # the processes' progress goes to the job's log
            status = subprocess.call(cmd, stdout=sink, stderr=subprocess.STDOUT)
    else:
        status = subprocess.call(cmd)
    if status != 0:
        raise TrainingError(f"run {run.name}: training processes exited with status {status}; "
                            f"re-running the workflow resumes from the latest checkpoint in "
                            f"{checkpoint_dir(run)}")
    if not Path(out).exists():
        raise TrainingError(f"run {run.name}: training ended without writing {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipscale.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="config YAML (validated)")
    parser.add_argument("--config-json", help="the resolved config as JSON (Snakemake passes it)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--scale", required=True)
    parser.add_argument("--samples", required=True, help="samples seen, e.g. 48k or 3B")
    parser.add_argument("--manifest", required=True, help="subset manifest.json")
    parser.add_argument("--out", required=True, help="run.json to write on success")
    a = parser.parse_args(argv)
    # our own handler on the clipscale logger only: open_clip_train installs one on the root
    # logger, and a second root handler would print every line twice
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    if not (a.config or a.config_json):
        parser.error("one of --config or --config-json is required")
    if a.config_json:
        cfg = config_mod.validate(json.loads(Path(a.config_json).read_text()), a.config_json)
    else:
        cfg = config_mod.load(a.config)
    run = grid.find_run(cfg, a.model, a.scale, a.samples)
    try:
        record = train(cfg, run, a.manifest)
    except TrainingError as e:
        log.error("%s", e)
        return 1
    if rank() == 0:
        profile = Path(paths.fill(paths.MODEL_PROFILE, model=run.model))
        prof = json.loads(profile.read_text()) if profile.exists() else None
        record["gmac_per_sample"] = models.gmac_per_sample(cfg, run.model, prof)
        record["total_gmac"] = record["gmac_per_sample"] * record["samples_seen_exact"]
        Path(a.out).write_text(json.dumps(record, indent=1))
        log.info("run %s done in %.1f s: %s", run.name, record["seconds_this_attempt"], a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
