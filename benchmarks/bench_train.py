"""Training throughput through the pipeline vs the same open_clip_train run by hand.

    .venv/bin/python benchmarks/bench_train.py                  # CPU: vit-s, batch 64, fp32
    python benchmarks/bench_train.py --model ViT-B-32 --batch-size 256 --precision amp_bf16 \\
        --device cuda --workers 8 --image-size 224 --steps 40     # one GPU

Makes a small world pool (clipscale.world, --pool-size samples, --image-size px) and its subset
manifest in a work folder, then trains the same run twice, alternately, --repeats times:

* pipeline: ``clipscale.train.launch`` (what the Snakemake rule calls: a subprocess running
  ``python -m clipscale.train``, which registers the model, checks the shards, installs the
  loss guard and calls open_clip_train's main in-process);
* by hand: ``python -m open_clip_train.main`` with the very same arguments
  (``clipscale.train.open_clip_args``); a custom model of the config (not known to open_clip)
  is given as ``--model local-dir:DIR`` with DIR/open_clip_config.json holding its config,
  open_clip's own way to name a model config on disk.

Both runs draw --steps optimizer steps over --epochs virtual epochs (a checkpoint after each).
Printed per run: samples/s in the steady state, from open_clip's log lines (each gives the mean
batch time of its window; the first window of every epoch, which holds the data loader's warm-up,
is left out), and the wall time of the whole command (start-up, model creation, checkpoints).
Then the pipeline's overhead in % on both, from the medians of the repeats. Exit status 1 if
a run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"Train Epoch: (\d+) \[\s*(\d+)/(\d+) \(\d+%\)\] Data \(t\): ([\d.]+) "
                  r"Batch \(t\): ([\d.]+),")


def throughput(log: Path, global_batch: int) -> tuple[float, int]:
    """Steady-state samples/s from open_clip's out.log, and the number of steps it covers."""
    steps_total, seconds, last = 0, 0.0, {}
    for m in LINE.finditer(log.read_text()):
        epoch, seen, mean_batch_s = int(m.group(1)), int(m.group(2)), float(m.group(5))
        count = seen // global_batch  # batches done in this epoch so far
        window = count - last.get(epoch, 0)
        if epoch in last:  # not the epoch's first window (data loader warm-up)
            steps_total += window
            seconds += window * mean_batch_s
        last[epoch] = count
    return (steps_total * global_batch / seconds if seconds else float("nan")), steps_total


def make_data(work: Path, pool_size: int, image_size: int) -> Path:
    from clipscale import subsets, world

    manifest = work / "subset" / "manifest.json"
    if not manifest.exists():
        spec = world.WorldSpec(seed=0, pool_size=pool_size, shard_size=min(1000, pool_size),
                               image_size=image_size, near_duplicates=0, test_per_class=2,
                               train_per_class=2, retrieval_size=10)
        world.generate(spec, work / "world", progress=False)
        index = subsets.build_index(work / "world" / "pool")
        subsets.write_subset(index, "bench", pool_size, 0, work / "subset")
    return manifest


def bench_config(a, samples: int) -> dict:
    from clipscale import config as config_mod

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["world"] = {"pool_size": a.pool_size, "image_size": min(a.image_size, 256)}
    cfg["scales"] = {"bench": a.pool_size}
    if a.model not in cfg["models"]:
        cfg["models"][a.model] = {}  # an architecture open_clip ships (ViT-B-32, ...)
    cfg["grid"] = {"models": [a.model], "scales": ["bench"], "samples_seen": [samples]}
    cfg["train"].update(device=a.device, precision=a.precision, batch_size=a.batch_size,
                        checkpoints=a.epochs, warmup=10, workers=a.workers, threads=a.threads,
                        nproc=1, lr=5e-4,
                        shuffle_buffer=5000)  # open_clip's own: the run by hand has it
    return config_mod.validate(cfg, "benchmark config")


