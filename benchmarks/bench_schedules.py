"""What the const-cooldown schedule saves next to the paper's cosine one (grid.schedules).

    .venv/bin/python benchmarks/bench_schedules.py                       # the paper's grid, the default's
    .venv/bin/python benchmarks/bench_schedules.py --workdir WD          # + measured job-seconds of a run
    .venv/bin/python benchmarks/bench_schedules.py --fraction 0.1

Prints three tables:

1. The paper's grid (Table 18, shipped in clipscale/data/reference): per (model, data) with
   several samples-seen cells, the GPU-hours the paper spent (cosine: every cell from scratch)
   and an estimate for const-cooldown (the largest cell's GPU-hours, plus each smaller cell's
   cooldown at the largest cell's GPU-hours per sample). An estimate: the paper's smaller runs
   used other batch sizes and GPU counts than its 34B runs.
2. A config's grid (default config/config.yaml): samples the training jobs draw, and GMAC,
   per schedule (exact: whole batches; grid.study_samples).
3. With --workdir (a finished run with grid.schedules: [cosine, const-cooldown]): the measured
   training job-seconds per schedule, from the train rules' benchmark files.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from clipscale import config as config_mod  # noqa: E402
from clipscale import grid, models, reference  # noqa: E402


def paper_gpu_hours(fraction: float) -> pd.DataFrame:
    t = reference.load_hparams()
    rows = []
    for (model, data), g in t.groupby(["model", "data"], sort=False):
        if len(g) < 2:
            continue
        g = g.sort_values("samples_seen_exact")
        trunk = g.iloc[-1]
        per_sample = trunk["gpu_hours"] / trunk["samples_seen_exact"]
        cooldowns = sum(fraction * r["samples_seen_exact"] * per_sample for _, r in g.iloc[:-1].iterrows())
        rows.append({"model": model, "data": data, "cells": ", ".join(g["samples_seen"]),
                     "cosine_gpu_h": float(g["gpu_hours"].sum()),
                     "const_cooldown_gpu_h": float(trunk["gpu_hours"] + cooldowns)})
    out = pd.DataFrame(rows)
    out["saving"] = 1 - out["const_cooldown_gpu_h"] / out["cosine_gpu_h"]
    return out


def config_compute(path: Path, fraction: float | None) -> pd.DataFrame:
    raw = config_mod.load(path)
    rows, per_sample = [], {}
    for schedule in grid.SCHEDULES:
        cfg = copy.deepcopy(raw)
        cfg["grid"]["schedules"] = [schedule]
        if fraction is not None:
            cfg["train"]["cooldown"] = {**cfg["train"].get("cooldown", {}), "fraction": fraction}
        cfg = config_mod.validate(cfg, str(path))
        samples = gmac = 0.0
        for run in grid.runs(cfg):
            if run.model not in per_sample:  # measured once per model (custom models)
                per_sample[run.model] = models.gmac_per_sample(cfg, run.model, None)
            trained = grid.hparams(cfg, run)["samples_trained_exact"]
            samples += trained
            gmac += trained * per_sample[run.model]
        rows.append({"schedule": schedule, "runs": len(grid.runs(cfg)), "samples_trained": int(samples),
                     "gmac_trained": gmac})
    out = pd.DataFrame(rows)
    out["vs_cosine"] = out["samples_trained"] / out["samples_trained"].iloc[0]
    return out


def measured(workdir: Path) -> pd.DataFrame:
    rows = []
    for tsv in sorted((workdir / "results" / "benchmarks").glob("train*/**/*.tsv")):
        bench = pd.read_csv(tsv, sep="\t")
        rel = tsv.relative_to(workdir / "results" / "benchmarks")
        schedule = grid.CONST_COOLDOWN if grid.COOLDOWN_SUFFIX in str(rel) else grid.COSINE
        rows.append({"schedule": schedule, "job": str(rel), "s": float(bench["s"].iloc[-1])})
    if not rows:
        raise SystemExit(f"no training benchmark files under {workdir}/results/benchmarks/train*/")
    df = pd.DataFrame(rows)
    return df.groupby("schedule").agg(jobs=("s", "size"), job_seconds=("s", "sum")).reset_index()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", type=Path, default=ROOT / "config" / "config.yaml")
    p.add_argument("--fraction", type=float, default=None,
                   help="cooldown fraction (default: the config's train.cooldown.fraction; 0.2 for the paper's grid)")
    p.add_argument("--workdir", type=Path, help="a finished run of both schedules: measured job-seconds")
    a = p.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)  # open_clip's "no pretrained weights" per model
    pd.set_option("display.width", 160)
    paper = paper_gpu_hours(a.fraction or 0.2)
    print(f"1. The paper's grid (Table 18), cooldown fraction {a.fraction or 0.2}:")
    print(paper.to_string(index=False, float_format=lambda v: f"{v:,.3f}" if v < 1 else f"{v:,.0f}"))
    total_cos, total_cc = paper["cosine_gpu_h"].sum(), paper["const_cooldown_gpu_h"].sum()
    print(f"   total: cosine {total_cos:,.0f} GPU-h, const-cooldown about {total_cc:,.0f} GPU-h "
          f"({1 - total_cc / total_cos:.1%} less)\n")
    print(f"2. {a.configfile}: what the training jobs draw")
    print(config_compute(a.configfile, a.fraction).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if a.workdir:
        print(f"\n3. {a.workdir}: measured training job-seconds")
        print(measured(a.workdir).to_string(index=False, float_format=lambda v: f"{v:,.0f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
