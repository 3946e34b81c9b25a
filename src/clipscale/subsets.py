"""Nested random subsets of an image-text pool (the paper's LAION-80M ⊂ 400M ⊂ 2B), as shard manifests.

The pool is an img2dataset output directory: NNNNN.tar shards, with NNNNN.parquet beside them.
A subset of size n is a seeded random order of the pool's shards, taken from the front until n
samples are reached; the last shard is cut to the exact count. Every scale uses the same order,
so each subset is a prefix of the next one: small ⊂ medium ⊂ large.

Whole shards are not copied: the subset's shards/ folder holds symbolic links to them, numbered
000000.tar ... so that one brace pattern names the subset (what open_clip's --train-data takes).
Only the one cut shard is re-written (streamed, one sample in memory at a time). Memory use does
not depend on the pool size beyond one row per shard.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from clipscale.shards import ShardWriter, SkipCounter, iter_samples

INDEX_COLUMNS = ["shard", "path", "n_samples", "skipped", "counted_from"]


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


def count_samples(shard: Path) -> tuple[int, int, str]:
    """Samples in one shard: (n, skipped, how). Uses img2dataset's parquet when present
    (status == 'success' rows), else reads the tar's headers; a truncated tar counts what is
    readable and reports the rest as skipped."""
    parquet = shard.with_suffix(".parquet")
    if parquet.exists():
        try:
            meta = pd.read_parquet(parquet, columns=["status"])
            return int((meta["status"] == "success").sum()), 0, "parquet"
        except Exception:  # a broken parquet: fall back to the tar itself
            pass
    skipped = SkipCounter()
    n = sum(1 for _key, files in iter_samples(shard, skipped) if files)
    return n, skipped.total, "tar"


def build_index(pool_dir: str | Path) -> pd.DataFrame:
    rows = []
    for shard in pool_shards(pool_dir):
        n, skipped, how = count_samples(shard)
        rows.append({"shard": shard.stem, "path": str(shard.resolve()), "n_samples": n,
                     "skipped": skipped, "counted_from": how})
    return pd.DataFrame(rows, columns=INDEX_COLUMNS)


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
        parts.append({"shard": row["shard"], "path": row["path"], "n_samples": take,
                      "partial": take < n})
        have += take
        if have == size:
            break
    return parts


def copy_prefix(src: str | Path, dst: str | Path, n: int) -> int:
    """Stream the first n complete samples of a tar shard into a new shard."""
    written = 0
    with ShardWriter(dst) as w:
        for key, files in iter_samples(src):
            if written == n:
                break
            if files:
                w.write(key, files)
                written += 1
    if written < n:
        raise PoolError(f"{src}: expected at least {n} samples, found {written}")
    return written


def write_subset(index: pd.DataFrame, name: str, size: int, seed: int, out_dir: str | Path) -> dict:
    """Write results/data/subsets/<name>/: shards/ (links + one cut shard) and manifest.json."""
    out_dir = Path(out_dir)
    shard_dir = out_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    for old in shard_dir.iterdir():
        old.unlink()
    parts = plan(index, size, seed)
    entries = []
    for i, part in enumerate(parts):
        link = shard_dir / f"{i:06d}.tar"
        if part["partial"]:
            copy_prefix(part["path"], link, part["n_samples"])
        else:
            os.symlink(part["path"], link)
        entries.append({**part, "file": str(link.resolve() if part["partial"] else link.absolute())})
    manifest = {
        "name": name,
        "n_samples": int(sum(p["n_samples"] for p in parts)),
        "seed": seed,
        "n_shards": len(parts),
        "url": str(shard_dir.absolute() / f"{{000000..{len(parts) - 1:06d}}}.tar"),
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
    return manifest


def subset_keys(manifest: dict) -> list[str]:
    """All sample keys of a subset, in order (reads the shards)."""
    keys = []
    for entry in manifest["shards"]:
        for n, (key, _files) in enumerate(iter_samples(entry["file"])):
            if n == entry["n_samples"]:
                break
            keys.append(key)
    return keys

