"""What a job leaves behind, read without torch: a partial checkpoint's place (its pickle read as data),
the last loss, the last error of a log."""

from __future__ import annotations

import os
import pickletools
import zipfile
from datetime import datetime
from pathlib import Path


PARTIAL_KEYS = ("epoch", "step_in_epoch", "num_batches", "global_step")
_INT_OPS = {"BININT", "BININT1", "BININT2", "LONG1", "INT", "LONG"}
_STR_OPS = {"BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING"}
_MEMO_OPS = {"BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"}


# ---------------------------------------------------------------------------------------------
# files of a run


def partial_place(path: str | Path) -> dict | None:
    """epoch, step_in_epoch, num_batches, global_step of a partial checkpoint (``partial.pt``,
    torch's zip format), read from its pickle's opcodes without unpickling: nothing of the file
    is run or built. None when there is none or it does not read as one."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                return None
            data = archive.read(name)
    except (OSError, zipfile.BadZipFile, KeyError):
        return None
    found: dict = {}
    key = None
    try:
        for n, (op, arg, _) in enumerate(pickletools.genops(data)):
            if op.name in _MEMO_OPS:
                continue
            if op.name in _INT_OPS and key in PARTIAL_KEYS and key not in found:
                found[key] = int(arg)
            key = arg if op.name in _STR_OPS else None
            # the top-level dict's plain fields come first (clipscale.resume writes them so); the
            # weights follow
            if key == "state_dict" or len(found) == len(PARTIAL_KEYS) or n > 400:
                break
    except (ValueError, EOFError):  # a truncated pickle: what was read before counts
        pass
    if not all(k in found for k in ("epoch", "step_in_epoch", "num_batches")):
        return None
    return found


def last_loss(path: str | Path) -> tuple[int | None, float] | None:
    """(global step, loss) of the last whole line of ``losses.csv`` (read from its end)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 4096))
            tail = fh.read().decode(errors="replace")
    except OSError:
        return None
    for line in reversed(tail.split("\n")[1:] if size > 4096 else tail.split("\n")):
        step, _, value = line.strip().partition(",")
        try:
            return (int(step) if step else None), float(value)
        except ValueError:
            continue
    return None


def _timestamp(iso: str | None) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else None
    except ValueError:
        return None


def _mtime(path: str | Path) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def last_error(log: str | Path) -> str | None:
    """The last ERROR line of a job's log (its message), or None. A log is appended to by every
    attempt: only the lines after the last attempt's start count (the caller decides which log)."""
    try:
        with open(log, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 65536))
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if " ERROR " in line:
            message = line.split(" ERROR ", 1)[1].strip()
            return message if message and message != "job failed:" else _traceback_end(lines)
    return None


def _traceback_end(lines: list[str]) -> str | None:
    """The exception line of the last traceback in a log."""
    for line in reversed(lines):
        if line and not line.startswith(" ") and ("Error" in line or "Exception" in line):
            return line.strip()
    return None
