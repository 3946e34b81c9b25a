"""What open_clip's TensorBoard logging (train.report_to: [tensorboard], the default) costs a
training job, against the same run without it.

    .venv/bin/python benchmarks/bench_report_to.py              # vit-s, batch 256, 40 steps, 3 repeats

The same pipeline run (``clipscale.train.launch``, as the Snakemake rule; bench_train.py's data
and config: a small world, the embedded default's settings) three ways, alternately:

* ``tensorboard``: train.report_to [tensorboard] (event files under the run's openclip/tensorboard);
* ``none``: train.report_to [] (tensorboard installed, so open_clip_train still imports it);
* ``absent``: train.report_to [] and ``import tensorboard`` failing, as before the package was a
  requirement (a ``tensorboard.py`` that raises ImportError first on PYTHONPATH).

Printed: the wall time and the CPU time (the job's processes, user + system) of each job and
their medians; the difference is what the default costs. On a loaded machine the wall times vary
far more than that: two direct measurements follow, the import of ``torch.utils.tensorboard``
(which open_clip_train.main does at import once the package is installed, whatever report_to
says) in a fresh process, and a SummaryWriter writing open_clip's 6 scalars at as many points as
a run of --steps steps logs (every 10th step and each epoch's last).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def bench_config(a, samples: int, report_to: list[str]) -> dict:
    """The embedded default's settings (config/config.yaml) on one run of the benchmark's pool."""
    from clipscale import config as config_mod

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["world"] = {"pool_size": a.pool_size, "image_size": 32}
    cfg["scales"] = {"bench": a.pool_size}
    cfg["grid"] = {"models": [a.model], "scales": ["bench"], "samples_seen": [samples]}
    cfg["fit"].pop("comparisons", None)  # they name the default grid's const-cooldown runs
    cfg["train"].update(device="cpu", batch_size=a.batch_size, checkpoints=a.epochs, report_to=report_to)
    return config_mod.validate(cfg, "benchmark config")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vit-s")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--pool-size", type=int, default=4000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir")
    a = p.parse_args(argv)

    from clipscale import grid, subsets, train, world

    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench_report_to_")).absolute()
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "world" / "world.json").exists():
        world.generate(world.WorldSpec(seed=0, pool_size=a.pool_size, shard_size=min(1000, a.pool_size),
                                       image_size=32, near_duplicates=0, test_per_class=2, train_per_class=2,
                                       retrieval_size=10), work / "world", progress=False)
    index = subsets.build_index(work / "world" / "pool")
    manifest = Path("subset") / "manifest.json"  # in each run's folder (relative to it, as the rule's)
    samples = a.steps * a.batch_size
    blocker = work / "no_tensorboard"
    blocker.mkdir(exist_ok=True)
    (blocker / "tensorboard.py").write_text("raise ImportError('tensorboard blocked by the benchmark')\n")
    walls: dict[str, list[float]] = {"tensorboard": [], "none": [], "absent": []}
    cpus: dict[str, list[float]] = {k: [] for k in walls}
    python_path = os.environ.get("PYTHONPATH", "")
    for rep in range(a.repeats):
        for kind in walls:
            cfg = bench_config(a, samples, ["tensorboard"] if kind == "tensorboard" else [])
            run = grid.find_run(cfg, a.model, "bench", str(samples))
            folder = work / f"{kind}{rep}"
            folder.mkdir()
            os.environ["PYTHONPATH"] = os.pathsep.join(([str(blocker)] if kind == "absent" else [])
                                                       + [x for x in [python_path] if x])
            cwd = os.getcwd()
            os.chdir(folder)
            subsets.write_subset(index, "bench", a.pool_size, 0, manifest.parent)
            start = time.perf_counter()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            try:
                train.launch(cfg, run, manifest, folder / "run.json", log_file=folder / "train.log")
            finally:
                os.chdir(cwd)
                os.environ["PYTHONPATH"] = python_path
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            cpus[kind].append(cpu)
            tb = folder / train.run_dir(run) / train.OPENCLIP_NAME / "tensorboard"
            events = list(tb.glob("events.out.tfevents.*")) if tb.is_dir() else []
            walls[kind].append(wall)
            print(f"repeat {rep} {kind:11s}: wall {wall:6.1f} s, CPU {cpu:6.1f} s for {a.steps} steps; "
                  f"event files: {len(events)}",
                  flush=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpus.items()}
    print(f"\nmodel {a.model}, batch {a.batch_size}, {a.steps} steps over {a.epochs} epochs, "
          f"{a.repeats} repeats (medians):")
    for k, v in med.items():
        print(f"  {k:11s}: wall {v:6.2f} s ({100 * (v / med['absent'] - 1):+.1f} % vs absent), "
              f"CPU {med_cpu[k]:6.2f} s ({100 * (med_cpu[k] / med_cpu['absent'] - 1):+.1f} %)")
    direct(a.steps, a.epochs, work)
    return 0


def direct(steps: int, epochs: int, work: Path) -> None:
    code = ("import time, torch; t = time.perf_counter(); import torch.utils.tensorboard; "
            "print(time.perf_counter() - t)")
    imports = sorted(float(subprocess.check_output([sys.executable, "-c", code], text=True)) for _ in range(5))
    print(f"  import torch.utils.tensorboard after torch: median {statistics.median(imports):.3f} s "
          f"(of 5: {', '.join(f'{x:.3f}' for x in imports)})")
    from torch.utils.tensorboard import SummaryWriter

    per_epoch = steps // epochs
    points = [e * per_epoch + i for e in range(epochs) for i in range(per_epoch) if i % 10 == 0 or i == per_epoch - 1]
    t = time.perf_counter()
    writer = SummaryWriter(str(work / "direct_tb"))
    for step in points:
        for name in ("data_time", "batch_time", "samples_per_second", "scale", "lr", "loss"):
            writer.add_scalar(f"train/{name}", 1.0, step)
    writer.close()
    print(f"  SummaryWriter: open, {len(points)} x 6 scalars, close: {time.perf_counter() - t:.3f} s")
    return None


if __name__ == "__main__":
    sys.exit(main())
