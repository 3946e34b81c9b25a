"""Seeds (grid.seeds) and intervals that survive few points (issue 30): runs and paths per seed,
the bootstrap by cells, the t-interval on few computes, the prediction interval for one run."""

from __future__ import annotations

import copy
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from clipscale import config as cfg_mod
from clipscale import fit, grid, paths, shaping, train

REPO = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _config(seeds: int | None = None, schedules=None) -> dict:
    c = copy.deepcopy(DEFAULT)
    c["fit"]["comparisons"] = []
    if seeds is not None:
        c["grid"]["seeds"] = seeds
    if schedules is not None:
        c["grid"]["schedules"] = schedules
    return cfg_mod.validate(c)


# ---------------------------------------------------------------------------------------------
# the grid


def test_one_seed_keeps_every_run_path_and_setting():
    """grid.seeds 1 (the default) is the grid as it was: the same runs, wildcards, paths,
    open_clip seed and shaping parameters (the embedded default's cache stays valid)."""
    plain, one = _config(), _config(seeds=1)
    assert grid.runs(plain) == grid.runs(one)
    names = [r.name for r in grid.runs(one)]
    assert names[:3] == ["vit-xs/3k/10k-cooldown", "vit-xs/3k/30k-cooldown", "vit-xs/3k/90k-cooldown"]
    assert all("seed" not in n for n in names) and len(names) == 27
    run = grid.runs(one)[0]
    assert paths.fill(paths.RUN_DONE, **run.wildcards) == "results/train/vit-xs/3k/10k-cooldown/run.json"
    hp = grid.hparams(one, run)
    assert train.open_clip_args(one, run, {"url": "x"}, hp)[
        train.open_clip_args(one, run, {"url": "x"}, hp).index("--seed") + 1] == str(DEFAULT["seed"])
    assert shaping.train(one, run)["seed"] == DEFAULT["seed"]


@pytest.mark.parametrize("schedules", [["cosine"], ["const-cooldown"], ["cosine", "const-cooldown"]])
def test_seeds_repeat_every_cell_on_paths_of_their_own(schedules):
    one, three = _config(1, schedules), _config(3, schedules)
    runs1, runs3 = grid.runs(one), grid.runs(three)
    assert len(runs3) == 3 * len(runs1)
    assert set(runs1) <= set(runs3)  # seed 0 is the single-seed grid's run: adding seeds retrains nothing
    done = [paths.fill(paths.RUN_DONE, **r.wildcards) for r in runs3]
    assert len(set(done)) == len(done)  # every run its own directory
    for r in runs3:
        assert grid.Run.from_wildcards(**r.wildcards) == r  # the wildcards say which seed
        assert grid.find_run(three, **r.wildcards) == r
        assert r.cell in runs1 and r.cell.seed == 0
        args = train.open_clip_args(three, r, {"url": "x"}, grid.hparams(three, r))
        assert args[args.index("--seed") + 1] == str(DEFAULT["seed"] + r.seed)
        assert shaping.train(three, r)["seed"] == DEFAULT["seed"] + r.seed
        # a seed repeats its cell's settings exactly (but the seed)
        assert {k: v for k, v in grid.hparams(three, r).items()} == grid.hparams(one, r.cell)
        if r.seed == 0:
            assert shaping.train(three, r) == shaping.train(one, r)
    assert {r.wildcards["samples"] for r in runs3 if r.seed == 2} >= (
        {"90k-seed2"} if "cosine" in schedules else {"90k-cooldown-seed2"})


def test_a_cooldown_branch_starts_from_the_trunk_of_its_own_seed():
    three = _config(3, ["const-cooldown"])
    for r in grid.runs(three):
        trunk = grid.trunk_of(three, r)
        if trunk is None:  # a trunk: its branches are of its seed
            assert all(b.seed == r.seed for b in grid.branches_of(three, r).values())
            assert len(grid.branches_of(three, r)) == 2
        else:
            assert trunk[0].seed == r.seed and trunk[0].samples_seen == 90_000
            assert trunk[1] == grid.trunk_of(_config(1, ["const-cooldown"]), r.cell)[1]


def test_seeds_must_be_a_positive_integer():
    c = copy.deepcopy(DEFAULT)
    c["grid"]["seeds"] = 0
    with pytest.raises(cfg_mod.ConfigError, match="grid.seeds"):
        cfg_mod.validate(c)