def by_hand_command(cfg: dict, run, manifest: Path, folder: Path) -> list[str]:
    from clipscale import grid, subsets, train

    hp = grid.hparams(cfg, run)
    args = train.open_clip_args(cfg, run, subsets.read_manifest(manifest), hp)
    args[args.index("--logs") + 1] = str(folder)
    spec = cfg["models"][run.model]
    if "open_clip" in spec:
        model_dir = folder / "model"
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": spec["open_clip"]}))
        args[args.index("--model") + 1] = f"local-dir:{model_dir}"
    device = "cuda" if cfg["train"]["device"] in ("cuda", "auto") else "cpu"
    return [sys.executable, "-m", "open_clip_train.main", *args, "--device", device]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vit-s")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    p.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    p.add_argument("--epochs", type=int, default=2, help="virtual epochs (checkpoints) per run")
    p.add_argument("--pool-size", type=int, default=4000)
    p.add_argument("--image-size", type=int, default=32, help="world image size (px)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--workdir", help="keep data and runs here (default: a temporary folder)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    a = p.parse_args(argv)

    from clipscale import grid, train

    if a.steps % a.epochs:
        p.error("--steps must be a multiple of --epochs")
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench_train_")).absolute()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    manifest = make_data(work, a.pool_size, a.image_size)
    print(f"data: {a.pool_size} samples at {a.image_size}px in {time.perf_counter() - t0:.1f} s ({work})")
    samples = a.steps * a.batch_size
    cfg = bench_config(a, samples)
    run = grid.find_run(cfg, a.model, "bench", str(samples))
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    os.environ["OMP_NUM_THREADS"] = str(a.threads)

    results = {"pipeline": [], "by_hand": []}
    for rep in range(a.repeats):
        for kind in ("pipeline", "by_hand"):
            folder = work / f"{kind}{rep}"
            if folder.exists():
                import shutil

                shutil.rmtree(folder)
            folder.mkdir()
            start = time.perf_counter()
            if kind == "pipeline":
                cwd = os.getcwd()
                os.chdir(folder)
                try:
                    train.launch(cfg, run, manifest, folder / "run.json", log_file=folder / "train.log")
                    ok = True
                except train.TrainingError as e:
                    print(f"pipeline run failed: {e}", file=sys.stderr)
                    ok = False
                finally:
                    os.chdir(cwd)
                log = folder / train.run_dir(run) / train.OPENCLIP_NAME / "out.log"
            else:
                with open(folder / "train.log", "w") as sink:
                    ok = subprocess.call(by_hand_command(cfg, run, manifest, folder), cwd=folder, env=env,
                                         stdout=sink, stderr=subprocess.STDOUT) == 0
                log = folder / train.OPENCLIP_NAME / "out.log"
            wall = time.perf_counter() - start
            if not ok or not log.exists():
                tail = (folder / "train.log").read_text()[-3000:] if (folder / "train.log").exists() else ""
                print(f"{kind} run failed; log tail:\n{tail}", file=sys.stderr)
                return 1
            sps, steps = throughput(log, a.batch_size)
            results[kind].append({"samples_per_s": sps, "steady_steps": steps, "wall_s": wall})
            print(f"repeat {rep} {kind:8s}: {sps:10.1f} samples/s (steady, {steps} steps)  "
                  f"wall {wall:6.1f} s for {a.steps} steps")

    med = {k: {m: statistics.median(r[m] for r in v) for m in ("samples_per_s", "wall_s")}
           for k, v in results.items()}
    sps_over = 100 * (med["by_hand"]["samples_per_s"] / med["pipeline"]["samples_per_s"] - 1)
    wall_over = 100 * (med["pipeline"]["wall_s"] / med["by_hand"]["wall_s"] - 1)
    print(f"\nmodel {a.model}, batch {a.batch_size}, {a.precision}, device {a.device}, "
          f"workers {a.workers}, {a.steps} steps over {a.epochs} epochs, {a.repeats} repeats (medians):")
    print(f"  pipeline (clipscale.train.launch): {med['pipeline']['samples_per_s']:10.1f} samples/s, "
          f"wall {med['pipeline']['wall_s']:.1f} s")
    print(f"  by hand (open_clip_train.main):    {med['by_hand']['samples_per_s']:10.1f} samples/s, "
          f"wall {med['by_hand']['wall_s']:.1f} s")
    print(f"  pipeline overhead: {sps_over:+.1f} % time per step (steady state), "
          f"{wall_over:+.1f} % wall time")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "runs": results, "medians": med,
                                            "overhead_step_pct": sps_over,
                                            "overhead_wall_pct": wall_over}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
