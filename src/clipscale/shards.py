"""Reading and writing webdataset tar shards, robust to bad input.

Every reader here streams (one sample in memory at a time) and counts what it had to skip:
a corrupt or truncated tar, an empty member, a sample without the expected file. Callers put
the counts in their outputs so nothing is lost silently.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


@dataclass
class SkipCounter:
    """What a reader skipped, by reason, with a few example keys per reason."""

    counts: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 10:
            self.examples[reason].append(where)
        log.warning("skipped %s: %s", where, reason)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict:
        return {"total": self.total, "counts": dict(self.counts), "examples": self.examples}

    def merge(self, other: "SkipCounter") -> None:
        for reason, n in other.counts.items():
            self.counts[reason] += n
            ex = self.examples.setdefault(reason, [])
            ex.extend(other.examples.get(reason, [])[: max(0, 10 - len(ex))])


def split_name(name: str) -> tuple[str, str]:
    """'dir/000001.jpg' -> ('dir/000001', 'jpg'); webdataset's rule: extension after the first dot
    of the base name."""
    base = name.rsplit("/", 1)[-1]
    prefix = name[: len(name) - len(base)]
    if "." not in base:
        return name, ""
    stem, ext = base.split(".", 1)
    return prefix + stem, ext.lower()


def _round_up(n: int) -> int:
    return -(-n // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def iter_samples(path: str | Path, skipped: SkipCounter | None = None) -> Iterator[tuple[str, dict]]:
    """Yield (key, {ext: bytes}) for each sample of a tar shard, in order.

    Members of one sample are consecutive in webdataset tars. A truncated or corrupt tar ends the
    iteration after the last good sample and is counted; empty members are counted and dropped.
    """
    skipped = skipped if skipped is not None else SkipCounter()
    path = str(path)
    current_key, current = None, {}
    try:
        with tarfile.open(path, "r|*") as tar:
            end = 0
            for member in tar:
                end = member.offset_data + member.size
                if not member.isfile():
                    continue
                key, ext = split_name(member.name)
                if key != current_key:
                    if current:
                        yield current_key, current
                    current_key, current = key, {}
                if member.size == 0:
                    skipped.add("empty member", f"{path}:{member.name}")
                    continue
                data = tar.extractfile(member).read()
                current[ext] = data
        # a complete tar ends with two zero blocks after its last member; tarfile silently stops
        # at a cut header, so a shard cut mid-way is detected here
        size = os.path.getsize(path) if os.path.isfile(path) else None
        if size is not None and size < _round_up(end) + 2 * tarfile.BLOCKSIZE:
            skipped.add("truncated tar (no end-of-archive marker)", f"{path} after key {current_key}")
    except (tarfile.TarError, EOFError, OSError) as e:
        skipped.add(f"unreadable tar ({type(e).__name__})", f"{path} after key {current_key}: {e}")
    if current:
        yield current_key, current


class ShardWriter:
    """Write samples to one tar shard (deterministic member order and metadata)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)
        self.count = 0

    def write(self, key: str, files: dict[str, bytes | str]) -> None:
        for ext, data in files.items():
            if isinstance(data, str):
                data = data.encode("utf-8")
            elif isinstance(data, (dict, list)):
                data = json.dumps(data, sort_keys=True).encode("utf-8")
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        self.count += 1

    def close(self) -> None:
        self._tar.close()
        self._tmp.replace(self.path)  # atomic: a killed job leaves no half shard under the name

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self._tar.close()
            self._tmp.unlink(missing_ok=True)
