"""The compute-optimal analysis (clipscale.compute_optimal): a joint law of error in model size
(GMAC per sample) and samples seen with repeated data, recovered from synthetic runs of known
parameters; the optimum at a budget; the published input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from clipscale import compute_optimal as co

TRUE = {"e": 0.12, "A": 0.15, "a": 0.35, "B": 0.15, "b": 0.45, "r_star": 8.0}  # errors 0.27-0.88
KEY = {"source": "synthetic", "task": "zeroshot_classification", "dataset": "main", "metric": "acc1"}


def synthetic_runs(noise: float = 0.01, seed: int = 1) -> tuple[pd.DataFrame, co.JointLaw]:
    """A grid of 5 model sizes x 4 samples seen x 3 data scales (up to 400 epochs, as LAION-80M
    at 34B), errors from a known law with multiplicative noise."""
    G = np.array([2.0, 6.0, 20.0, 60.0, 200.0])
    D = np.array([1e8, 4e8, 1.6e9, 6.4e9])
    U = {"16M": 1.6e7, "80M": 8e7, "400M": 4e8}
    G0, D0 = float(np.exp(np.log(G).mean())), float(np.exp(np.log(D).mean()))
    law = co.JointLaw(dict(TRUE), G0, D0)
    rng = np.random.default_rng(seed)
    rows = []
    for g in G:
        for d in D:
            for name, u in U.items():
                e = float(law.predict(g, d, u)) * math.exp(noise * rng.standard_normal())
                rows.append({**KEY, "model": f"m{g:g}", "arch_id": f"m{g:g}", "data": name, "samples_seen": int(d),
                             "samples_seen_label": f"{d:.0e}", "gmac_per_sample": g, "total_gmac": g * d,
                             "value": 100 * (1 - e), "error": e, "epoch": pd.NA, "final": True,
                             "checkpoint": f"{g}/{name}/{d}", "data_size": u})
    return pd.DataFrame(rows), law


@pytest.fixture(scope="module")
def published():
    from clipscale.reference import load_published

    return load_published()


@pytest.fixture(scope="module")
def synthetic_fit():
    df, law = synthetic_runs()
    return co.fit_joint(df, KEY, bootstrap=120, ci=0.95, seed=0), law


def test_effective_data_counts_repeats_less():
    # no repetition: D' = D; one epoch exactly: D' = D; many epochs: D' -> U (1 + R*)
    assert co.effective_data(5e7, 1e8, 10.0) == pytest.approx(5e7)
    assert co.effective_data(1e8, 1e8, 10.0) == pytest.approx(1e8)
    assert co.effective_data(1e8 * 1000, 1e8, 10.0) == pytest.approx(1e8 * 11, rel=1e-6)
    # a few repetitions are worth almost fresh data (R = 1: 1 + 10 (1 - e^-0.1) = 1.95 epochs' worth)
    assert co.effective_data(2e8, 1e8, 10.0) == pytest.approx(1.95163e8, rel=1e-4)
    assert co.effective_data(3e9, np.nan, 10.0) == 3e9 and co.effective_data(3e9, 1e8, math.inf) == 3e9


def test_synthetic_parameters_recovered_within_their_intervals(synthetic_fit):
    fit, law = synthetic_fit
    assert len(fit.draws) >= 100 and fit.r_star_fixed is None  # the runs repeat data: R* is fitted
    row = co.law_row(fit, "synthetic")
    for p in co.PARAMS:
        assert row[f"{p}_lo"] <= TRUE[p] <= row[f"{p}_hi"], (p, row[p], row[f"{p}_lo"], row[f"{p}_hi"])
    # the exponents themselves are close, not only covered
    assert row["a"] == pytest.approx(TRUE["a"], abs=0.05) and row["b"] == pytest.approx(TRUE["b"], abs=0.05)
    assert row["size_exponent_lo"] <= TRUE["b"] / (TRUE["a"] + TRUE["b"]) <= row["size_exponent_hi"]


def test_synthetic_optimum_recovered_within_its_interval(synthetic_fit):
    fit, law = synthetic_fit
    budgets = [1e9, 1e10, 1e11]
    rows = pd.DataFrame(co.optima(fit, "synthetic", budgets))
    G = fit.points["gmac_per_sample"].to_numpy(float)
    assert set(rows["data"]) == {"16M", "80M", "400M", co.UNLIMITED}
    for r in rows.itertuples():
        g_true, e_true, edge = co.optimal_size(law, [r.budget_gmac], r.data_size, (G.min() / 100, G.max() * 100))
        assert not edge[0] and not r.at_edge
        assert r.gmac_per_sample_lo <= g_true[0] <= r.gmac_per_sample_hi, (r.data, r.budget_gmac, g_true, r)
        assert r.error_lo <= e_true[0] <= r.error_hi
        assert r.samples_seen * r.gmac_per_sample == pytest.approx(r.budget_gmac)
    # less unique data: spend the budget on a larger model (repeated samples are worth less)
    at = rows[rows["budget_gmac"] == 1e11].set_index("data")["gmac_per_sample"]
    assert at["16M"] > at["80M"] > at["400M"] > at[co.UNLIMITED]


def test_unlimited_data_optimum_is_the_closed_form():
    """With D' = D the optimum has Chinchilla's closed form: G_opt = G0 (a A D0^b / (b B G0^b) C^b)^(1/(a+b))."""
    law = co.JointLaw(dict(TRUE), 10.0, 1e9)
    C = np.array([1e9, 1e11, 1e13])
    g, _, edge = co.optimal_size(law, C, math.inf, (1e-3, 1e6))
    p = TRUE
    closed = (p["a"] * p["A"] * law.G0 ** p["a"] / (p["b"] * p["B"] * law.D0 ** p["b"]) * C ** p["b"]) \
        ** (1 / (p["a"] + p["b"]))
    assert not edge.any()
    np.testing.assert_allclose(g, closed, rtol=2e-3)


def test_runs_compared_with_the_optimum(synthetic_fit):
    fit, law = synthetic_fit
    runs = pd.DataFrame(co.compare_runs(fit, "synthetic"))
    assert len(runs) == len(fit.points) and (runs["excess_pts"] >= -1e-6).all()
    # a run at the optimal size has no excess error; the largest model at the smallest samples seen
    # is far too large for its compute
    big = runs[(runs["gmac_per_sample"] == 200.0) & (runs["samples_seen"] == 1e8)]
    assert (big["size_ratio"] > 3).all() and (big["excess_pts"] > 1).all()
    close = runs.loc[(runs["size_ratio"] - 1).abs().idxmin()]
    assert close["excess_pts"] < 0.5


def test_too_few_runs_are_refused():
    df, _ = synthetic_runs()
    one_size = df[df["gmac_per_sample"] == 20.0]
    with pytest.raises(co.ComputeOptimalError, match="1 model size"):
        co.fit_joint(one_size, KEY, bootstrap=0)
    out = co.analyse(one_size, "ours", {"bootstrap": 0})
    assert out["laws"].empty and "no compute-optimal analysis" in co.markdown(out)


def test_published_input(published):
    """The paper's 29 OpenCLIP runs per zero-shot task: a law per task with a fitted repetition
    term (LAION-80M up to 428 epochs); OpenAI's three runs at one samples seen are not fitted."""
    sub = published[(published["dataset"] == "imagenet1k") & (published["metric"] == "acc1")]
    out = co.analyse(sub, "published", {"bootstrap": 40, "ci": 0.95})
    laws = out["laws"].set_index("source")
    assert list(laws.index) == ["published"]  # openai: 1 samples seen value
    law = laws.loc["published"]
    assert law["n_runs"] == 29 and law["repeats"] and law["r_star_fitted"] and law["rmse_ln"] < 0.05
    assert 1 < law["r_star"] < 1e3 and 0.5 < law["size_exponent"] < 1
    opt = out["optima"]
    lim = opt[(opt["data"] == co.UNLIMITED)].set_index("budget_gmac")
    # a larger budget: a larger model and more samples seen
    assert lim["gmac_per_sample"].is_monotonic_increasing and lim["samples_seen"].is_monotonic_increasing
    at = opt[opt["budget_gmac"] == 1e12].set_index("data")["gmac_per_sample"]
    assert at["LAION-80M"] > at["LAION-2B"]
    runs = out["runs"]
    assert len(runs) == 29 and runs["excess_pts"].min() >= -1e-6
    md = co.markdown(out)
    assert "Compute-optimal allocation" in md and "LAION-80M" in md


