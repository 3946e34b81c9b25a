"""results/ is a cache a researcher can trust: in a finished workdir, a changed setting reruns
exactly the jobs it shapes (and what depends on them), a setting that only says how a job runs
reruns nothing, and reordering the config's keys reruns nothing.

Each test writes a changed copy of tests/data/ci.yaml and asks Snakemake what it would run
(``-n``) in the workdir the whole DAG was run in (the session's ``finished_workdir``).
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import CI_CONFIG, run_snakemake

from clipscale import config as cs_config
from clipscale import figures, grid
from clipscale.finetune import plan

pytestmark = pytest.mark.slow

BASE = yaml.safe_load(CI_CONFIG.read_text())


def scheduled(workdir: Path, cfg: dict, tmp_path: Path) -> list[tuple[str, dict]]:
    """(rule, wildcards) of every job a dry run with ``cfg`` would run in ``workdir``."""
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = run_snakemake(workdir, "-n", configfile=path).stdout
    if "Nothing to be done" in out:
        return []
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if not m or m.group(1) == "all":
            continue
        wc = re.search(r"^\s*wildcards: (.*)$", block, re.M)
        wildcards = dict(kv.split("=", 1) for kv in wc.group(1).split(", ")) if wc else {}
        jobs.append((m.group(1), wildcards))
    return jobs


def rules(jobs) -> Counter:
    return Counter(rule for rule, _ in jobs)


def changed(**sections) -> dict:
    cfg = copy.deepcopy(BASE)
    for section, values in sections.items():
        if isinstance(values, dict):
            cfg[section] = {**cfg.get(section, {}), **values}
        else:
            cfg[section] = values
    return cfg


def _validated(cfg: dict) -> dict:
    return cs_config.validate(copy.deepcopy(cfg))


# the analyses of each input's results table (clipscale.analysis)
ANALYSES = {"fit_extrapolation", "fit_comparison", "fit_bin_winners", "fit_compute_optimal"}


def figure_names(cfg: dict, compute_only: bool = False, inputs: str | None = None) -> set[str]:
    """Figures of the config: of the compute kind only, or those that read a results table
    (``inputs``: "ours" or "published"; overlap figures read the dedup overlap table)."""
    specs = figures.figure_specs(_validated(cfg))
    return {s.name for s in specs if (not compute_only or s.kind == "compute")
            and (inputs is None or (inputs in s.inputs and s.kind != "overlap"))}


def drawn(jobs) -> set[str]:
    """The configured figures (rules figure_<kind>, wildcard figure) a dry run would draw."""
    return {wc["figure"] for rule, wc in jobs if rule.startswith("figure_") and "figure" in wc}


def test_changed_learning_rate_reruns_training_and_what_follows(finished_workdir, tmp_path):
    cfg = changed(train={"lr": 0.0005})
    jobs = scheduled(finished_workdir, cfg, tmp_path)
    n_runs = len(grid.runs(_validated(cfg)))
    assert rules(jobs)["train"] == n_runs
    assert rules(jobs)["evaluate"] == n_runs  # one job per (final) checkpoint
    assert rules(jobs)["aggregate_results"] == 1
    assert [wc for rule, wc in jobs if rule == "fit_input"] == [{"input": "ours"}]
    assert drawn(jobs) == figure_names(cfg, inputs="ours")
    assert rules(jobs)["figure_training_curves"] == 1  # every run's loss, drawn again
    assert not {"make_world", "subset", "index_pool", "model_profile", "published_table"} & set(rules(jobs))
    assert not any(rule.startswith("dedup") for rule in rules(jobs))


def test_changed_fit_bins_refits_and_redraws_only(finished_workdir, tmp_path):
    cfg = changed(fit={"bins": 2})
    jobs = scheduled(finished_workdir, cfg, tmp_path)
    assert [wc["input"] for rule, wc in jobs if rule == "fit_input"] == ["ours"]  # published.enabled: false
    assert set(rules(jobs)) <= {"fit_input", "fit_collect", "figure_compute"} | ANALYSES
    assert drawn(jobs) == figure_names(cfg, compute_only=True)
    assert "figure_training_curves" not in rules(jobs)  # it reads the runs, not the fits


def test_one_runs_override_reruns_that_runs_chain_only(finished_workdir, tmp_path):
    cfg = changed(train={"overrides": [{"model": "vit-s", "scale": "1k", "samples_seen": "2k", "lr": 0.001}]})
    jobs = scheduled(finished_workdir, cfg, tmp_path)
    one = {"model": "vit-s", "scale": "1k", "samples": "2k"}
    assert [wc for rule, wc in jobs if rule == "train"] == [one]
    evals = [wc for rule, wc in jobs if rule == "evaluate"]
    assert len(evals) == 1 and {k: evals[0][k] for k in one} == one
    assert rules(jobs)["aggregate_results"] == 1
    assert [wc for rule, wc in jobs if rule == "fit_input"] == [{"input": "ours"}]


def test_changed_linear_probe_shots_rerun_evaluations_not_training(finished_workdir, tmp_path):
    """Every checkpoint's evaluation job reruns; inside it only the linear probes are computed
    again (the other results' fingerprints match: tests/test_evaluate.py)."""
    cfg = changed(evaluate={"linear_probe_k": [2]})
    jobs = scheduled(finished_workdir, cfg, tmp_path)
    assert rules(jobs)["evaluate"] == len(grid.runs(_validated(cfg)))
    assert set(rules(jobs)) <= {"evaluate", "aggregate_results", "fit_input", "fit_collect"} | ANALYSES | {
        rule for rule in rules(jobs) if rule.startswith("figure_")}


def test_changed_dedup_radius_reruns_matching_and_its_reports_only(finished_workdir, tmp_path):
    cfg = changed(dedup={"radius": 2})
    jobs = scheduled(finished_workdir, cfg, tmp_path)
    assert set(rules(jobs)) <= {"dedup_match", "dedup_overlap", "dedup_contact_sheet",
                                "dedup_planted_recall", "figure_overlap"}
    assert {"dedup_match", "dedup_overlap", "dedup_planted_recall"} <= set(rules(jobs))


def test_changed_fine_tuning_recipe_reruns_fine_tuning_not_training_nor_evaluation(finished_workdir, tmp_path):
    """Fine-tuning has its own table: the results table, our fits and the figures of other
    metrics never wait on a fine-tuning job (nor rerun after one)."""
    cfg = changed(finetune={"recipe": {**BASE["finetune"]["recipe"], "lr": 0.0005}})
    jobs = scheduled(finished_workdir, cfg, tmp_path)
    tuned = [wc for rule, wc in jobs if rule == "finetune"]
    assert len(tuned) == len(plan.target_paths(_validated(cfg))) == 4  # every (checkpoint, protocol)
    assert not {"train", "evaluate", "make_world", "subset", "aggregate_results", "fit_input"} & set(rules(jobs))
    assert rules(jobs)["aggregate_finetune"] == 1
    assert drawn(jobs) == {"finetune_classification_ours", "finetune_patching_ours"}
    # the patching's control tolerance reruns the patching jobs only (their state is resumed:
    # the sweep is computed again, the training is not)
    cfg = changed(finetune={"patching": {**BASE["finetune"]["patching"], "control_tolerance": 2.0}})
    jobs = scheduled(finished_workdir, cfg, tmp_path)
    assert sorted(wc["protocol"] for rule, wc in jobs if rule == "finetune") == ["patching", "patching"]


@pytest.mark.parametrize("how", [
    {"train": {"threads": 2, "workers": 2}},  # 8 batches per checkpoint: 2 workers draw the same
    {"evaluate": {"threads": 2, "workers": 1, "runtime": 99, "mem_mb": 3000}},
    {"finetune": {**BASE["finetune"], "threads": 2, "save_minutes": 1, "gpus_per_node": 0, "runtime": 30,
                  "nproc": 2, "micro_batch_size": 8, "precision": "fp32"}},
    {"train": {"runtime": 999, "mem_mb": 5000, "device": "cpu"}},
])
def test_how_a_job_runs_reruns_nothing(finished_workdir, tmp_path, how):
    assert scheduled(finished_workdir, changed(**how), tmp_path) == []


def test_reordered_config_keys_rerun_nothing(finished_workdir, tmp_path):
    def reverse(value, top=True):
        if isinstance(value, dict):
            # every mapping reversed, except the downstream sets (their order is the figures' panel order)
            items = list(value.items()) if top is None else list(reversed(value.items()))
            return {k: reverse(v, None if k == "downstream" else False) for k, v in items}
        return value

    assert scheduled(finished_workdir, reverse(BASE), tmp_path) == []


def test_a_changed_label_retrains_nothing(finished_workdir, tmp_path):
    """A label is how figures and tables name a model: its results are relabelled (the label is in
    their rows), nothing is trained, profiled or deduplicated again."""
    cfg = copy.deepcopy(BASE)
    cfg["models"]["vit-xs"]["label"] = "ViT-Tiny"
    jobs = rules(scheduled(finished_workdir, cfg, tmp_path))
    assert jobs["evaluate"] and not {"train", "model_profile", "subset", "make_world"} & set(jobs)
    assert not any(rule.startswith("dedup_") for rule in jobs)


def test_reordered_downstream_sets_redraw_only_the_panels_they_reorder(finished_workdir, tmp_path):
    """The sets' order is the panel order of the figures that show several sets (zeroshot_ours):
    nothing else reruns, and the bottleneck figures keep the main set (group main)."""
    cfg = copy.deepcopy(BASE)
    cfg["downstream"] = dict(reversed(BASE["downstream"].items()))
    jobs = scheduled(finished_workdir, cfg, tmp_path)
    assert set(rules(jobs)) == {"figure_compute"} and drawn(jobs) == {"zeroshot_ours"}


@contextmanager
def moved_away(path: Path):
    """``path`` renamed for the time of a dry run (as deleted), then back as it was."""
    away = path.with_name(path.name + ".away")
    path.replace(away)
    try:
        yield
    finally:
        away.replace(path)


def test_a_deleted_result_or_checkpoint_reruns_what_it_feeds(finished_workdir, tmp_path):
    """Snakemake said "Nothing to be done" for both: a deleted file whose consumers are up to date
    is not remade (each result file is now a target), and checkpoints are no rule's output (a
    check before the DAG moves the record of the job that wrote it aside)."""
    r = finished_workdir / "results"
    result = sorted((r / "eval" / "ours").rglob("*.json"))[0]
    with moved_away(result):
        jobs = scheduled(finished_workdir, BASE, tmp_path)
    source, model, scale, samples, epoch = result.relative_to(r / "eval").parts[:5]
    assert [wc for rule, wc in jobs if rule == "evaluate"] == [
        {"source": source, "model": model, "scale": scale, "samples": samples, "epoch": epoch[len("epoch_"):]}]
    assert rules(jobs)["aggregate_results"] == 1 and not {"train", "finetune"} & set(rules(jobs))

    run_json = r / "train" / model / scale / samples / "run.json"
    record = json.loads(run_json.read_text())
    with moved_away(finished_workdir / record["final_checkpoint"]):
        try:
            jobs = scheduled(finished_workdir, BASE, tmp_path)
            assert not run_json.exists()  # moved aside (".stale") for Snakemake to see
        finally:
            run_json.with_name("run.json.stale").replace(run_json)  # the workdir as it was
    one = {"model": model, "scale": scale, "samples": samples}
    assert one in [wc for rule, wc in jobs if rule == "train"]
    assert {**one, "source": "ours", "epoch": str(record["epochs"])} in [wc for rule, wc in jobs if rule == "evaluate"]
    assert rules(jobs)["aggregate_results"] == 1
    assert not {"make_world", "subset", "index_pool"} & set(rules(jobs))


# the finished pipeline itself (tests/data/ci.yaml)


def test_every_artifact_is_made(finished_workdir):
    r = finished_workdir / "results"
    cfg = yaml.safe_load(CI_CONFIG.read_text())
    for scale, size in cfg["scales"].items():
        manifest = json.loads((r / "data" / "subsets" / scale / "manifest.json").read_text())
        assert manifest["n_samples"] == size
    runs = sorted(r.glob("train/*/*/*/run.json"))
    assert len(runs) == 8
    for run in runs:
        record = json.loads(run.read_text())
        assert Path(finished_workdir / record["final_checkpoint"]).exists()
        assert record["total_gmac"] > 0
    table = pd.read_parquet(r / "results" / "results.parquet")
    ours = table[table["source"] == "ours"]
    assert ours.groupby(["model", "data", "samples_seen"]).ngroups == 8
    assert set(cfg["downstream"]) <= set(ours["dataset"])
    assert not ours["task"].isin(["finetune", "patching"]).any()  # fine-tuning has its own table
    tuned = pd.read_parquet(r / "results" / "finetune.parquet")  # the two vit-xs 4k runs, both protocols
    assert tuned.groupby(["model", "data", "samples_seen"]).ngroups == 2
    assert set(tuned["metric"]) == {"imagenet_ft_acc1", "ft_acc1", "zeroshot_acc1", "patched_acc1"}
    assert {"finetune_classification_ours", "finetune_patching_ours"} <= {p.stem for p in r.glob("figures/*.png")}
    assert (r / "dedup" / "overlap.csv").exists()
    assert list(r.glob("figures/*.png")) and list(r.glob("figures/*.pdf"))
    for rule_dir in (r / "logs").iterdir():
        assert any(rule_dir.rglob("*.log")), rule_dir


def test_nothing_left_to_do_and_one_figure_reruns_alone(finished_workdir):
    dry = run_snakemake(finished_workdir, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    figure = str(sorted((finished_workdir / "results" / "figures").glob("*.pdf"))[0].relative_to(finished_workdir))
    out = run_snakemake(finished_workdir, "-n", "--forcerun", figure, figure).stdout
    assert "train" not in out.split("Job stats")[-1] and "evaluate " not in out
