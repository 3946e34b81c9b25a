"""The DAG's wiring of a user's pool (no shard is an input file) and the benchmark scripts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_dag
import bench_stages

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


# a user's pool: index and hash jobs rerun when a shard is added, removed or rewritten ---------


def _snakemake(workdir: Path, *args: str) -> str:
    proc = subprocess.run(
        [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", *args,
         "--configfile", str(REPO / "tests" / "data" / "ci.yaml"), str(workdir / "pool.yaml")],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def _would_run(workdir: Path, targets: list[str]) -> set[str]:
    """The outputs of the jobs a dry run schedules for ``targets``."""
    out = _snakemake(workdir, "-n", *targets)
    return set(re.findall(r"^\s+output: (\S+)$", out, re.MULTILINE))


@pytest.mark.slow
def test_user_pool_changes_rerun_the_index_and_only_their_hash_group(small_world, tmp_path):
    pool = tmp_path / "pool"
    shutil.copytree(small_world / "pool", pool)  # 6 shards with parquets
    sets = "".join(f"  {name}: {{path: {small_world / 'downstream' / name}}}\n"
                   for name in ("shapes", "shapes_shifted", "digits", "world_captions"))
    (tmp_path / "pool.yaml").write_text(
        f"pool: {{source: {pool}, name: mine}}\ndedup: {{shards_per_job: 2}}\nfinetune: {{enabled: false}}\n"
        f"downstream:\n{sets}")
    index = "results/data/pool_index.parquet"
    group = "results/dedup/hashes/pool/{:05d}.parquet".format
    targets = [index] + [group(g) for g in range(3)]

    _snakemake(tmp_path, *targets)
    assert _would_run(tmp_path, targets) == set()
    log = (tmp_path / "results/logs/dedup_hash_pool/00001.log").read_text()
    assert "00002.tar" in log and "00003.tar" in log  # the group's shards, from params

    shard = pool / "00003.tar"
    shard.write_bytes(shard.read_bytes())  # rewritten (same bytes, a new mtime)
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 2 * 10**9))
    assert _would_run(tmp_path, targets) == {index, group(1)}
    _snakemake(tmp_path, *targets)

    shutil.copy(pool / "00005.tar", pool / "00006.tar")  # added: a fourth group of one shard
    targets.append(group(3))
    assert _would_run(tmp_path, targets) == {index, group(3)}
    _snakemake(tmp_path, *targets)

    (pool / "00006.tar").unlink()  # removed again: the index reruns, group 3 no longer exists
    targets.remove(group(3))
    assert _would_run(tmp_path, targets) == {index}


# bench_stages: per stage and rule from Snakemake's benchmark files ---------------------------


HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(root: Path, rel: str, seconds: float, cpu: str, end: float, rss: str = "100.5") -> None:
    path = root / "results" / "benchmarks" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{seconds}\t0:00:{int(seconds):02d}\t{rss}\t1\t1\t1\t0\t0\t50\t{cpu}\n")
    os.utime(path, (end, end))


def test_bench_stages_sums_jobs_per_stage_and_rule(tmp_path, capsys):
    t0 = time.time() - 1000
    _bench(tmp_path, "make_world/world.tsv", 10, "9.5", t0 + 10)           # 0-10
    _bench(tmp_path, "index_pool/pool.tsv", 2, "1.5", t0 + 12)             # 10-12
    _bench(tmp_path, "dedup_hash_pool/00000.tsv", 5, "NA", t0 + 20)        # 15-20
    _bench(tmp_path, "dedup_hash_pool/00001.tsv", 6, "4", t0 + 21, "-")    # 15-21
    _bench(tmp_path, "evaluate/ours/m/1k/2k/epoch_1/shapes/zeroshot.tsv", 3, "2", t0 + 30)
    _bench(tmp_path, "fit/published_table.tsv", 1, "1", t0 + 5)            # 4-5
    _bench(tmp_path, "figures/zeroshot_ours.tsv", 2, "1", t0 + 40)         # 38-40
    (tmp_path / "results" / "benchmarks" / "evaluate" / "notes.txt").write_text("not a tsv")
    (tmp_path / "results" / "benchmarks" / "train").mkdir()
    (tmp_path / "results" / "benchmarks" / "train" / "bad.tsv").write_text("no\tcolumns\n1\t2\n")

    jobs = bench_stages.read_jobs(tmp_path)
    assert len(jobs) == 7 and "bad.tsv" in capsys.readouterr().err
    assert {j.rule for j in jobs} == {"make_world", "index_pool", "dedup_hash_pool", "evaluate",
                                      "fit", "figures"}
    stages = {s.name: (s, {r.name: r for r in rules}) for s, rules in bench_stages.by_stage(jobs)}
    assert list(stages) == ["data", "dedup", "evaluate", "fit", "figures"]
    data, rules = stages["data"]
    assert data.jobs == 2 and data.job_seconds == 12 and data.cpu_seconds == 11
    assert data.wall_seconds == pytest.approx(12, abs=0.01)
    _, rules = stages["dedup"]
    hash_pool = rules["dedup_hash_pool"]
    assert hash_pool.jobs == 2 and hash_pool.job_seconds == 11
    assert hash_pool.cpu_seconds == 4  # NA is left out, not counted as 0 or NaN
    assert hash_pool.max_rss_mb == 100.5 and hash_pool.wall_seconds == pytest.approx(6, abs=0.01)
    assert hash_pool.start == pytest.approx(t0 + 15, abs=0.01)
    total = bench_stages.summarize("run", jobs)
    assert total.wall_seconds == pytest.approx(40, abs=0.01) and total.job_seconds == 29
    # busy 0-12, 15-21, 27-30, 38-40 (4-5 inside 0-12): idle 3 + 6 + 8 = 17 s
    assert bench_stages.idle_seconds(jobs) == pytest.approx(17, abs=0.01)
    # two snakemake invocations, t0-(t0+22) and (t0+26)-(t0+41): 13 s idle inside, 4 s between
    logs = tmp_path / ".snakemake" / "log"
    logs.mkdir(parents=True)
    for start, end in ((t0, t0 + 22), (t0 + 26, t0 + 41)):
        log = logs / f"{datetime.fromtimestamp(start):%Y-%m-%dT%H%M%S.%f}.snakemake.log"
        log.write_text("")
        os.utime(log, (end, end))
    runs = bench_stages.snakemake_runs(tmp_path)
    assert [(round(a - t0, 3), round(b - t0, 3)) for a, b in runs] == [(0, 22), (26, 41)]
    assert "13 s of no job within them, 4 s between them" in bench_stages.report(jobs, runs)

    assert bench_stages.main([str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^  dedup_hash_pool\s+2\s+11\s+4\s", text, re.MULTILINE), text
    assert re.search(r"^run\s+7\s+29\s", text, re.MULTILINE), text
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0 + 25))
    assert {j.rule for j in bench_stages.read_jobs(tmp_path, since=t0 + 25)} == {"evaluate", "figures"}
    assert bench_stages.main([str(tmp_path), "--since", since]) == 0
    assert re.search(r"^run\s+2\s", capsys.readouterr().out, re.MULTILINE)
    assert bench_stages.main([str(tmp_path / "nothing")]) == 1


def test_bench_stages_repeats_and_stage_names(tmp_path):
    path = tmp_path / "b.tsv"
    path.write_text(HEADER + "1.5\t0:00:01\t10\t1\t1\t1\t0\t0\t50\t1\n"
                    + "2.5\t0:00:02\t30\t1\t1\t1\t0\t0\t50\t2\n")
    assert bench_stages.read_tsv(path) == (4.0, 3.0, 30.0)  # benchmark: repeat(..., 2)
    path.write_text("s\th:m:s\n3\t0:00:03\n")  # an older Snakemake: no cpu_time, no max_rss
    assert bench_stages.read_tsv(path) == (3.0, None, None)
    assert [bench_stages.stage_of(r) for r in (
        "make_world", "index_pool", "subset", "dedup_filter_subset", "model_profile", "train",
        "aggregate_results", "evaluate", "fit_input", "published_table", "figure_compute",
        "something_new")] == ["data", "data", "data", "dedup", "train", "train", "evaluate",
                              "evaluate", "fit", "fit", "figures", "other"]


def test_bench_dag_reads_the_job_stats_table():
    out = ("Building DAG of jobs...\nJob stats:\njob                count\n"
           "---------------  -------\ndedup_hash_pool      232\nindex_pool             1\n"
           "total                233\n\nReasons:\n")
    assert bench_dag.job_stats(out) == {"dedup_hash_pool": 232, "index_pool": 1, "total": 233}


# a run cut into jobs (train.segments): checkpoints evaluated while the run goes on ---------


def _dry_run_jobs(workdir: Path, *args: str) -> dict[str, tuple[str, set[str]]]:
    """output file -> (rule, input files) of every job a dry run schedules."""
    proc = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "-n", "--cores", "2",
                           *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = {}
    for block in re.split(r"^rule ", proc.stdout, flags=re.MULTILINE)[1:]:
        rule = block.split(":", 1)[0]
        inputs = re.search(r"^\s+input: (.*)$", block, re.MULTILINE)
        outputs = re.search(r"^\s+output: (.*)$", block, re.MULTILINE)
        for out in (outputs.group(1).replace(" (update)", "").split(", ") if outputs else []):
            jobs[out] = (rule, set(inputs.group(1).split(", ")) if inputs else set())
    return jobs


def test_const_cooldown_branches_are_jobs_that_wait_for_their_trunk_checkpoint(tmp_path):
    """grid.schedules with both: the cosine runs as before, and per (model, scale) a trunk whose
    first job ends at the branch point, the branch's job waiting for that job only (not for
    the trunk's end); results under their own samples label, fitted and compared as a source."""
    (tmp_path / "cooldown.yaml").write_text(
        "grid: {models: [vit-xs], scales: [1k], samples_seen: [2k, 6k], schedules: [cosine, const-cooldown]}\n"
        "train: {cooldown: {fraction: 0.5}}\nfinetune: {enabled: false}\n")
    jobs = _dry_run_jobs(tmp_path, "results/results/results.parquet", "--configfile",
                         str(REPO / "tests" / "data" / "ci.yaml"), str(tmp_path / "cooldown.yaml"))
    trunk, branch = "results/train/vit-xs/1k/6k-cooldown", "results/train/vit-xs/1k/2k-cooldown"
    # cooldowns 1k and 3k, branch points 1k and 3k: a common epoch of 1k; the branch at epoch 1
    assert jobs[f"{trunk}/segments/epoch_1.json"][0] == "train_segment"
    assert jobs[f"{branch}/run.json"][0] == "train"
    assert {f for f in jobs[f"{branch}/run.json"][1] if f.startswith("results/train/")} == {
        f"{trunk}/segments/epoch_1.json"}
    assert f"{trunk}/segments/epoch_1.json" in jobs[f"{trunk}/run.json"][1]
    for run in ("results/train/vit-xs/1k/2k", "results/train/vit-xs/1k/6k"):  # cosine, from scratch
        assert not {f for f in jobs[f"{run}/run.json"][1] if f.startswith("results/train/")}
    assert any(f.startswith("results/eval/ours/vit-xs/1k/2k-cooldown/epoch_2/") for f in jobs)