def test_settings_rerun_only_the_compute_optimal_analysis():
    from clipscale import config as cs_config
    from clipscale import shaping

    base = cs_config.load("config/config.yaml")
    assert base["fit"]["compute_optimal"]["bootstrap"] == 200 and base["fit"]["compute_optimal"]["repeat_decay"] is None
    changed = cs_config.load("config/config.yaml", {"fit": {"compute_optimal": {
        "repeat_decay": 15.4, "budgets_gmac": {"ours": [1e6, 1e7]}}}})
    for name in ("published", "ours"):
        for rule in (shaping.fit, shaping.extrapolation, shaping.comparison, shaping.bin_winners):
            assert rule(base, name) == rule(changed, name), rule
        assert shaping.compute_optimal(base, name) != shaping.compute_optimal(changed, name)
    # our budgets do not rerun the published input's analysis
    ours_budget = cs_config.load("config/config.yaml", {"fit": {"compute_optimal": {"budgets_gmac": {"ours": [1e6]}}}})
    assert shaping.compute_optimal(base, "published") == shaping.compute_optimal(ours_budget, "published")
    assert shaping.compute_optimal(base, "ours")["scales"] == base["scales"]
    with pytest.raises(Exception, match="compute_optimal"):
        cs_config.load("config/config.yaml", {"fit": {"compute_optimal": {"min_runs": 6}}})