def test_wildcards_that_name_no_seed_are_refused():
    with pytest.raises(Exception):
        grid.Run.from_wildcards("vit-s", "3k", "90k-seed")  # no number: not a count either


# ---------------------------------------------------------------------------------------------
# fits with seeds: cells, the bootstrap by cells, the prediction interval


def _table(cells: list[tuple[float, list[float]]], seed_column: bool = True) -> pd.DataFrame:
    rows = []
    for i, (C, errors) in enumerate(cells):
        for k, E in enumerate(errors):
            row = {"source": "ours", "model": f"m{i}", "data": "d", "samples_seen": int(C), "total_gmac": C,
                   "error": E, "final": True, "checkpoint": f"c{i}-{k}", "task": "zeroshot_classification",
                   "dataset": "shapes", "metric": "acc1"}
            if seed_column:
                row["seed"] = k
            rows.append(row)
    return pd.DataFrame(rows)


KEY = {"input": "ours", "source": "ours", "task": "zeroshot_classification", "dataset": "shapes", "metric": "acc1"}
C8 = np.logspace(2, 6, 8)
LAW = 0.9 * C8 ** -0.2


def test_a_cell_is_the_mean_of_its_seeds_and_one_seed_fits_as_before():
    spread = [0.8, 1.0, 1.2]  # seeds around the law: the cell means are on it
    seeded = _table([(c, [e * s for s in spread]) for c, e in zip(C8, LAW)])
    f = fit.fit_points(seeded, "direct", KEY, bootstrap=100)
    assert len(f.points) == 8 and f.n_runs == 24 and f.seeds == 3
    assert f.params["alpha"] == pytest.approx(-0.2, abs=1e-9)  # through the means
    assert f.seed_var > 0
    # one seed per cell: the same fit, draws and intervals as a table without the seed column
    single = fit.fit_points(_table([(c, [e]) for c, e in zip(C8, LAW * 1.01 ** np.arange(8))]), "binned",
                            KEY, bootstrap=50)
    plain = fit.fit_points(_table([(c, [e]) for c, e in zip(C8, LAW * 1.01 ** np.arange(8))], seed_column=False),
                           "binned", KEY, bootstrap=50)
    assert single.draws == plain.draws and single.params == plain.params and single.seeds == 1


def test_the_bootstrap_by_cells_carries_the_seed_noise():
    """Seed 0 alone lies exactly on the law (a zero-width bootstrap interval); with its other
    seeds around it, the cells' resampled seeds move the law: α's interval opens, and the
    prediction interval for one run is wider than the law's band."""
    seeded = _table([(c, [e, e * 0.8, e * 1.2]) for c, e in zip(C8, LAW)])
    first = seeded[seeded["seed"] == 0]
    one = fit.fit_points(first, "direct", KEY, bootstrap=200)
    lo1, hi1 = one.param_interval("alpha")
    assert hi1 - lo1 == pytest.approx(0, abs=1e-9)
    allseeds = fit.fit_points(seeded, "direct", KEY, bootstrap=200)
    lo, hi = allseeds.param_interval("alpha")
    assert lo < -0.2 < hi and hi - lo > 0.005
    assert allseeds.params["alpha"] == pytest.approx(one.params["alpha"], abs=1e-9)
    # one new run: its scatter around the law is the seeds' (±20 %), far beyond the law's band
    C = np.array([1e6])
    blo, bhi = allseeds.interval(C)
    plo, phi = allseeds.prediction_interval(C)
    assert plo[0] < blo[0] and phi[0] > bhi[0]
    law = 0.9 * 1e6 ** -0.2
    assert plo[0] < 0.85 * law and phi[0] > 1.15 * law
    # the table says so
    coef = fit.coefficients_frame([allseeds]).iloc[0]
    assert coef["seeds"] == 3 and coef["n_runs"] == 24 and coef["interval"] == "bootstrap"
    assert coef["seed_sd_log"] == pytest.approx(np.std(np.log10([1, 0.8, 1.2]), ddof=1), rel=1e-6)


