"""Per-job logging: everything a job logs (and its warnings) goes to its Snakemake log file;
``progress``: where a long step is, as periodic log lines (count, rate, ETA)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Iterable, NoReturn, TypeVar

from tqdm import tqdm

T = TypeVar("T")

#: seconds between two progress lines of a step (CLIPSCALE_PROGRESS_S overrides it)
PROGRESS_EVERY_S = 30.0


@contextlib.contextmanager
def job_logging(path: str | Path, level: int = logging.INFO):
    """Send logging to `path` (and stderr) for the duration of a job; log a failure's traceback."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(handler.formatter)
    root = logging.getLogger()
    root.addHandler(handler)
    root.addHandler(stream)
    old_level = root.level
    root.setLevel(level)
    logging.captureWarnings(True)
    try:
        yield
    except BaseException:
        logging.getLogger("clipscale").error("job failed:\n%s", traceback.format_exc())
        raise
    finally:
        root.removeHandler(handler)
        root.removeHandler(stream)
        root.setLevel(old_level)
        handler.close()


def exit_now(status: int = 0) -> NoReturn:
    """End a job's process that has done its work: run the atexit handlers (temporary folders,
    torch's own), flush logging and the standard streams, then ``os._exit(status)``.

    Python's ordinary exit then tears down every imported module one object at a time; with
    torch, open_clip, transformers and clip_benchmark loaded that took 2.4 s of a 5.4-s import
    on this project's 2-core machine (2026-12-02), paid again by every training and evaluation
    job. Only for a process that ends normally: an error keeps the ordinary exit and its
    traceback."""
    try:
        atexit._run_exitfuncs()  # CPython's own call at exit (module atexit, since Python 2)
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # closed or broken: nothing left to lose
                pass
        os._exit(status)


class _LogLines:
    """A file for tqdm that logs each status it writes as one line (no carriage returns: a
    job's log is a file)."""

    def __init__(self, logger: logging.Logger, level: int):
        self.logger, self.level = logger, level

    def write(self, text: str) -> None:
        text = " ".join(text.split())  # no carriage return, no padding
        text = re.sub(r"(\d)s/ (\w)", r"\1 s/\2", text)  # a slow step's "17.3 s/shards"
        if text:
            self.logger.log(self.level, "%s", text)

    def flush(self) -> None:
        pass


class _Progress(tqdm):
    monitor_interval = 0  # no monitor thread: several steps fork worker processes

    def close(self) -> None:
        if self.n == self.last_print_n:  # the last count is logged already: no second line
            self.leave = False
        super().close()


def progress(iterable: Iterable[T] | None = None, what: str = "", total: int | None = None,
             unit: str = "items", logger: logging.Logger | str = "clipscale",
             every_s: float | None = None, level: int = logging.INFO) -> tqdm:
    """Wrap a long step's loop (or, without ``iterable``, count with ``.update(n)``): a log line
    when it starts, at most every ``every_s`` seconds (default PROGRESS_EVERY_S, or the
    environment's CLIPSCALE_PROGRESS_S) and when it ends (``close()``, or the loop's end):
    ``<what>: 120/600 shards (20%) in 00:30, 4.00 shards/s, ETA 02:00``. tqdm does the
    counting, rate and ETA; its lines go to the logger, so to the job's log file."""
    if every_s is None:
        every_s = float(os.environ.get("CLIPSCALE_PROGRESS_S", PROGRESS_EVERY_S))
    if isinstance(logger, str):
        logger = logging.getLogger(logger)
    if total is None and iterable is not None:
        try:
            total = len(iterable)
        except TypeError:  # e.g. a loader of an iterable dataset: counted without a total
            total = None
    counted = "{n_fmt}/{total_fmt} " + unit + " ({percentage:.0f}%)" if total else "{n_fmt} " + unit
    eta = ", ETA {remaining}" if total else ""
    return _Progress(iterable, total=total or None, desc=what, unit=" " + unit, file=_LogLines(logger, level),
                     mininterval=every_s, maxinterval=max(every_s, 1e9), miniters=1, ascii=True,
                     dynamic_ncols=False, bar_format="{desc}: " + counted + " in {elapsed}, {rate_fmt}" + eta)