def test_pipeline_step_on_our_runs(tmp_path):
    """The rule's step on a results table of our runs (no data_size column: the data scales' sizes
    come from the config's scales, through the rule's params), writing the CSVs and the table."""
    from clipscale import config as cs_config
    from clipscale import shaping
    from clipscale.table import RESULTS_COLUMNS

    df, law = synthetic_runs()
    sizes = {"16M": 1.6e7, "80M": 8e7, "400M": 4e8}
    df = df.assign(source="ours")[RESULTS_COLUMNS]
    table = tmp_path / "results.parquet"
    df.to_parquet(table)
    cfg = cs_config.load("config/config.yaml", {"fit": {"compute_optimal": {"bootstrap": 30,
                                                                            "budgets_gmac": {"ours": [1e9, 1e10]}}}})
    settings = shaping.compute_optimal(cfg, "ours")
    settings["scales"] = sizes  # the synthetic runs' data scales
    out = {k: tmp_path / f"{k}.csv" for k in ("laws", "optima", "runs")}
    co.step(str(table), "ours", settings, str(out["laws"]), str(out["optima"]), str(out["runs"]),
            str(tmp_path / "co.md"))
    laws = pd.read_csv(out["laws"])
    assert len(laws) == 1 and laws["r_star_fitted"].iloc[0] and laws["bootstrap_valid"].iloc[0] >= 25
    assert laws["a"].iloc[0] == pytest.approx(TRUE["a"], abs=0.05)
    opt = pd.read_csv(out["optima"])
    assert sorted(opt["budget_gmac"].unique()) == [1e9, 1e10] and set(opt["data"]) == {*sizes, co.UNLIMITED}
    assert len(pd.read_csv(out["runs"])) == len(df)
    assert "Optimal model size and samples seen per budget" in (tmp_path / "co.md").read_text()


def test_default_budgets_span_the_runs():
    assert co.default_budgets(np.array([1.8e10, 6.6e12])) == [1e11, 1e12, 1e13]
    assert co.default_budgets(np.array([5.4, 746.0])) == [10.0, 100.0, 1000.0]
