"""``clipscale status`` (issue 31): where a study stands, read from its run folders and squeue.

Unit tests on hand-made run folders (done, training with its pace and ETA, waiting for a
window, interrupted, failed, queued in a fake Slurm's squeue), the partial checkpoint read
without unpickling, the outputs older than their inputs; then the real thing: Snakemake training
one tiny run in the background, ``clipscale status`` while it trains, after Ctrl-C, and once
the run is done.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from clipscale import cli, grid, ownership, paths, status
from clipscale import config as config_mod
from clipscale import train as train_mod
from conftest import CI_CONFIG, REPO, default_sigint, scratch


def ci_config(**grid_settings) -> dict:
    """tests/data/ci.yaml reduced to one run (vit-xs, 1k, 2k: 2 epochs of 8 steps)."""
    cfg = yaml.safe_load(CI_CONFIG.read_text())
    cfg["grid"] = {"models": ["vit-xs"], "scales": ["1k"], "samples_seen": ["2k"], **grid_settings}
    cfg["finetune"]["enabled"] = False
    return config_mod.validate(cfg, "status test config")


def the_run(cfg: dict) -> grid.Run:
    return grid.runs(cfg)[0]


def folder(run: grid.Run) -> Path:
    out = train_mod.run_dir(run)
    out.mkdir(parents=True, exist_ok=True)
    return out


def attempt(run: grid.Run, ended: str = "running", started: float | None = None, **extra) -> dict:
    entry = {"id": f"{time.time_ns()}-1", "started": _iso(started or time.time() - 60), "host": "h", "pid": 1,
             "slurm_job": None, "resumed_from": 0, "resumed_from_step": None, "rejected_checkpoints": [],
             "ended": "running"}
    with open(folder(run) / train_mod.ATTEMPTS_NAME, "a") as fh:
        fh.write(json.dumps(entry) + "\n")
        if ended != "running":
            fh.write(json.dumps({**entry, "ended": ended, "finished": _iso(time.time()), "steps": 3,
                                 "seconds": 5.0, **extra}) + "\n")
    return entry


def _iso(t: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="milliseconds")


def checkpoint(run: grid.Run, epoch: int, mtime: float | None = None) -> Path:
    path = train_mod.checkpoint_dir(run) / f"epoch_{epoch}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not read")
    if mtime:
        os.utime(path, (mtime, mtime))
    return path


def losses(run: grid.Run, steps: range, mtime: float | None = None) -> Path:
    path = folder(run) / train_mod.LOSSES_NAME
    path.write_text("".join(f"{s},{5 - s / 100!r}\n" for s in steps))
    if mtime:
        os.utime(path, (mtime, mtime))
    return path


# ---------------------------------------------------------------------------------------------
# files of a run


def test_partial_checkpoint_fields_are_read_without_unpickling(tmp_path):
    """epoch and step come from the pickle's opcodes: a partial.pt whose pickle would run code
    when loaded (a REDUCE of os.system after its fields) gives its fields, and nothing runs."""
    import torch

    real = tmp_path / "partial.pt"
    torch.save({"epoch": 1, "step_in_epoch": 3, "num_batches": 8, "global_step": 11, "name": "openclip",
                "state_dict": {"w": torch.zeros(2)}, "optimizer": {"state": {}, "param_groups": []}}, real)
    assert status.partial_place(real) == {"epoch": 1, "step_in_epoch": 3, "num_batches": 8, "global_step": 11}

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    buf = io.BytesIO()
    pickle.dump({"epoch": 2, "step_in_epoch": 5, "num_batches": 8, "state_dict": Payload()}, buf, protocol=2)
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("evil/data.pkl", buf.getvalue())
    assert status.partial_place(evil) == {"epoch": 2, "step_in_epoch": 5, "num_batches": 8}
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 cut short")
    assert status.partial_place(tmp_path / "junk.pt") is None
    assert status.partial_place(tmp_path / "absent.pt") is None


def test_last_loss_skips_a_line_cut_short(tmp_path):
    path = tmp_path / "losses.csv"
    path.write_text("0,5.5\n1,5.25\n2,5.")  # a process killed while writing
    assert status.last_loss(path) == (2, 5.0)  # "5." parses: the float is whole
    path.write_text("0,5.5\n1,5.25\n2,")
    assert status.last_loss(path) == (1, 5.25)
    path.write_text("".join(f"{i},{i / 7!r}\n" for i in range(5000)))  # read from the end only
    assert status.last_loss(path) == (4999, 4999 / 7)


# ---------------------------------------------------------------------------------------------
# one run in each state, from hand-made folders


def test_a_run_with_its_record_is_done(in_tmp):
    cfg = ci_config()
    run = the_run(cfg)
    losses(run, range(16))
    Path(paths.fill(paths.RUN_DONE, **run.wildcards)).write_text(json.dumps(
        {"steps_total": 16, "seconds_total": 12.5, "attempts": [{}, {}]}))
    st = status.run_status(cfg, run)
    assert (st.state, st.step, st.steps, st.windows) == ("done", 16, 16, 2)
    assert st.last_loss == pytest.approx(5 - 15 / 100)
    assert "16 steps in 12.5 s" in st.detail


def test_a_run_being_trained_shows_its_step_pace_and_eta(in_tmp):
    """The live owner (this process, as clipscale.train's launcher claims the folder) makes it
    training; step k of n from losses.csv; the pace since the checkpoint this attempt wrote
    (start-up left out): 3 steps of 128 samples in 10 s -> 38.4 samples/s, 5 steps left -> 16.7 s."""
    cfg = ci_config()
    run = the_run(cfg)
    t0 = time.time() - 100
    ownership.claim(folder(run), "test")
    attempt(run, started=t0)
    checkpoint(run, 1, mtime=t0 + 30)
    losses(run, range(11), mtime=t0 + 40)  # steps 0..10 trained: the 11th of 16
    st = status.run_status(cfg, run, jobs=None)
    assert st.state == "training", st
    assert (st.step, st.steps, st.epoch, st.windows) == (11, 16, 1, 1)
    assert st.progress == "step 11 of 16 (69%)"
    assert st.samples_per_s == pytest.approx((11 - 8) / 10 * 128)
    assert st.eta_s == pytest.approx(5 / 0.3, abs=0.1)
    assert st.last_loss == pytest.approx(5 - 10 / 100)


def test_stopped_runs_say_where_they_resume_and_failed_ones_why(in_tmp):
    cfg = ci_config(samples_seen=["2k", "4k"])
    killed, stopped = grid.runs(cfg)
    # killed: no end record, a dead owner (a pid that is no process)
    (folder(killed) / ownership.OWNER_NAME).write_text(json.dumps(
        {"slurm_job_id": None, "host": os.uname().nodename, "pid": 2 ** 22 + 7, "pid_start": "1"}))
    attempt(killed)
    checkpoint(killed, 1)
    st = status.run_status(cfg, killed)
    assert st.state == "interrupted" and "killed" in st.detail and st.resumes_at == "epoch 1", st
    # stopped with its place saved (partial.pt of epoch 1, 3 steps in)
    import torch

    attempt(stopped, ended="signal SIGINT")
    checkpoint(stopped, 1)
    torch.save({"epoch": 1, "step_in_epoch": 3, "num_batches": 16, "global_step": 19, "state_dict": {},
                "optimizer": {}}, folder(stopped) / "partial.pt")
    st = status.run_status(cfg, stopped)
    assert st.state == "interrupted" and st.resumes_at == "epoch 1 + 3 of 16 steps", st
    assert "re-running the workflow resumes at epoch 1 + 3 of 16 steps" in st.detail
    # the walltime warning ended its window: the next one resumes
    attempt(stopped, ended="signal SIGUSR1 (walltime)")
    st = status.run_status(cfg, stopped)
    assert (st.state, st.windows) == ("waiting", 2)
    # an error: the reason and the log
    attempt(stopped, ended="error: TrainingError: run x: loss is nan at step 3")
    st = status.run_status(cfg, stopped)
    assert st.state == "failed" and "loss is nan" in st.detail
    assert st.log == "results/logs/train/vit-xs/1k/4k.log" and st.log in st.detail


def test_a_job_that_failed_before_its_first_attempt_is_failed_with_the_log_line(in_tmp):
    cfg = ci_config()
    run = the_run(cfg)
    log = Path(paths.log_file("train", *run.wildcards.values()))
    log.parent.mkdir(parents=True)
    log.write_text("2026-12-06 10:00:00,000 clipscale.train ERROR run vit-xs/1k/2k: shard 00003.tar is missing\n")
    st = status.run_status(cfg, run)
    assert st.state == "failed" and "shard 00003.tar is missing" in st.detail and str(log) in st.detail
    assert status.run_status(cfg, grid.Run("vit-xs", "1k", 4000)).state == "pending"  # no log, no folder


FAKE_SQUEUE = """#!/bin/sh
cat <<'EOF'
{lines}
EOF
"""


def fake_squeue(bin_dir: Path, lines: list[str], monkeypatch) -> None:
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / "squeue"
    exe.write_text(FAKE_SQUEUE.format(lines="\n".join(lines)))
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_slurm_jobs_of_the_study_mark_runs_queued_waiting_or_training(in_tmp, tmp_path_factory, monkeypatch):
    """Jobs are matched by the plugin's comment, only those whose working directory is the
    study's: the same run of another study's job (another folder) is not this one's."""
    cfg = ci_config(models=["vit-xs", "vit-s"], samples_seen=["2k", "4k"])
    runs = {r.name: r for r in grid.runs(cfg)}
    here = str(in_tmp)
    fake_squeue(tmp_path_factory.mktemp("bin"), [
        f"11|PENDING|Priority|rule_train_wildcards_vit-xs_1k_2k|clipscale_u|{here}",
        f"12|PENDING|BeginTime|rule_train_wildcards_vit-xs_1k_4k|clipscale_u|{here}",
        f"13|RUNNING|None|rule_train_wildcards_vit-s_1k_2k|clipscale_u|{here}",
        f"14|RUNNING|None|rule_train_wildcards_vit-s_1k_4k|clipscale_u|/elsewhere",
        f"15|PENDING|Dependency|rule_evaluate_wildcards_ours_vit-xs_1k_2k_2|clipscale_u|{here}",
    ], monkeypatch)
    attempt(runs["vit-xs/1k/4k"], ended="signal SIGUSR1")  # its first window ended: requeued
    attempt(runs["vit-s/1k/2k"], started=time.time() - 30)
    losses(runs["vit-s/1k/2k"], range(4))
    data = status.study(cfg, ".")
    assert [j["job_id"] for j in data["slurm"]] == ["11", "12", "13", "15"]
    states = {r["run"]: (r["state"], r["slurm_job"]) for r in data["runs"]}
    assert states == {"vit-xs/1k/2k": ("queued", "11"), "vit-xs/1k/4k": ("waiting", "12"),
                      "vit-s/1k/2k": ("training", "13"), "vit-s/1k/4k": ("pending", None)}
    training = next(r for r in data["runs"] if r["run"] == "vit-s/1k/2k")
    assert training["progress"] == "step 4 of 16 (25%)" and "Slurm job 13 RUNNING" in training["detail"]
    evals = {e["checkpoint"]: e["state"] for e in data["evaluations"]}
    assert evals["ours vit-xs/1k/2k epoch 2"] == "queued"
    assert "BeginTime" in next(r for r in data["runs"] if r["run"] == "vit-xs/1k/4k")["detail"]


def test_squeue_that_does_not_answer_means_no_slurm(in_tmp, tmp_path_factory, monkeypatch):
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "squeue").write_text("#!/bin/sh\necho 'slurm_load_jobs error: Unable to contact' >&2\nexit 1\n")
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert status.squeue_jobs(".") is None


