"""clipscale.logs: a job's log, and the quick exit of a job that has done its work."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap


def test_a_quick_exit_loses_nothing_a_job_wrote(tmp_path):
    """exit_now ends the process with its status after the atexit handlers ran (a model
    registry's temporary folder is removed), the job's log file holds every line, and buffered
    standard output is flushed."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import atexit, logging, shutil, sys, tempfile
        from clipscale.logs import exit_now, job_logging

        folder = tempfile.mkdtemp(dir={str(tmp_path)!r})
        atexit.register(shutil.rmtree, folder)
        with job_logging({str(tmp_path / 'job.log')!r}):
            logging.getLogger("clipscale.test").info("the job's last line")
        kept = logging.FileHandler({str(tmp_path / 'other.log')!r})  # a handler left open
        logging.getLogger("clipscale.other").addHandler(kept)
        logging.getLogger("clipscale.other").warning("left in a buffer")
        sys.stdout.write("no newline at the end")
        exit_now(3)
        print("never")
        """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "no newline at the end"
    assert "the job's last line" in (tmp_path / "job.log").read_text()
    assert "left in a buffer" in (tmp_path / "other.log").read_text()
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []  # the atexit handler ran


def test_progress_logs_count_rate_and_eta_at_its_interval(caplog):
    """A long step's progress: a line at the start, at most one per interval, and one at the end,
    each with the count of the total, the rate and the time left, in the logger (a job's log
    file), never a carriage return."""
    import logging

    from clipscale.logs import progress

    now = [0.0]  # 0.25 s per item, without waiting for it
    caplog.set_level(logging.INFO, logger="clipscale.test")
    bar = progress(range(40), "scan", unit="shards", logger="clipscale.test", every_s=2.0)
    bar._time = lambda: now[0]
    bar.start_t = bar.last_print_t = 0.0
    seen = []
    for item in bar:
        seen.append(item)
        now[0] += 0.25
    assert seen == list(range(40))
    lines = [r.getMessage() for r in caplog.records if r.name == "clipscale.test"]
    assert lines[0].startswith("scan: 0/40 shards (0%)")
    assert lines[-1].startswith("scan: 40/40 shards (100%)") and "shards/s" in lines[-1]
    middle = lines[1:-1]
    assert 3 <= len(middle) <= 6, lines  # 10 s of work, a line per 2 s at most
    for line in middle:  # count of the total, elapsed, the rate, the time left at that rate
        m = re.fullmatch(r"scan: (\d+)/40 shards \(\d+%\) in 00:(\d\d), 4\.00 shards/s, ETA 00:(\d\d)", line)
        assert m, line
        k, elapsed, eta = map(int, m.groups())
        assert abs(elapsed - k / 4) <= 1 and abs(eta - (40 - k) / 4) <= 1, line
    assert not any("\r" in m for m in lines)


def test_the_pool_index_says_where_it_is_in_the_job_log(small_world, tmp_path, monkeypatch):
    """The pool index job's log: lines with the shards scanned, of how many, and the rate."""
    from clipscale import subsets
    from clipscale.logs import job_logging

    monkeypatch.setenv("CLIPSCALE_PROGRESS_S", "0")  # every shard, for the test
    log_file = tmp_path / "index.log"
    with job_logging(log_file):
        index = subsets.build_index(small_world / "pool")
    n = len(index)
    text = log_file.read_text()
    counts = [int(k) for k in re.findall(rf"clipscale.subsets INFO pool index: (\d+)/{n} shards \(\d+%\) in "
                                         rf"\d\d:\d\d, [\d.?]+ ?\w*shards/s", text)]
    assert counts[0] == 0 and counts[-1] == n and set(range(n + 1)) <= set(counts), text
    assert re.search(rf"pool index: {n}/{n} shards \(100%\) in \d\d:\d\d, [\d.]+ shards/s", text), text