def test_fit_table_and_predictions_carry_the_prediction_interval():
    seeded = _table([(c, [e, e * 0.9, e * 1.1]) for c, e in zip(C8, LAW)])
    fits = fit.fit_table(seeded, input_name="ours", bootstrap=50, methods=["paper", "pareto"])
    pred = fit.predictions_frame(fits, [{"model": "x", "samples_seen": 10**7, "samples_seen_label": "10M",
                                         "gmac_per_sample": 1.0, "total_gmac": 1e7}])
    assert len(pred) == 2
    for _, p in pred.iterrows():
        assert p["error_pi_lo"] < p["error_lo"] <= p["error"] <= p["error_hi"] < p["error_pi_hi"]
        assert p["value_pi_lo"] == pytest.approx(100 * (1 - p["error_pi_hi"]))
    assert "one run % (PI)" in fit.predictions_markdown(pred)


# ---------------------------------------------------------------------------------------------
# the t-interval on few computes


def test_three_points_get_the_t_interval_of_their_line():
    C = np.array([1e9, 1e10, 1e11])
    E = np.array([0.5, 0.3, 0.22])
    f = fit.fit_points(_table([(c, [e]) for c, e in zip(C, E)], seed_column=False), "direct", KEY, bootstrap=400)
    assert f.interval_method == "t" and f.line["df"] == 1
    # the textbook interval: slope ± t(0.975, n - 2) · se, from scipy's regression
    reg = stats.linregress(np.log10(C), np.log10(E))
    t = stats.t.ppf(0.975, 1)
    assert f.params["alpha"] == pytest.approx(reg.slope)
    assert f.param_interval("alpha") == pytest.approx((reg.slope - t * reg.stderr, reg.slope + t * reg.stderr))
    blo, bhi = 10 ** (reg.intercept - t * reg.intercept_stderr), 10 ** (reg.intercept + t * reg.intercept_stderr)
    assert f.param_interval("beta") == pytest.approx((blo, bhi))
    # the band at x0 and the prediction interval (one more run's residual variance)
    x0 = 12.0
    y0 = reg.intercept + reg.slope * x0
    s = math.sqrt(np.sum((np.log10(E) - (reg.intercept + reg.slope * np.log10(C))) ** 2) / 1)
    sxx = np.sum((np.log10(C) - np.log10(C).mean()) ** 2)
    half = t * s * math.sqrt(1 / 3 + (x0 - np.log10(C).mean()) ** 2 / sxx)
    half_pi = t * s * math.sqrt(1 + 1 / 3 + (x0 - np.log10(C).mean()) ** 2 / sxx)
    lo, hi = f.interval([1e12])
    assert (lo[0], hi[0]) == pytest.approx((10 ** (y0 - half), 10 ** (y0 + half)))
    plo, phi = f.prediction_interval([1e12])
    assert (plo[0], phi[0]) == pytest.approx((10 ** (y0 - half_pi), 10 ** (y0 + half_pi)))
    # its draws (comparisons, crossings, bands) follow the same t distribution
    a = np.array([d["alpha"] for d in f.draws])
    assert len(a) >= 390
    assert np.median(a) == pytest.approx(reg.slope, abs=0.5 * reg.stderr)
    inside = np.mean((a > reg.slope - t * reg.stderr) & (a < reg.slope + t * reg.stderr))
    assert 0.9 < inside < 0.99
    assert fit.coefficients_frame([f]).iloc[0]["interval"] == "t"


def test_points_exactly_on_a_line_get_a_zero_width_t_interval_not_an_error():
    """A task whose few runs lie on one power law exactly has s = 0: every draw is that line.
    Seen on the cluster rehearsal's tiny runs, whose errors on a task were all 1.0 (numpy's
    multivariate normal: 'Matrix is not positive definite', the fit job failed)."""
    C = np.array([1e9, 1e10, 1e11])
    f = fit.fit_points(_table([(c, [1.0]) for c in C], seed_column=False), "direct", KEY, bootstrap=50)
    assert f.interval_method == "t" and f.line["s"] == 0 and f.params["alpha"] == 0
    assert f.param_interval("alpha") == (0, 0) and len(f.draws) == 50