def test_outputs_older_than_what_they_are_made_from_are_named(in_tmp):
    cfg = ci_config()
    from clipscale.evaluate import plan

    results = plan.target_paths(cfg)
    t = time.time() - 1000
    for i, p in enumerate(results):
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        Path(p).write_text("{}")
        os.utime(p, (t + i, t + i))
    table = Path(paths.RESULTS_TABLE)
    table.parent.mkdir(parents=True)
    table.write_text("")
    os.utime(table, (t + 500, t + 500))
    coefficients = Path(paths.fill(paths.FIT_INPUT_COEFFICIENTS, input="ours"))
    coefficients.parent.mkdir(parents=True)
    coefficients.write_text("")
    os.utime(coefficients, (t + 400, t + 400))  # fitted before the table was remade
    newest = Path(results[-1])
    os.utime(newest, (t + 600, t + 600))  # an evaluation redone after the table
    out = {o.output: o for o in status.outputs(cfg)}
    assert out[paths.RESULTS_TABLE].state == "outdated"
    assert f"older than 1 of its {len(results)} evaluation results (newest {newest})" in out[paths.RESULTS_TABLE].detail
    assert out[str(coefficients)].state == "outdated"
    figure = paths.fill(paths.FIGURE, figure="zeroshot_ours", ext="pdf")
    assert out[figure].state == "missing"
    log = Path(paths.log_file("figures", "zeroshot_ours"))  # its job failed: the reason, the log
    log.parent.mkdir(parents=True)
    log.write_text("2026-12-06 10:00:00,000 clipscale ERROR job failed:\nTraceback (most recent call last):\n"
                   "  File x\nclipscale.figures.FigureError: figure 'zeroshot_ours': no runs\n")
    out = {o.output: o for o in status.outputs(cfg)}
    assert out[figure].state == "failed"
    assert out[figure].detail == f"clipscale.figures.FigureError: figure 'zeroshot_ours': no runs (see {log})"
    os.utime(newest, (t + 10, t + 10))
    os.utime(coefficients, (t + 700, t + 700))
    out = {o.output: o for o in status.outputs(cfg)}
    assert out[paths.RESULTS_TABLE].state == out[str(coefficients)].state == "up to date"


