"""Per-job logging: everything a job logs (and its warnings) goes to its Snakemake log file."""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from pathlib import Path


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
