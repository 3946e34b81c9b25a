"""clipscale.logs: a job's log, and the quick exit of a job that has done its work."""

from __future__ import annotations

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