def test_evaluations_per_checkpoint_say_what_is_missing_and_why(in_tmp):
    """Waiting for training; ready (checkpoint and record there); running (Snakemake's
    incomplete mark, its lock held) or incomplete (no lock: a Snakemake that stopped); failed
    (an error in its log after the record); complete."""
    import base64

    from clipscale.evaluate import plan

    cfg = ci_config()
    run = the_run(cfg)
    (ckpt,) = status.evaluations(cfg)
    assert (ckpt.checkpoint, ckpt.done, ckpt.total, ckpt.state) == ("ours vit-xs/1k/2k epoch 2", 0, 5,
                                                                      "waiting for training")
    checkpoint(run, 2, mtime=time.time() - 100)
    record = Path(paths.fill(paths.RUN_DONE, **run.wildcards))
    record.write_text("{}")
    os.utime(record, (time.time() - 100,) * 2)
    assert status.evaluations(cfg)[0].state == "ready"
    outputs = plan.outputs_of(cfg, {"source": "ours", **run.wildcards, "epoch": "2"})
    first = next(iter(outputs.values()))
    marks = Path(".snakemake/incomplete")
    marks.mkdir(parents=True)
    (marks / base64.b64encode(first.encode()).decode()).write_text("")
    assert status.evaluations(cfg, incomplete=status.snakemake_incomplete("."))[0].state.startswith("incomplete")
    Path(".snakemake/locks").mkdir()
    (Path(".snakemake/locks") / "0.input.lock").write_text("")
    assert status.snakemake_locked(".")
    assert status.evaluations(cfg, incomplete=status.snakemake_incomplete("."), locked=True)[0].state == "running"
    log = Path(status.evaluations(cfg)[0].log)
    assert str(log) == "results/logs/evaluate/ours/vit-xs/1k/2k/epoch_2.log"
    log.parent.mkdir(parents=True)
    log.write_text("2026-12-06 10:00:00,000 clipscale.evaluate ERROR no downstream set at x\n")
    assert status.evaluations(cfg)[0].state == "failed: no downstream set at x"
    for i, path in enumerate(outputs.values()):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("{}")
        if i == 2:
            assert status.evaluations(cfg)[0].missing == [f"{d}/{t}" for d, t in list(outputs)[3:]]
    ev = status.evaluations(cfg)[0]
    assert (ev.done, ev.state, ev.missing) == (5, "complete", [])