def test_without_branch_jobs_a_trunk_is_one_job_and_its_branches_wait_for_its_end(tmp_path):
    """train.branch_jobs: false (the embedded default's: fewer job start-ups on 2 cores): the
    trunk trains in one job (no train_segment), each branch's job waits for it, and the runs,
    their checkpoints and evaluations are the same files as with branch jobs."""
    (tmp_path / "cooldown.yaml").write_text(
        "grid: {models: [vit-xs], scales: [1k], samples_seen: [2k, 6k], schedules: [const-cooldown]}\n"
        "train: {cooldown: {fraction: 0.5}, branch_jobs: false}\nfinetune: {enabled: false}\n")
    args = ("results/results/results.parquet", "--configfile", str(REPO / "tests" / "data" / "ci.yaml"),
            str(tmp_path / "cooldown.yaml"))
    jobs = _dry_run_jobs(tmp_path, *args)
    trunk, branch = "results/train/vit-xs/1k/6k-cooldown", "results/train/vit-xs/1k/2k-cooldown"
    assert not any("/segments/" in f for f in jobs)
    assert jobs[f"{trunk}/run.json"][0] == jobs[f"{branch}/run.json"][0] == "train"
    assert {f for f in jobs[f"{branch}/run.json"][1] if f.startswith("results/train/")} == {f"{trunk}/run.json"}
    (tmp_path / "cooldown.yaml").write_text((tmp_path / "cooldown.yaml").read_text().replace("branch_jobs: false", "branch_jobs: true"))
    with_branch_jobs = _dry_run_jobs(tmp_path, *args)
    assert set(with_branch_jobs) - set(jobs) == {f"{trunk}/segments/epoch_1.json"}


