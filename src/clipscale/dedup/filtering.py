"""Subsets without the matched pool samples (dedup.remove_duplicates)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from clipscale.dedup.formats import DedupError
from clipscale.shards import ShardWriter, is_complete, iter_samples

log = logging.getLogger(__name__)

def filter_subset(manifest_path: str | Path, matches: pd.DataFrame, out_dir: str | Path) -> dict:
    """Write ``out_dir`` (shards/ + manifest.json, the format of clipscale.subsets) holding the
    subset of ``manifest_path`` without the pool samples in ``matches``.

    Shards keep their boundaries: a whole pool shard with no matched sample is linked without
    being read; a shard with one (or the cut last shard of the subset) is re-written, streamed,
    and its entry says how many samples it lost ("removed"). A shard left empty is dropped. With
    a pool_shard column in ``matches`` only those shards are read; without it, every shard is.
    """
    from clipscale.subsets import empty_shard_dir, link_shard, read_manifest, shard_url, workdir_path

    manifest = read_manifest(manifest_path)
    keys = matches["pool_key"].astype(str)
    if "pool_shard" in matches:
        by_shard: dict[str, set[str]] = {}
        for shard, key in zip(matches["pool_shard"].astype(str), keys):
            by_shard.setdefault(_resolved(shard), set()).add(key)
    else:
        by_shard = None
        everywhere = set(keys)
    out_dir = Path(out_dir)
    shard_dir, shard_dir_name = empty_shard_dir(out_dir, "filtered subset folder")
    entries, removed_keys = [], []
    for entry in manifest["shards"]:
        src, n_in, partial = entry["file"], int(entry["n_samples"]), bool(entry.get("partial"))
        if not Path(src).exists():
            raise DedupError(f"{manifest_path}: shard {src} not found")
        drop = everywhere if by_shard is None else by_shard.get(_resolved(entry["path"]), set())
        dst = shard_dir / f"{len(entries):06d}.tar"
        if by_shard is not None and not drop and not partial:
            link_shard(entry["path"], dst)
            kept, dropped = n_in, []
        else:
            kept, dropped = _copy_without(src, dst, n_in, drop)
            if kept == 0:
                dst.unlink()
                removed_keys += dropped
                continue
            if kept == n_in and not partial and Path(entry["path"]).exists():
                dst.unlink()  # nothing removed after all: link the pool's shard instead
                link_shard(entry["path"], dst)
        removed_keys += dropped
        entries.append({**entry, "n_samples": kept, "partial": partial or bool(dropped),
                        "removed": len(dropped), "file": workdir_path(dst)})
    if not entries:
        raise DedupError(f"{manifest_path}: every sample of the subset matched a test image")
    out = {
        **{k: v for k, v in manifest.items() if k not in ("shards", "url", "n_shards", "n_samples")},
        "name": manifest.get("name", out_dir.name),
        "n_samples": int(sum(e["n_samples"] for e in entries)),
        "n_shards": len(entries),
        "url": shard_url(shard_dir_name, len(entries)),
        "shards": entries,
        "dedup": {"source_manifest": workdir_path(manifest_path), "removed": len(removed_keys),
                  "n_samples_before": int(manifest["n_samples"]),
                  "removed_examples": removed_keys[:20]},
    }
    (out_dir / "manifest.json").write_text(json.dumps(out, indent=1))
    log.info("%s: %d of %d samples removed, %d left", manifest_path, len(removed_keys),
             manifest["n_samples"], out["n_samples"])
    return out


def _resolved(path: str) -> str:
    return str(Path(path).resolve())


def _copy_without(src: str, dst: Path, n: int, drop: set[str]) -> tuple[int, list[str]]:
    """Stream the first n complete samples of src into dst (what a manifest counts), leaving
    out the keys in drop. Returns (samples written, keys left out); fewer than n samples in src
    is an error."""
    seen, written, dropped = 0, 0, []
    with ShardWriter(dst) as w:
        for key, files in iter_samples(src):
            if seen == n:
                break
            if not is_complete(files):
                continue
            seen += 1
            if key in drop:
                dropped.append(key)
            else:
                w.write(key, files)
                written += 1
    if seen < n:
        dst.unlink(missing_ok=True)
        raise DedupError(f"{src}: the subset manifest says {n} samples, the shard has {seen}")
    return written, dropped