def test_a_run_in_segments_between_its_jobs_and_its_segment_jobs_in_squeue(in_tmp, tmp_path_factory, monkeypatch):
    """train.segments 2: between its jobs a run is pending with the segment it finished; its
    train_segment job in squeue (the plugin's comment names the epoch) is the run's job."""
    cfg = yaml.safe_load(CI_CONFIG.read_text())
    cfg["grid"] = {"models": ["vit-xs"], "scales": ["1k"], "samples_seen": ["4k"]}
    cfg["train"]["segments"] = 2
    cfg["finetune"]["enabled"] = False
    cfg = config_mod.validate(cfg, "segments")
    run = the_run(cfg)
    assert status.train_comments(cfg, run) == {"rule_train_wildcards_vit-xs_1k_4k",
                                               "rule_train_segment_wildcards_vit-xs_1k_4k_1"}
    attempt(run, ended="segment done (epoch 1)")
    checkpoint(run, 1)
    st = status.run_status(cfg, run)
    assert (st.state, st.step, st.resumes_at) == ("pending", 16, "epoch 1") and "segment done" in st.detail
    fake_squeue(tmp_path_factory.mktemp("bin"), [
        f"21|RUNNING|None|rule_train_segment_wildcards_vit-xs_1k_4k_1|clipscale_u|{in_tmp}"], monkeypatch)
    st = status.run_status(cfg, run, status.squeue_jobs("."))
    assert (st.state, st.slurm_job) == ("training", "21")
    assert st.log == "results/logs/train/vit-xs/1k/4k/epoch_1.log"