def test_a_run_in_segments_is_a_chain_of_jobs_whose_checkpoints_are_evaluated_on_the_way(tmp_path):
    """train.segments: 3 with 4 checkpoints: jobs end at epochs 1 and 3 (train_segment) and 4
    (train), each after the one before; with evaluate.all_checkpoints, checkpoints 1 and 2-3
    wait only for the segment that writes them, not for the run."""
    (tmp_path / "segments.yaml").write_text(
        "grid: {models: [vit-xs], scales: [1k], samples_seen: [4k]}\n"
        "train: {checkpoints: 4, segments: 3}\nevaluate: {all_checkpoints: true}\n")
    jobs = _dry_run_jobs(tmp_path, "results/results/results.parquet", "--configfile",
                         str(REPO / "tests" / "data" / "ci.yaml"), str(tmp_path / "segments.yaml"))
    run = "results/train/vit-xs/1k/4k"
    assert jobs[f"{run}/segments/epoch_1.json"][0] == jobs[f"{run}/segments/epoch_3.json"][0] == "train_segment"
    assert jobs[f"{run}/run.json"][0] == "train"
    assert sorted(f for f in jobs if "/segments/" in f) == [f"{run}/segments/epoch_1.json", f"{run}/segments/epoch_3.json"]
    assert f"{run}/segments/epoch_1.json" in jobs[f"{run}/segments/epoch_3.json"][1]
    assert f"{run}/segments/epoch_3.json" in jobs[f"{run}/run.json"][1]

    def waits_for(epoch):
        (out,) = [f for f in jobs if f.startswith(f"results/eval/ours/vit-xs/1k/4k/epoch_{epoch}/shapes/zeroshot")]
        return {f for f in jobs[out][1] if f.startswith("results/train/")}

    assert waits_for(1) == {f"{run}/segments/epoch_1.json"}
    assert waits_for(2) == waits_for(3) == {f"{run}/segments/epoch_3.json"}
    assert waits_for(4) == {f"{run}/run.json"}
    one_job = _dry_run_jobs(tmp_path, "results/results/results.parquet", "--configfile",
                            str(REPO / "tests" / "data" / "ci.yaml"))  # segments: 1 (the default)
    assert not any("/segments/" in f for f in one_job) and any(f.endswith("/run.json") for f in one_job)


