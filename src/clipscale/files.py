"""Files of the pipeline's jobs, written whole or not at all, and checkpoints read safely.

A job killed in the middle of a write (a walltime, a Ctrl-C, a lost node) leaves the old file
or none, never half a one: the data goes to a temporary file beside the target, then renamed
over it (atomic on one file system). Checkpoints a user or an earlier job left on disk are
loaded with ``weights_only=True``: tensors and plain containers, never code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


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


def torch_save(obj, path: str | Path) -> None:
    """``torch.save`` of ``obj`` to ``path``."""
    import torch

    path = Path(path)
    tmp = _temporary(path)
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
