"""Nested random subsets of an image-text pool (the paper's LAION-80M ⊂ 400M ⊂ 2B), as shard manifests.

The pool is an img2dataset output directory: NNNNN.tar shards, with NNNNN.parquet beside them.
A subset of size n is a seeded random order of the pool's shards, taken from the front until n
samples are reached; the last shard is cut to the exact count. Every scale uses the same order,
so each subset is a prefix of the next one: small ⊂ medium ⊂ large.

Whole shards are not copied: the subset's shards/ folder holds symbolic links to them, numbered
000000.tar ... so that one brace pattern names the subset (what open_clip's --train-data takes).
Only the one cut shard is re-written (streamed, one sample in memory at a time). Memory use does
not depend on the pool size beyond one row per shard.

Counts are of readable samples: the pool index checks every tar against its img2dataset parquet
(headers only, see clipscale.shards.scan_tar: the count and the keys) and subsets are cut on what
the tars hold, so a truncated shard cannot make a subset promise samples that are not there.

A sample is its key: a key found twice in the pool (a shard copied under another name, a shard
whose keys repeat another's, a key twice in one shard) is one sample, its first occurrence in
shard order (the index's order, sorted by name). The index reports the others per shard and
leaves them out of n_samples; a shard with such duplicates is re-written without them (as the
cut shard is), so a subset of n samples holds n distinct keys.

Paths are relative to the working directory (where snakemake runs, the process's cwd): the
manifest's url and files, and the links to pool shards inside the workdir (the embedded world's
results/world/pool/). A copied or moved workdir (cp -a, mv) then reads its own shards, never the
original's. A pool outside the workdir (a user's /data/laion) is linked by its absolute path:
that is where the data lives.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clipscale.logs import progress
from clipscale.shards import ShardWriter, is_complete, iter_samples, scan_tar

# n_readable = complete samples in the tar; n_duplicates = those of them whose key came earlier
# (in this shard or an earlier one: left out); n_samples (what subsets use) = n_readable -
# n_duplicates; duplicate_keys = this shard's keys first seen in an earlier shard (distinct);
# n_parquet = what img2dataset's parquet says (null without one); skipped = samples in the tar
# that are not complete; problem = what is wrong with the shard ("" when nothing);
# n_missing = the samples img2dataset listed and did not write (its parquet's rows whose status
# is not "success": a URL that answered 404, an image it could not decode or resize; from its
# NNNNN_stats.json without a parquet; null with neither), missing_reasons = their
# error_message (or status) with counts, e.g. "HTTP Error 404: File not found: 3". They are
# missing from the pool (reported), not an error of the shard.
INDEX_COLUMNS = ["shard", "path", "n_samples", "skipped", "counted_from", "n_parquet",
                 "n_readable", "problem", "n_duplicates", "duplicate_keys", "n_missing",
                 "missing_reasons"]


class PoolError(ValueError):
    """A pool directory that cannot be used."""


def pool_shards(pool_dir: str | Path) -> list[Path]:
    pool_dir = Path(pool_dir)
    if not pool_dir.is_dir():
        raise PoolError(f"pool directory not found: {pool_dir}")
    shards = sorted(p for p in pool_dir.iterdir() if p.suffix == ".tar" and p.is_file())
    if not shards:
        raise PoolError(f"no .tar shards in pool directory {pool_dir}")
    return shards


@dataclass
class ParquetCounts:
    """What img2dataset's parquet of a shard says (see parquet_keys)."""

    n_success: int | None = None  # its "success" rows: the samples it wrote into the tar
    keys: list | None = None  # their keys (None without a key column)
    problem: str = ""
    n_missing: int | None = None  # the other rows: listed, not written (failed downloads, ...)
    missing: Counter = field(default_factory=Counter)  # their error_message (or status): count