def test_finetuning_jobs_wait_for_their_run_then_are_ready_then_done(in_tmp):
    cfg = config_mod.validate(yaml.safe_load(CI_CONFIG.read_text()), "ci")
    jobs = {j.job: j for j in status.finetune_jobs(cfg)}
    name = "vit-xs/1k/4k classification"
    assert len(jobs) == 4 and jobs[name].state == "waiting for training"
    run = grid.Run("vit-xs", "1k", 4000)
    folder(run)
    Path(paths.fill(paths.RUN_DONE, **run.wildcards)).write_text("{}")
    assert {j.job: j.state for j in status.finetune_jobs(cfg)}[name] == "ready"
    result = Path(paths.fill(paths.FINETUNE_RESULT, **run.wildcards, protocol="classification"))
    result.parent.mkdir(parents=True)
    (result.parent / "state.pt").write_bytes(b"")
    assert {j.job: j.state for j in status.finetune_jobs(cfg)}[name] == "interrupted"
    result.write_text("{}")
    assert {j.job: j.state for j in status.finetune_jobs(cfg)}[name] == "done"


def test_the_command_reads_configfiles_as_snakemake_does(in_tmp, tmp_path, capsys):
    """--configfile twice: merged in order; -d the study; --json the data; a bad config is
    refused naming the key."""
    base = yaml.safe_load(CI_CONFIG.read_text())
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "more.yaml").write_text(yaml.safe_dump(
        {"grid": {"models": ["vit-s"], "scales": ["1k"], "samples_seen": ["2k"]}, "finetune": {"enabled": False}}))
    study = tmp_path / "study"
    study.mkdir()
    rc = cli.main(["status", "--no-slurm", "--json", "-d", str(study), "--configfile", str(tmp_path / "base.yaml"),
                   "--configfile", str(tmp_path / "more.yaml")])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and [r["run"] for r in data["runs"]] == ["vit-s/1k/2k"]
    assert data["directory"] == str(study.resolve()) and data["counts"] == {"pending": 1}
    os.chdir(in_tmp)
    rc = cli.main(["status", "--no-slurm", "-d", str(study), "--configfiles", str(tmp_path / "base.yaml"),
                   str(tmp_path / "more.yaml")])
    text = capsys.readouterr().out
    assert rc == 0 and "vit-s/1k/2k  pending" in text and "evaluations: 0 of 5 results" in text
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**base, "train": {"batch_size": "big"}}))
    assert cli.main(["status", "-d", str(study), "--configfile", str(tmp_path / "bad.yaml")]) == 2
    assert "train.batch_size" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# a study in progress: snakemake in the background


