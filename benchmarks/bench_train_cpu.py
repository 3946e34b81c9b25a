"""CPU seconds of one training job as the pipeline runs it, for two or more clipscale sources.

    .venv/bin/python benchmarks/bench_train_cpu.py --source before=/path/to/old/src --source after=src
    .venv/bin/python benchmarks/bench_train_cpu.py --samples 30k --repeats 2 --workdir /tmp/btc

Makes a small world pool (32 px, --pool-size samples, shards of 1,000) and its subset manifest,
then trains the same run of the embedded default (config/config.yaml's train settings: batch
256, workers 0, 1 thread, its checkpoints; --model, default vit-xs) with ``clipscale.train.launch``
(the rule's call: a ``python -m clipscale.train`` process) once per source and repeat, the
sources interleaved. The training process imports clipscale from that source (PYTHONPATH), so
the figures compare code, not machines. Printed per run: CPU seconds of the training process
(user + sys, its children included), wall seconds, and the run record's training seconds. CPU
time, not wall: on a shared machine the wall time stretches with other jobs' load. Then whether
every run's losses.csv (the loss of each step) is the same text: a change to the data path that
keeps the batches bit-identical keeps them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", action="append", default=[],
                   help="NAME=SRC_DIR: a clipscale source to run the job with (repeatable; default: this one)")
    p.add_argument("--model", default="vit-xs")
    p.add_argument("--samples", default="30k", help="samples seen by the run (e.g. 30k, 90k)")
    p.add_argument("--pool-size", type=int, default=12000)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--workdir", help="keep data and runs here (default: a temporary folder)")
    a = p.parse_args(argv)

    import tempfile

    import yaml

    from bench_train import make_data
    from clipscale import config as config_mod
    from clipscale import grid, train

    sources = dict(s.split("=", 1) for s in a.source) or {"this": str(ROOT / "src")}
    sources = {k: str(Path(v).absolute()) for k, v in sources.items()}
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench_train_cpu_")).absolute()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # manifests name their shards relative to the working directory
    manifest = make_data(work, a.pool_size, 32)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["world"] = {**cfg["world"], "pool_size": a.pool_size}
    cfg["scales"] = {"bench": a.pool_size}
    cfg["grid"] = {**cfg["grid"], "models": [a.model], "scales": ["bench"], "samples_seen": [a.samples]}
    cfg["train"]["device"] = "cpu"
    cfg = config_mod.validate(cfg, "benchmark config")
    run = grid.runs(cfg)[0]  # the only one (its schedule: the config's)
    print(f"bench_train_cpu: {run.name}, {grid.hparams(cfg, run)['samples_seen_exact']} samples, "
          f"load average {os.getloadavg()[0]:.1f}")
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in sources}
    losses: dict[str, list[str]] = {k: [] for k in sources}
    path_before = os.environ.get("PYTHONPATH")
    for rep in range(a.repeats):
        for name, src in sources.items():
            shutil.rmtree(train.run_dir(run), ignore_errors=True)  # a fresh run, not a resume
            out = work / f"{name}{rep}.json"
            os.environ["PYTHONPATH"] = src + (os.pathsep + path_before if path_before else "")
            cpu0, t0 = children_cpu(), time.perf_counter()
            train.launch(cfg, run, manifest, out, log_file=work / f"{name}{rep}.log")
            cpu, wall = children_cpu() - cpu0, time.perf_counter() - t0
            record = json.loads(out.read_text())
            losses[name].append((train.run_dir(run) / train.LOSSES_NAME).read_text())
            results[name].append((cpu, wall, record.get("seconds_this_attempt", float("nan"))))
            print(f"  repeat {rep} {name:8s} CPU {cpu:7.1f} s  wall {wall:7.1f} s  "
                  f"training (run record) {results[name][-1][2]:7.1f} s  load {os.getloadavg()[0]:.1f}", flush=True)
    if path_before is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = path_before
    print("medians:")
    for name, rows in results.items():
        print(f"  {name:8s} CPU {statistics.median(r[0] for r in rows):7.1f} s  "
              f"wall {statistics.median(r[1] for r in rows):7.1f} s")
    first = next(iter(losses.values()))[0]
    same = all(text == first for runs in losses.values() for text in runs)
    print(f"every run's losses.csv ({len(first.splitlines())} lines) the same, bit for bit: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
