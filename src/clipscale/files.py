"""Files of the pipeline's jobs, written whole or not at all, and checkpoints read safely.

A job killed in the middle of a write (a walltime, a Ctrl-C, a lost node) leaves the old file
or none, never half a one: the data goes to a temporary file beside the target, then renamed
over it (atomic on one file system). Checkpoints a user or an earlier job left on disk are
loaded with ``weights_only=True``: tensors and plain containers, never code. A write that fails
(a full disk) removes its temporary file and says why, naming the file (``WriteError``).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
LOW_SPACE_BYTES = 64 * 2**20  # less free than this after a failed write: the disk is full


class WriteError(OSError):
    """A file could not be written; the message names it and says why (e.g. no space left)."""


def temporary(path: Path) -> Path:
    """The temporary file that a write of ``path`` goes to before it is renamed over it."""
    return path.with_name(path.name + ".tmp")


def _temporary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return temporary(path)


def write_json(path: str | Path, data) -> None:
    """``data`` as indented JSON (values JSON cannot hold as their ``str``)."""
    path = Path(path)
    tmp = _temporary(path)
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def torch_save(obj, path: str | Path, save=None) -> None:
    """``torch.save`` of ``obj`` to ``path`` (``save``: the function that writes the file, by
    default ``torch.save``); a failed write raises ``WriteError`` and leaves no file."""
    import torch

    path = Path(path)
    tmp = _temporary(path)
    try:
        (save or getattr(torch.save, "_clipscale_original", torch.save))(obj, tmp)
    except (OSError, RuntimeError) as e:  # torch's own writer says RuntimeError "unexpected pos"
        reason = write_failure(path, e)  # while the partial file still holds the space it took
        tmp.unlink(missing_ok=True)
        raise WriteError(reason) from e
    os.replace(tmp, path)


def write_failure(path: str | Path, error: BaseException) -> str:
    """Why writing ``path`` failed, for a person: "no space left on device" when that is it (an
    OSError ENOSPC or EDQUOT; torch's zip writer only says "unexpected pos" or "file write
    failed", so then the free space of the file system decides)."""
    text = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    try:
        free = shutil.disk_usage(Path(path).parent).free
    except OSError:
        free = None
    short_write = isinstance(error, RuntimeError) and any(
        s in str(error) for s in ("unexpected pos", "file write failed"))
    if getattr(error, "errno", None) in NO_SPACE_ERRNOS or (short_write and free is not None
                                                            and free < LOW_SPACE_BYTES):
        what = "disk quota exceeded" if getattr(error, "errno", None) == errno.EDQUOT else "no space left on device"
        return f"{what} writing {path} ({free} bytes free there; {text})"
    return f"writing {path} failed ({text})"


def load_weights_only(path: str | Path):
    """torch.load that can only rebuild tensors and plain containers, never run code (memory-
    mapped where the file format allows it, so reading a big checkpoint's fields reads little)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):  # an old (non-zip) file cannot be memory-mapped: read it
            raise
        return torch.load(path, map_location="cpu", weights_only=True)