def test_building_the_dag_loads_no_deep_learning_stack():
    """Every snakemake invocation parses the Snakefile, on the login node and again inside each
    Slurm job: the modules it imports, and the config check (fine-tuning recipes included), load
    neither torch nor seaborn (importing torch there cost about 4 s per invocation)."""
    rules = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    imports = sorted({line.strip() for path in rules for line in path.read_text().splitlines()
                      if re.match(r"\s*(from clipscale\S* import [\w, ]+$|import clipscale)", line)})
    assert any("finetune" in line for line in imports) and any("figures" in line for line in imports), imports
    code = "\n".join([*imports, "import sys", "from clipscale import config",
                      "for name in ('config/config.yaml', 'config/paper.yaml'):",
                      "    config.load(name)",
                      "print(sorted(m for m in ('torch', 'seaborn', 'open_clip', 'timm', 'clip_benchmark')"
                      " if m in sys.modules))"])
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]", (out.stdout, imports)


def test_a_run_asked_for_by_another_spelling_of_its_samples_is_refused_naming_its_path(tmp_path):
    """`results/train/vit-xs/1k/2000/run.json` names the run whose folder is `.../2k/`: refused
    with the path to ask for, not trained in one folder and recorded in another."""
    proc = subprocess.run(
        [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n", "results/train/vit-xs/1k/2000/run.json",
         "--configfile", str(REPO / "tests" / "data" / "ci.yaml")],
        capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "is written '2k'" in out and "results/train/vit-xs/1k/2k/run.json" in out, out[-3000:]
    ok = subprocess.run(
        [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n", "results/train/vit-xs/1k/2k/run.json",
         "--configfile", str(REPO / "tests" / "data" / "ci.yaml")],
        capture_output=True, text=True, timeout=600, check=False)
    assert ok.returncode == 0, ok.stderr[-3000:]
