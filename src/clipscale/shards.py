"""Reading and writing webdataset tar shards, robust to bad input.

Every reader here streams (one sample in memory at a time) and reports what is wrong with a
tar (corrupt or truncated). What a bad *sample* is (an empty member, no image, no caption)
depends on the caller, who counts it once, with its most specific reason, and puts the counts
in its outputs so nothing is lost silently.
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


# what open_clip trains on: a sample with one of these images and a "txt" caption (its
# webdataset pipeline drops the others); a sample is counted only if it is complete
TRAIN_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
CAPTION_EXTENSION = "txt"


def is_complete(files: dict) -> bool:
    """A sample open_clip can train on: a non-empty image member and a non-empty caption."""
    return bool(files.get(CAPTION_EXTENSION)) and any(files.get(e) for e in TRAIN_IMAGE_EXTENSIONS)


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
    iteration after the last good sample and is counted in ``skipped``. Empty members are yielded
    as b"" and not counted here: whether an empty member makes a bad sample (an empty image) or
    not (an empty json) is the caller's call, and counting it here too would count one bad sample
    twice.
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
                data = tar.extractfile(member).read() if member.size else b""
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


@dataclass
class TarScan:
    """What a tar shard holds, from its member headers (see scan_tar)."""

    n_complete: int = 0  # samples open_clip can train on (is_complete)
    n_incomplete: int = 0  # keys without a non-empty image or caption, the one cut by a truncation too
    problem: str = ""  # what is wrong with the tar itself; "" when nothing
    # the keys of the complete samples, in tar order (a key twice if the tar holds it twice)
    keys: list = field(default_factory=list, compare=False, repr=False)


def scan_tar(path: str | Path) -> TarScan:
    """Count the complete samples of a tar shard from its member headers alone.

    Why headers only: img2dataset's parquet says what was downloaded, not what a (perhaps
    truncated) tar holds, and decoding every image of a pool of 10^5 shards would take days. A
    header gives a member's name (key and extension) and size, enough to tell a complete sample
    (is_complete: a non-empty image and caption); member data is seeked over, never read, and
    memory is the shard's keys (``keys``, those of its complete samples: what the pool index
    checks for duplicates and against the parquet). Samples are grouped as iter_samples groups
    them (consecutive members of one key), so the count is what a reader of the shard gets.

    A plain, complete tar (what img2dataset and webdataset write) is read by a small header
    reader, 4-5 times faster than tarfile; anything else (pax or GNU long-name headers, a
    compressed, truncated or corrupt tar) is left to tarfile, which also says what is wrong.
    """
    scan = TarScan()
    try:
        _count_samples(_plain_headers(path), scan)
    except _NotPlain:
        scan = TarScan()
        _count_samples(_tarfile_headers(path, scan), scan)
    return scan


def _count_samples(headers: Iterator[tuple[str, int, bool]], scan: TarScan) -> None:
    """Group (name, size, is_file) headers into samples and count them into ``scan``."""
    key, exts = None, set()
    for name, size, is_file in headers:
        if not is_file:
            continue
        member_key, ext = split_name(name)
        if member_key != key:
            if key is not None:
                _count_sample(key, exts, scan)
            key, exts = member_key, set()
        if size > 0:
            exts.add(ext)
    if key is not None:
        _count_sample(key, exts, scan)


def _count_sample(key: str, exts: set, scan: TarScan) -> None:
    if CAPTION_EXTENSION in exts and exts.intersection(TRAIN_IMAGE_EXTENSIONS):
        scan.n_complete += 1
        scan.keys.append(key)
    else:
        scan.n_incomplete += 1


class _NotPlain(Exception):
    """A tar the fast header reader leaves to tarfile."""


_ZERO_BLOCK = bytes(tarfile.BLOCKSIZE)
_PLAIN_TYPES = {tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE}


def _plain_headers(path: str | Path) -> Iterator[tuple[str, int, bool]]:
    """(name, size, is_file) of each member of a plain ustar tar whose every member's data and
    end-of-archive marker are there; raises _NotPlain at anything else."""
    with open(path, "rb", buffering=0) as f:
        file_size = os.fstat(f.fileno()).st_size
        offset = 0
        while True:
            f.seek(offset)
            block = f.read(tarfile.BLOCKSIZE)
            if block == _ZERO_BLOCK and f.read(tarfile.BLOCKSIZE) == _ZERO_BLOCK:
                return  # the end-of-archive marker: two zero blocks
            if len(block) < tarfile.BLOCKSIZE or block[156:157] not in _PLAIN_TYPES:
                raise _NotPlain
            try:
                checksum = int(block[148:156].split(b"\0", 1)[0].strip(), 8)
                size = int(block[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
            except ValueError:  # not octal: a corrupt header, or a base-256 size
                raise _NotPlain from None
            if checksum != sum(block) - sum(block[148:156]) + 8 * 32:  # field counted as spaces
                raise _NotPlain
            offset += tarfile.BLOCKSIZE + -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            if offset > file_size:
                raise _NotPlain  # the member's data is cut
            name = block[:100].split(b"\0", 1)[0]
            if block[257:265] == b"ustar\x0000" and block[345] != 0:
                name = block[345:500].split(b"\0", 1)[0] + b"/" + name
            yield name.decode("utf-8", "surrogateescape"), size, block[156:157] != tarfile.DIRTYPE


def _tarfile_headers(path: str | Path, scan: TarScan) -> Iterator[tuple[str, int, bool]]:
    """(name, size, is_file) of each member through tarfile (any tar it reads), puts what is
    wrong with the tar in scan.problem. A member whose data is cut is given size 0 (its sample
    is incomplete)."""
    try:
        with tarfile.open(path, "r:*") as tar:  # seekable: member data is skipped, not read
            member = tar.next()
            while member is not None:
                try:
                    following = tar.next()  # checks that `member`'s data and padding are there
                except tarfile.ReadError:
                    yield member.name, member.size if _data_there(tar, member) else 0, member.isfile()
                    raise
                tar.members.clear()  # tarfile keeps every header it read: keep memory constant
                yield member.name, member.size, member.isfile()
                member = following
            tar.fileobj.seek(tar.offset)
            end = tar.fileobj.read(2 * tarfile.BLOCKSIZE)
            if end != bytes(2 * tarfile.BLOCKSIZE):
                if len(end) < tarfile.BLOCKSIZE or not any(end[: tarfile.BLOCKSIZE]):
                    scan.problem = "truncated tar (no end-of-archive marker)"
                else:
                    scan.problem = f"corrupt tar header at byte {tar.offset}"
    except (tarfile.TarError, EOFError, OSError) as e:
        if "unexpected end of data" in str(e):
            scan.problem = "truncated tar (cut inside a member)"
        else:
            scan.problem = f"unreadable tar ({type(e).__name__}: {e})"


def _data_there(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bool:
    """Whether a member's data is all there: a tar cut in the zero padding after it still has
    it, and iter_samples reads it."""
    if member.size == 0:
        return True
    try:
        tar.fileobj.seek(member.offset_data + member.size - 1)
        return len(tar.fileobj.read(1)) == 1
    except (OSError, EOFError, tarfile.TarError):
        return False


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