def parquet_keys(parquet: Path) -> ParquetCounts:
    """The counts of img2dataset's parquet of a shard; all None without a parquet.

    img2dataset writes one row per URL of the shard's slice of the URL list, with its status
    ("success", "failed_to_download", "failed_to_resize") and error_message; only the successes
    are in the tar."""
    if not parquet.exists():
        return ParquetCounts()
    try:
        import pyarrow.parquet as pq

        names = pq.read_schema(parquet).names
        columns = [c for c in ("status", "key", "error_message") if c in names]
        meta = pd.read_parquet(parquet, columns=columns)
        if "status" not in meta:
            raise KeyError("no status column")
    except Exception as e:  # a broken parquet is reported, the tar is counted all the same
        return ParquetCounts(problem=f"unreadable parquet {parquet.name} ({type(e).__name__})")
    ok = meta["status"] == "success"
    keys = meta.loc[ok, "key"].astype(str).tolist() if "key" in meta else None
    failed = meta[~ok]
    reasons = failed["error_message"] if "error_message" in failed else failed["status"]
    reasons = reasons.where(reasons.notna() & (reasons.astype(str) != ""), failed["status"])
    return ParquetCounts(int(ok.sum()), keys, "", len(failed),
                         Counter(_reason(r) for r in reasons))