def test_five_computes_keep_the_bootstrap_and_the_threshold_is_configurable():
    pts = _table([(c, [e]) for c, e in zip(C8[:5], LAW[:5] * [1.0, 1.02, 0.99, 1.01, 0.98])], seed_column=False)
    assert fit.fit_points(pts, "direct", KEY, bootstrap=50).interval_method == "bootstrap"
    f = fit.fit_points(pts, "direct", KEY, bootstrap=50, min_bootstrap_computes=6)
    assert f.interval_method == "t" and f.line["df"] == 3
    # two points: a line, but no interval at all (0 degrees of freedom), not a fake one
    two = fit.fit_points(pts.iloc[:2], "direct", KEY, bootstrap=50)
    assert two.interval_method == "t" and all(math.isnan(v) for v in two.param_interval("alpha"))
    assert two.draws == []
    assert fit.FitSettings.of({"min_bootstrap_computes": 4}).min_bootstrap_computes == 4
    assert fit.FitSettings.of({}).min_bootstrap_computes == 5


# ---------------------------------------------------------------------------------------------
# the DAG


def _train_jobs(tmp_path: Path, seeds: int) -> int:
    over = tmp_path / f"seeds{seeds}.yaml"
    over.write_text(yaml.safe_dump({"grid": {"seeds": seeds}, "finetune": {"enabled": False}}))
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    proc = subprocess.run([snakemake, "-n", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path / f"w{seeds}"),
                           "--configfile", str(REPO / "tests" / "data" / "ci.yaml"), str(over)],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats_ = re.search(r"^train\s+(\d+)$", proc.stdout, re.MULTILINE)
    assert stats_, proc.stdout[-3000:]
    jobs = set(re.findall(r"^\s+output: (results/train/\S+/run\.json)$", proc.stdout, re.MULTILINE))
    assert len(jobs) == int(stats_.group(1))
    return int(stats_.group(1))


def test_three_seeds_make_three_times_the_training_jobs(tmp_path):
    one, three = _train_jobs(tmp_path, 1), _train_jobs(tmp_path, 3)
    assert one == 8 and three == 3 * one


# ---------------------------------------------------------------------------------------------
# the results table


def _result(path: Path, samples: str, accuracy: float) -> Path:
    import json

    from clipscale.evaluate.plan import Target

    target = Target("ours", "vit-xs", "3k", samples, "4", "shapes", "zeroshot_classification")
    row = {"source": "ours-cooldown", "model": "ViT-XS", "arch_id": "vit-xs", "data": "world-3k",
           "samples_seen": 10240, "samples_seen_label": "10k", "gmac_per_sample": 0.001, "total_gmac": 10.24,
           "epoch": 4, "final": True, "checkpoint": f"results/train/vit-xs/3k/{samples}/epoch_4.pt", "data_size": 3000}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"target": target.__dict__, "row": row, "status": "ok",
                                "metrics": {"acc1": accuracy}, "failures": [], "undefined": {}}))
    return path


def test_the_results_table_has_a_seed_column_only_with_seeds(tmp_path):
    from clipscale import evaluate, table

    cfg = _config(3)
    files = [_result(tmp_path / f"{s}.json", s, a) for s, a in (("10k-cooldown", 60.0), ("10k-cooldown-seed1", 50.0),
                                                               ("10k-cooldown-seed2", 55.0))]
    df = evaluate.aggregate(cfg, files, tmp_path / "t.parquet", tmp_path / "t.csv", tmp_path / "log.txt")
    back = table.read_table(tmp_path / "t.parquet")
    assert sorted(back["seed"].tolist()) == [0, 1, 2] and str(back["seed"].dtype) == "Int64"
    assert len(df) == 3
    # the fit sees one cell of three seeds: its mean error
    f = fit.fit_table(pd.concat([back, back.assign(samples_seen=30720, samples_seen_label="30k", total_gmac=30.72,
                                                   checkpoint=back["checkpoint"] + "x", error=back["error"] - 0.1)]),
                      input_name="ours", bootstrap=10, methods=["paper"])[0]
    assert len(f.points) == 2 and f.n_runs == 6 and f.seeds == 3
    assert f.points["error"].tolist() == pytest.approx([0.45, 0.35])  # by compute
    # one seed: the table as it always was, no seed column
    single = evaluate.aggregate(_config(1), files[:1], tmp_path / "s.parquet", tmp_path / "s.csv", tmp_path / "s.txt")
    assert "seed" not in single.columns and "seed" not in table.read_table(tmp_path / "s.parquet").columns