# Active only in the training process (its command line names clipscale.train): pauses in the
# backward pass of the Nth step, after writing the paused file, until a stop asks it to save
# its place (a long step), as tests/test_train.py's hooks do.
PAUSE_HOOK = textwrap.dedent('''
    import os

    def _install():
        try:
            with open("/proc/self/cmdline", "rb") as fh:
                if b"clipscale.train" not in fh.read():
                    return
        except OSError:
            return
        pause_at = int(os.environ["CLIPSCALE_STATUS_TEST_PAUSE_AT"])
        import time

        import open_clip_train.train as oct_train

        original, calls = oct_train.backward, [0]

        def backward(total_loss, scaler):
            calls[0] += 1
            if calls[0] == pause_at:
                with open(os.environ["CLIPSCALE_STATUS_TEST_PAUSED"], "w") as fh:
                    fh.write(str(os.getpid()))
                from clipscale import stopping

                t_end = time.time() + 120
                while time.time() < t_end and not getattr(stopping.current(), "save_requested", 0):
                    time.sleep(0.1)
            return original(total_loss, scaler)

        oct_train.backward = backward

    if os.environ.get("CLIPSCALE_STATUS_TEST_PAUSE_AT"):
        _install()
''')


def study_config(small_world: Path) -> dict:
    """One run of a tiny model on the session's small world (a pool and sets of its own: no
    world to make), its GMAC given (no profile job): 1200 samples = 2 epochs of 5 steps."""
    cfg = yaml.safe_load(CI_CONFIG.read_text())
    cfg["pool"] = {"source": str(small_world / "pool"), "name": "small"}
    cfg["scales"] = {"s": 600}
    cfg["downstream"] = {"shapes": {"tasks": ["zeroshot_classification"], "group": "main",
                                    "path": str(small_world / "downstream" / "shapes")}}
    cfg["models"] = {"vit-xs": {**cfg["models"]["vit-xs"], "gmac_per_sample": 0.01}}
    cfg["grid"] = {"models": ["vit-xs"], "scales": ["s"], "samples_seen": [1200]}
    cfg["finetune"]["enabled"] = False
    cfg["train"]["device"] = "cpu"
    return cfg


def snakemake(workdir: Path, configfile: Path, *targets: str, env: dict) -> subprocess.Popen:
    cmd = [str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(configfile), "--cores", "2", *targets]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=default_sigint, start_new_session=True)


def clipscale_status(workdir: Path, configfile: Path) -> dict:
    """``clipscale status --json`` on the study (in this process: the command's own imports
    cost seconds on a loaded machine; it changes directory, restored here)."""
    here = os.getcwd()
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            rc = cli.main(["status", "--json", "--no-slurm", "-d", str(workdir), "--configfile", str(configfile)])
    finally:
        os.chdir(here)
    assert rc == 0
    return json.loads(out.getvalue())