def stats_missing(stats: Path) -> tuple[int | None, Counter]:
    """The samples img2dataset's NNNNN_stats.json counts as not written (count - successes) and
    its status_dict's failure reasons; (None, {}) without a readable stats file."""
    try:
        data = json.loads(stats.read_text())
        n = int(data["count"]) - int(data["successes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, Counter()
    reasons: Counter = Counter()
    for k, v in (data.get("status_dict") or {}).items():
        if k != "success":
            reasons[_reason(k)] += int(v)
    return n, reasons


_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
MAX_REASONS = 8  # per shard; the rest is "other reasons"


def _reason(message) -> str:
    """One failure reason of img2dataset's error_message: object addresses made alike ("cannot
    identify image file <_io.BytesIO object at 0x7f...>" is one reason, not one per sample), and
    the separators of ``missing_reasons`` taken out."""
    return _ADDRESS.sub("0x…", " ".join(str(message).split())).replace("; ", ", ")


def missing_reasons(counts: Counter) -> str:
    """'HTTP Error 404: Not Found: 3; ...' (most frequent first, at most MAX_REASONS, then
    'other reasons: n'); "" when none."""
    common = counts.most_common(MAX_REASONS)
    rest = sum(counts.values()) - sum(n for _, n in common)
    return "; ".join([f"{reason}: {n}" for reason, n in common]
                     + ([f"other reasons: {rest}"] if rest else []))


def _examples(keys, n: int = 3) -> str:
    keys = list(keys)
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def _key_problems(parquet_keys: list[str], tar_keys: list[str]) -> list[str]:
    """What the parquet's keys and the tar's readable keys disagree on (even when the counts agree)."""
    in_tar, in_parquet = set(tar_keys), set(parquet_keys)
    problems = []
    missing = [k for k in dict.fromkeys(parquet_keys) if k not in in_tar]
    if missing:
        problems.append(f"{len(missing)} keys of the parquet are not in the tar (readable), e.g. "
                        f"{_examples(missing)}")
    extra = [k for k in dict.fromkeys(tar_keys) if k not in in_parquet]
    if extra:
        problems.append(f"{len(extra)} keys of the tar are not in the parquet, e.g. {_examples(extra)}")
    return problems


def key_hashes(keys: list[str]) -> np.ndarray:
    """A 64-bit digest of each key (uint64): what the index compares across shards (8 bytes a
    sample in memory, not the keys; equal digests are checked on the keys themselves)."""
    return np.frombuffer(b"".join(hashlib.blake2b(k.encode("utf-8", "surrogateescape"), digest_size=8)
                                  .digest() for k in keys), dtype="<u8").astype(np.uint64)


def _scan_shard(shard: Path) -> tuple[dict, np.ndarray]:
    """One row of the pool index and the digests of the shard's readable keys."""
    scan = scan_tar(shard)
    return _row(shard, scan), key_hashes(scan.keys)


def _row(shard: Path, scan) -> dict:
    """The shard's readable samples (its tar, verified) and its parquet's count and keys, with
    what does not add up; no duplicates yet (build_index counts them over the pool)."""
    counts = parquet_keys(shard.with_suffix(".parquet"))
    n_parquet, keys, parquet_problem = counts.n_success, counts.keys, counts.problem
    n_missing, missing = counts.n_missing, counts.missing
    if n_missing is None:  # no (readable) parquet: img2dataset's stats file, if there
        n_missing, missing = stats_missing(shard.with_name(f"{shard.stem}_stats.json"))
    problems = [scan.problem] if scan.problem else []
    if scan.n_incomplete:
        problems.append(f"{scan.n_incomplete} samples without an image or a caption")
    if n_parquet is not None and n_parquet != scan.n_complete:
        problems.append(f"parquet says {n_parquet} samples, the tar has {scan.n_complete} readable")
    if keys is not None:
        problems += _key_problems(keys, scan.keys)
    if parquet_problem:
        problems.append(parquet_problem)
    return {"shard": shard.stem, "path": workdir_path(shard), "n_samples": scan.n_complete,
            "skipped": scan.n_incomplete, "counted_from": "tar", "n_parquet": n_parquet,
            "n_readable": scan.n_complete, "problem": "; ".join(problems), "n_duplicates": 0,
            "duplicate_keys": [], "n_missing": n_missing, "missing_reasons": missing_reasons(missing)}


def build_index(pool_dir: str | Path, workers: int = 1) -> pd.DataFrame:
    """The pool index (INDEX_COLUMNS), one row per shard. ``workers`` > 1 scans shards in that
    many processes (a pool of 10^5 shards is header-scanned in hours on one core).

    Duplicate keys are found over the whole pool from 8-byte digests of the keys, not the keys
    (memory: about 30 bytes a readable sample at the peak of the sort, 1.5 GB for LAION-50M);
    only the shards holding a repeated digest are read again, for their keys."""
    shards = pool_shards(pool_dir)
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as ex:
            scanned = list(progress(ex.map(_scan_shard, shards, chunksize=16), "pool index", len(shards),
                                    "shards", "clipscale.subsets"))
    else:
        scanned = [_scan_shard(s) for s in progress(shards, "pool index", unit="shards", logger="clipscale.subsets")]
    rows = [row for row, _ in scanned]
    _mark_duplicates(shards, rows, [h for _, h in scanned])
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    index["n_parquet"] = index["n_parquet"].astype("Int64")
    index["n_missing"] = index["n_missing"].astype("Int64")
    return index


def _mark_duplicates(shards: list[Path], rows: list[dict], hashes: list[np.ndarray]) -> None:
    """Count into ``rows`` every readable sample whose key came earlier (in shard order, then
    tar order): n_duplicates, n_samples, duplicate_keys and a problem naming where the key was
    first. Digests seen once are unique keys; the others are checked on the keys."""
    if not hashes:
        return
    all_hashes = np.concatenate(hashes)
    _, first = np.unique(all_hashes, return_index=True)
    repeated = np.ones(len(all_hashes), bool)
    repeated[first] = False
    if not repeated.any():
        return
    suspects = np.isin(all_hashes, all_hashes[repeated])
    ends = np.cumsum([len(h) for h in hashes])
    first_in: dict[str, int] = {}
    for s in np.unique(np.searchsorted(ends, np.flatnonzero(suspects), side="right")):  # shard order
        keys = scan_tar(shards[s]).keys
        positions = np.flatnonzero(suspects[ends[s] - len(hashes[s]) : ends[s]])
        if len(keys) != len(hashes[s]):
            raise PoolError(f"{shards[s]} changed while the pool was indexed: index it again")
        sources: dict[int, list[str]] = {}
        for i in positions:  # in tar order
            key = keys[i]
            if key in first_in:
                sources.setdefault(first_in[key], []).append(key)
            else:
                first_in[key] = int(s)
        if not sources:
            continue
        row = rows[s]
        n_dup = sum(len(k) for k in sources.values())
        earlier = [k for src, ks in sources.items() if src != s for k in ks]
        row["n_duplicates"] = n_dup
        row["n_samples"] = row["n_readable"] - n_dup
        row["duplicate_keys"] = list(dict.fromkeys(earlier))
        said = []
        for src, ks in sources.items():
            if src == s:
                said.append(f"{len(ks)} sample{'s repeat keys' if len(ks) > 1 else ' repeats a key'} "
                            f"earlier in this shard (e.g. {_examples(dict.fromkeys(ks))})")
            else:
                said.append(f"{len(ks)} sample{'s repeat keys' if len(ks) > 1 else ' repeats a key'} "
                            f"of {shards[src].name} (e.g. {_examples(ks)})")
        if len(said) > 4:
            said = said[:3] + [f"and {sum(len(k) for k in list(sources.values())[3:])} more "
                               f"samples repeat keys of {len(said) - 3} more shards"]
        row["problem"] = "; ".join(p for p in [row["problem"], ", ".join(said) +
                                               " (the first occurrence is kept: subsets leave these out)"] if p)


def pool_problems(index: pd.DataFrame) -> list[str]:
    """The pool index's problem shards as readable lines (for logs and the results log), e.g.
    'results/world/pool/00001.tar: truncated tar (...); parquet says 100 samples, the tar has
    57 readable'. Subsets use the readable samples; the rest of these shards is left out."""
    bad = index[index["problem"].fillna("") != ""]
    return [f"{row.path}: {row.problem}" for row in bad.itertuples()]


def pool_summary(index: pd.DataFrame) -> str:
    """One line on a pool index: shards, readable, distinct and duplicate samples, parquets."""
    return (f"pool: {len(index)} shards, {int(index['n_readable'].sum())} readable samples, "
            f"{int(index['n_samples'].sum())} distinct samples, {int(index['n_duplicates'].sum())} duplicates "
            f"left out (parquets: {int(index['n_parquet'].sum())}); {len(pool_problems(index))} shards with problems")


def pool_missing(index: pd.DataFrame, shards: int = 5) -> list[str]:
    """The samples img2dataset listed and did not write, as readable lines: the pool's total by
    reason, e.g. '30 samples missing in 9 of 9 shards (listed by img2dataset, not written:
    HTTP Error 404: File not found: 30)', then the ``shards`` shards missing the most (a LAION
    pool misses some in nearly every one of its 10^5 shards: the index has them all). Not
    problems: the shards hold what their parquets say they hold."""
    if "n_missing" not in index:
        return []
    n = index["n_missing"].fillna(0).astype(int)
    if not n.sum():
        return []
    total: Counter = Counter()
    for reasons in index["missing_reasons"].fillna(""):
        for part in filter(None, reasons.split("; ")):
            reason, _, count = part.rpartition(": ")
            total[reason] += int(count)
    lines = [f"{int(n.sum())} samples missing in {int((n > 0).sum())} of {len(index)} shards "
             f"(listed by img2dataset, not written: {missing_reasons(total)})"]
    worst = n[n > 0].sort_values(ascending=False, kind="stable").index[:shards]
    lines += [f"{index.at[i, 'path']}: {n[i]} samples missing ({index.at[i, 'missing_reasons']})"
              for i in worst]
    return lines


def shard_order(index: pd.DataFrame, seed: int) -> list[int]:
    """The seeded random order of the pool's shards shared by every scale."""
    ordered = index.sort_values("shard").reset_index(drop=True)
    perm = np.random.default_rng(np.random.SeedSequence([seed, 0x5B5E7])).permutation(len(ordered))
    return [int(i) for i in perm]


def plan(index: pd.DataFrame, size: int, seed: int) -> list[dict]:
    """Which shards (and how many samples of the last one) make the subset of `size` samples."""
    total = int(index["n_samples"].sum())
    if size > total:
        raise PoolError(f"subset of {size} samples asked, but the pool has only {total}")
    ordered = index.sort_values("shard").reset_index(drop=True)
    parts, have = [], 0
    for i in shard_order(index, seed):
        row = ordered.iloc[i]
        n = int(row["n_samples"])
        if n == 0:
            continue
        take = min(n, size - have)
        n_dup = int(row.get("n_duplicates", 0) or 0)
        # partial: the subset's file is a re-write of part of the shard (cut, or without duplicates)
        part = {"shard": row["shard"], "path": row["path"], "n_samples": take,
                "partial": take < n or n_dup > 0}
        if n_dup:
            part["duplicates"] = n_dup  # left out of the shard's file
        parts.append(part)
        have += take
        if have == size:
            break
    return parts


def copy_prefix(src: str | Path, dst: str | Path, n: int, drop=()) -> int:
    """Stream the first n complete samples of a tar shard into a new shard (incomplete ones,
    which the index does not count and open_clip would drop, are left out, and so are
    duplicates: a key in ``drop`` (first seen in an earlier shard) or already written)."""
    written, seen = 0, set()
    drop = set(drop)
    with ShardWriter(dst) as w:
        for key, files in iter_samples(src):
            if written == n:
                break
            if is_complete(files) and key not in drop and key not in seen:
                w.write(key, files)
                seen.add(key)
                written += 1
    if written < n:
        raise PoolError(f"{src}: expected at least {n} samples, found {written}")
    return written


def _outside(relative: str) -> bool:
    return relative == os.pardir or relative.startswith(os.pardir + os.sep)


def workdir_path(path: str | Path) -> str:
    """``path`` as manifests and the pool index store it: relative to the working directory
    when inside it (so a copied workdir names its own files), else absolute."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute, os.getcwd())
    return absolute if _outside(relative) else relative


def require_in_workdir(folder: str | Path, what: str) -> str:
    """``folder`` relative to the working directory; an error when it is outside (manifests name
    their shards relative to the workdir, so one written outside could not be read)."""
    relative = workdir_path(folder)
    if os.path.isabs(relative):
        raise PoolError(f"{what} {folder} is outside the working directory {os.getcwd()}: run "
                        f"from the directory that holds it (manifests are relative to it)")
    return relative


def empty_shard_dir(out_dir: str | Path, what: str) -> tuple[Path, str]:
    """``out_dir``/shards made empty (a subset's links and cut shards are written afresh), and
    its name relative to the working directory (an error when outside it)."""
    shard_dir = Path(out_dir) / "shards"
    name = require_in_workdir(shard_dir, what)
    shard_dir.mkdir(parents=True, exist_ok=True)
    for old in shard_dir.iterdir():
        old.unlink()
    return shard_dir, name


def link_shard(target: str | Path, link: Path) -> None:
    """Symlink ``link`` to the pool shard ``target``. A shard inside the working directory is
    linked relatively (from the link's folder), so cp -a / mv of the whole workdir keeps the
    links inside the copy; one outside (a user's pool) by its absolute path, where the data is."""
    real = os.path.realpath(target)
    if _outside(os.path.relpath(real, os.path.realpath(os.getcwd()))):
        os.symlink(real, link)
    else:
        os.symlink(os.path.relpath(real, os.path.realpath(link.parent)), link)


def shard_url(shard_dir: str, n_shards: int) -> str:
    """The brace pattern of a subset's numbered shards (what open_clip's --train-data takes)."""
    return f"{shard_dir}/{{000000..{n_shards - 1:06d}}}.tar"


def write_subset(index: pd.DataFrame, name: str, size: int, seed: int, out_dir: str | Path) -> dict:
    """Write results/data/subsets/<name>/: shards/ (links + one cut shard) and manifest.json.
    ``out_dir`` must be inside the working directory (the manifest's paths are relative to it)."""
    out_dir = Path(out_dir)
    shard_dir, shard_dir_name = empty_shard_dir(out_dir, "subset folder")
    parts = plan(index, size, seed)
    drop = (dict(zip(index["shard"], index["duplicate_keys"])) if "duplicate_keys" in index
            else {})
    entries = []
    for i, part in enumerate(parts):
        link = shard_dir / f"{i:06d}.tar"
        if part["partial"]:
            copy_prefix(part["path"], link, part["n_samples"], drop.get(part["shard"], ()))
        else:
            link_shard(part["path"], link)
        entries.append({**part, "file": workdir_path(link)})
    manifest = {
        "name": name,
        "n_samples": int(sum(p["n_samples"] for p in parts)),
        "seed": seed,
        "n_shards": len(parts),
        "url": shard_url(shard_dir_name, len(parts)),
        "shards": entries,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise PoolError(f"subset manifest not found: {path}") from None
    except json.JSONDecodeError as e:
        raise PoolError(f"subset manifest {path} is not valid JSON: {e}") from None
    for key in ("n_samples", "url", "shards"):
        if key not in manifest:
            raise PoolError(f"subset manifest {path} has no {key!r}")
    for source in manifest["url"].split("::"):  # open_clip's separator of several sources
        _check_in_workdir(path, "url", source)
    for entry in manifest["shards"]:
        _check_in_workdir(path, "shard file", entry["file"])
    return manifest


def _check_in_workdir(manifest_path: Path, what: str, value: str) -> None:
    """A manifest names its shards relative to the working directory; an absolute path or one
    leading out of it would read another workdir's shards (or none, once it is gone)."""
    if os.path.isabs(value):
        problem = "is an absolute path"
    elif _outside(os.path.normpath(value)):
        problem = "points outside the working directory"
    else:
        return
    raise PoolError(f"subset manifest {manifest_path}: {what} {value!r} {problem}; its paths must be "
                    f"relative to the working directory ({os.getcwd()}): re-make the subset")


def subset_keys(manifest: dict) -> list[str]:
    """All sample keys of a subset, in order (reads the shards; complete samples only)."""
    keys = []
    for entry in manifest["shards"]:
        n = 0
        for key, files in iter_samples(entry["file"]):
            if n == entry["n_samples"]:
                break
            if is_complete(files):
                keys.append(key)
                n += 1
    return keys