def study_env(tmp_path: Path, pause_at: int | None = None) -> dict:
    """The environment of snakemake: the training pauses in step ``pause_at`` (the file
    tmp_path/paused appears then)."""
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(PAUSE_HOOK)
    pythonpath = os.pathsep.join([str(hooks)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    env = {**os.environ, "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1",
           "CLIPSCALE_STATUS_TEST_PAUSED": str(tmp_path / "paused")}
    if pause_at:
        env["CLIPSCALE_STATUS_TEST_PAUSE_AT"] = str(pause_at)
    return env


def target_of(run: grid.Run) -> str:
    return paths.fill(paths.RUN_DONE, **run.wildcards)


@pytest.fixture(scope="module")
def finished(request, small_world, tmp_path_factory):
    """(working directory, config file, its run) of the one-run study, trained by Snakemake."""
    with scratch(request, tmp_path_factory, "status-study") as folder:
        configfile = folder / "config.yaml"
        cfg = study_config(small_world)
        configfile.write_text(yaml.safe_dump(cfg))
        run = grid.runs(config_mod.validate(cfg, "study"))[0]
        proc = snakemake(folder / "study", configfile, target_of(run), env=study_env(folder))
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, out[-3000:]
        yield folder / "study", configfile, run


@pytest.mark.slow
def test_status_of_a_finished_study(finished):
    """Snakemake trained the run: done, one window, all its steps; the evaluation of its
    checkpoint (not asked for) ready; the results table missing."""
    workdir, configfile, run = finished
    data = clipscale_status(workdir, configfile)
    (row,) = data["runs"]
    assert (row["run"], row["state"], row["windows"], row["step"], row["steps"]) == (run.name, "done", 1, 10, 10)
    assert data["counts"] == {"done": 1}
    (ev,) = data["evaluations"]
    assert (ev["done"], ev["total"], ev["state"]) == (0, 1, "ready")
    outputs = {o["output"]: o["state"] for o in data["outputs"]}
    assert outputs[paths.RESULTS_TABLE] == "missing"


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["SIGINT", "SIGKILL"], ids=["ctrl-c", "kill-9"])
def test_status_of_a_study_while_it_trains_and_after_it_stops(finished, tmp_path, stop):
    """The finished study with its run's folder gone: Snakemake trains the run again in the
    background; paused in step 7 (epoch 1 done, 2 steps into epoch 2), ``clipscale status``
    says training, step 7 of 10, one window, a pace and an ETA. Then Snakemake is stopped
    (Ctrl-C) or dies (kill -9: its lock stays, the run's job sees its parent gone); either way
    the run saves its place and the status says interrupted, resuming there."""
    source, configfile, run = finished
    workdir = tmp_path / "study"
    shutil.copytree(source, workdir, symlinks=True)
    shutil.rmtree(workdir / train_mod.run_dir(run))
    paused = tmp_path / "paused"
    proc = snakemake(workdir, configfile, target_of(run), env=study_env(tmp_path, pause_at=7))
    try:
        deadline = time.time() + 180
        while not paused.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.3)
        assert paused.exists(), proc.communicate(timeout=60)[0][-4000:] if proc.poll() is not None else "no pause"
        data = clipscale_status(workdir, configfile)
        (row,) = data["runs"]
        assert row["state"] == "training", row
        assert (row["step"], row["steps"], row["epoch"], row["windows"]) == (7, 10, 1, 1), row
        assert row["progress"] == "step 7 of 10 (70%)"
        assert row["samples_per_s"] > 0 and row["eta_s"] > 0 and row["last_loss"] > 0
        assert "process" in row["detail"] and "running" in row["detail"]
        assert data["snakemake_lock"] and target_of(run) in data["snakemake_incomplete"]
        proc.send_signal(getattr(signal, stop))
        out = proc.communicate(timeout=90)[0]
        assert proc.returncode != 0, out[-3000:]
        deadline = time.time() + 90  # after a kill -9 the job stops on its own, seconds later
        while row["state"] == "training" and time.time() < deadline:
            time.sleep(1)
            data = clipscale_status(workdir, configfile)
            (row,) = data["runs"]
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything left in snakemake's session
        proc.wait()
    assert "rule train:" in out and "rule subset:" not in out  # only the run was trained again
    assert row["state"] == "interrupted", (row, out[-3000:])
    assert row["resumes_at"] == "epoch 1 + 2 of 5 steps", row
    assert "signal SIGTERM" in row["detail"] and "resumes at epoch 1 + 2 of 5 steps" in row["detail"], row
    assert (row["windows"], row["step"], row["eta_s"]) == (1, 7, None)
    assert data["snakemake_lock"] == (stop == "SIGKILL")  # a killed Snakemake leaves its lock
    assert "a Snakemake holds it (or a killed one left its lock)" in status.render(data) or stop == "SIGINT"
