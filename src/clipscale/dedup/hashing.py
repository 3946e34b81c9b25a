"""pHash of tar shards and downstream test splits into parquets; gathering the pool's parts; the hash report."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clipscale import phash as P
from clipscale.dedup.formats import HASH_SCHEMA, META_KEY, DedupError
from clipscale.dedup.modes import column, variant_function
from clipscale.logs import progress
from clipscale.shards import SkipCounter, iter_samples

log = logging.getLogger(__name__)

# 1. hashing -------------------------------------------------------------------------------------


def image_member(files: dict) -> str | None:
    """The extension of a sample's (non-empty) image member, or None."""
    for ext in P.IMAGE_EXTENSIONS:
        if files.get(ext):
            return ext
    return None


def iter_image_members(tar: str, skipped: SkipCounter, stats: dict) -> Iterator[tuple[str, str, bytes]]:
    """(key, extension, bytes) of each sample of a tar that has an image member; the others are
    counted in ``skipped`` (an empty .jpg is an "empty image member", not also "no image
    member"), every sample in stats['n_samples']."""
    for key, files in iter_samples(tar, skipped):
        stats["n_samples"] = stats.get("n_samples", 0) + 1
        ext = image_member(files)
        if ext is None:
            if any(e in files for e in P.IMAGE_EXTENSIONS):
                skipped.add("empty image member", f"{tar}:{key}")
            else:
                skipped.add("no image member", f"{tar}:{key} (members: {sorted(files)})")
            continue
        yield key, ext, files[ext]


def skip_bad_image(skipped: SkipCounter, error: Exception, where: str) -> None:
    """Count an image that does not decode (Pillow raises many types for bad bytes)."""
    from PIL import UnidentifiedImageError

    reason = ("not an image" if isinstance(error, UnidentifiedImageError)
              else f"corrupt image ({type(error).__name__})")
    skipped.add(reason, f"{where}: {error}")


def iter_hashes(tars: Iterable[str | Path], skipped: SkipCounter, stats: dict,
                batch_size: int = 4096) -> Iterator[tuple[list[str], str, np.ndarray]]:
    """Yield (keys, shard, hashes) per tar. Bad samples are counted in ``skipped`` (with the key)
    and left out, each once, with its most specific reason (an empty .jpg is an "empty image
    member", not also "no image member"); a cut or corrupt tar counts once for the shard.
    ``stats`` gets n_samples (samples read) and n_hashed."""
    for keys, tar, columns in iter_hash_columns(tars, skipped, stats, batch_size):
        yield keys, tar, columns["phash"]


def iter_hash_columns(tars: Iterable[str | Path], skipped: SkipCounter, stats: dict,
                      batch_size: int = 4096, variants: Sequence[str] = ()
                      ) -> Iterator[tuple[list[str], str, dict[str, np.ndarray]]]:
    """``iter_hashes`` with the hashes of image variants (clipscale.dedup.modes: 'mirror',
    'trim', 'crop80', ...) beside each image's own: yields (keys, shard, {column: hashes}) with
    the columns phash and phash_<variant>. Each image is decoded once for all its hashes. A
    variant that fails on an image that hashes (an odd mode) gets the image's own hash and is
    counted in stats['variant_errors']."""
    funcs = {v: variant_function(v) for v in variants}
    names = ["phash"] + [column(v) for v in variants]
    for tar in tars:
        tar = str(tar)
        hashers = [P.BatchHasher(batch_size) for _ in names]
        keys: list[str] = []
        for key, ext, data in iter_image_members(tar, skipped, stats):
            try:
                if funcs:
                    pixels = _prepare_variants(data, ext, funcs, stats)
                    for hasher, px in zip(hashers, pixels):
                        hasher.add(px)
                else:
                    hashers[0].add_bytes(data, ext)
            except Exception as e:  # Pillow raises many types for bad bytes
                skip_bad_image(skipped, e, f"{tar}:{key}.{ext}")
                continue
            keys.append(key)
        columns = dict(zip(names, (h.flush() for h in hashers)))
        stats["n_hashed"] = stats.get("n_hashed", 0) + len(keys)
        yield keys, tar, columns


def _prepare_variants(data: bytes, ext: str, funcs: dict, stats: dict) -> list[np.ndarray]:
    """The prepared pixels of an image and of each of its variants (one decode, one grey
    conversion: the variants crop and mirror, which commute with pHash's conversion to grey)."""
    with P.open_image(data, ext) as image:
        grey = image.convert("L")  # raises on a bad image: the sample is skipped
    own = P.prepare(grey)
    out = [own]
    for variant, func in funcs.items():
        try:
            image = func(grey)
            out.append(own if image is grey else P.prepare(image))  # trim: most have no border
        except Exception as e:
            errors = stats.setdefault("variant_errors", {})
            errors[variant] = errors.get(variant, 0) + 1
            log.warning("%s variant of an image failed (%s: %s): its own hash is used",
                        variant, type(e).__name__, e)
            out.append(own)
    return out


def hash_schema(variants: Sequence[str] = ()) -> pa.Schema:
    """key, shard, phash and a uint64 column phash_<variant> per variant."""
    return pa.schema(list(HASH_SCHEMA) + [(column(v), pa.uint64()) for v in variants])


def _hash_table(keys: list[str], shard: str, columns: dict[str, np.ndarray],
                schema: pa.Schema = HASH_SCHEMA) -> pa.Table:
    return pa.table({"key": pa.array(keys, pa.string()),
                     "shard": pa.array([shard] * len(keys), pa.string()),
                     **{c: pa.array(h, pa.uint64()) for c, h in columns.items()}}, schema=schema)


def _hash_one(tar: str, batch_size: int, variants: Sequence[str] = ()
              ) -> tuple[list[str], str, dict, SkipCounter, dict]:
    """Hash one tar (a worker's task): keys, shard, hash columns, what was skipped, counts."""
    skipped, stats = SkipCounter(), {"n_samples": 0, "n_hashed": 0}
    ((keys, shard, columns),) = iter_hash_columns([tar], skipped, stats, batch_size, variants)
    return keys, shard, columns, skipped, stats


def _add_stats(total: dict, part: dict) -> None:
    for k, v in part.items():
        if isinstance(v, dict):
            have = total.setdefault(k, {})
            for kk, vv in v.items():
                have[kk] = have.get(kk, 0) + vv
        else:
            total[k] = total.get(k, 0) + v


def hash_shards(tars: Sequence[str | Path], out: str | Path, name: str | None = None,
                batch_size: int = 4096, workers: int = 1, variants: Sequence[str] = ()) -> dict:
    """Hash every image of the tar shards into ``out`` (parquet: key, shard, phash).

    ``workers`` > 1 hashes that many shards at a time in separate processes (rows are written in
    the order of ``tars`` all the same). ``variants`` (clipscale.dedup.modes) adds a column
    phash_<variant> per variant, the hash of that variant of each image. Returns the report
    (also stored in the parquet's metadata): name, shards, n_samples, n_hashed, skipped (total,
    counts by reason, example keys), seconds (and variants, variant_errors when asked for).
    """
    variants = list(variants)
    for v in variants:
        variant_function(v)  # an unknown variant is an error before any work
    schema = hash_schema(variants)
    tars = [str(t) for t in tars]
    for tar in tars:
        if not Path(tar).is_file():
            raise DedupError(f"shard not found: {tar}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    skipped, stats = SkipCounter(), {"n_samples": 0, "n_hashed": 0}
    start = time.perf_counter()
    writer = pq.ParquetWriter(tmp, schema)
    done = progress(what=f"hash {name or out.stem}", total=len(tars), unit="shards", logger=log)
    try:
        if workers > 1 and len(tars) > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(min(workers, len(tars))) as ex:
                for keys, shard, columns, part_skipped, part in ex.map(
                        _hash_one, tars, [batch_size] * len(tars), [variants] * len(tars)):
                    skipped.merge(part_skipped)
                    _add_stats(stats, part)
                    writer.write_table(_hash_table(keys, shard, columns, schema))
                    log.info("%s: %d images hashed", shard, len(keys))
                    done.update()
        else:
            for keys, shard, columns in iter_hash_columns(tars, skipped, stats, batch_size, variants):
                writer.write_table(_hash_table(keys, shard, columns, schema))
                log.info("%s: %d images hashed", shard, len(keys))
                done.update()
    except BaseException:
        done.close()
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    done.close()
    writer.close()
    seconds = time.perf_counter() - start
    if variants:
        stats = {**stats, "variants": variants}
    report = {"name": name or out.stem, "shards": tars, **stats, "skipped": skipped.as_dict(),
              "seconds": round(seconds, 3),
              "images_per_s": round(stats["n_hashed"] / seconds, 1) if seconds > 0 else None}
    _set_metadata(tmp, out, report)
    log.info("%s: %d samples, %d hashed, %d skipped %s (%.1f images/s, %d worker%s)",
             report["name"], stats["n_samples"], stats["n_hashed"], skipped.total,
             dict(skipped.counts), report["images_per_s"] or 0, workers, "s" * (workers != 1))
    return report


def _set_metadata(src: Path, dst: Path, report: dict) -> None:
    """Re-write the parquet's footer with the report in its schema metadata (row groups are
    copied as they are), then move it into place."""
    table_file = pq.ParquetFile(src)
    schema = table_file.schema_arrow.with_metadata({META_KEY: json.dumps(report).encode()})
    tmp2 = dst.with_name(dst.name + ".tmp2")
    with pq.ParquetWriter(tmp2, schema) as writer:
        for i in range(table_file.num_row_groups):
            writer.write_table(table_file.read_row_group(i).replace_schema_metadata(schema.metadata))
    src.unlink()
    tmp2.replace(dst)


def read_report(path: str | Path) -> dict:
    """The report stored in a hash (or matches) parquet's metadata."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except FileNotFoundError:
        raise DedupError(f"hash file not found: {path}") from None
    except pa.ArrowInvalid as e:
        raise DedupError(f"{path} is not a parquet file: {e}") from None
    if META_KEY not in meta:
        raise DedupError(f"{path} has no clipscale.dedup report in its metadata "
                         "(not written by clipscale.dedup?)")
    return json.loads(meta[META_KEY])


def downstream_test_shards(dataset_dir: str | Path, split: str = "test") -> list[Path]:
    """The tar shards of a clip_benchmark webdataset split: {dir}/{split}/{0..n-1}.tar as listed
    by nshards.txt, or every .tar there (in numeric order) when there is no nshards.txt."""
    split_dir = Path(dataset_dir) / split
    if not split_dir.is_dir():
        raise DedupError(f"no {split}/ split in downstream set {dataset_dir}")
    nshards = split_dir / "nshards.txt"
    if nshards.exists():
        try:
            n = int(nshards.read_text().strip())
        except ValueError:
            raise DedupError(f"{nshards}: not a number: {nshards.read_text()[:40]!r}") from None
        tars = [split_dir / f"{i}.tar" for i in range(n)]
        missing = [str(t) for t in tars if not t.is_file()]
        if missing:
            raise DedupError(f"{nshards} lists {n} shards, missing: {missing[:5]}")
        return tars
    tars = sorted(split_dir.glob("*.tar"), key=lambda p: (len(p.stem), p.stem))
    if not tars:
        raise DedupError(f"no .tar shards in {split_dir}")
    return tars


def group_shards(shards: Sequence[str], shards_per_job: int) -> dict[str, list[str]]:
    """Pool shards -> hash jobs: {'00000': first shards_per_job shards, '00001': ...}."""
    if shards_per_job < 1:
        raise DedupError(f"dedup.shards_per_job must be >= 1, got {shards_per_job}")
    shards = list(shards)
    return {f"{i:05d}": shards[s : s + shards_per_job]
            for i, s in enumerate(range(0, len(shards), shards_per_job))}


def list_shards(folder: str | Path) -> list[str]:
    """The .tar shards of a pool directory, sorted (the files clipscale.subsets.pool_shards
    indexes): one directory read, no stat per shard (except of symbolic links)."""
    with os.scandir(folder) as entries:  # Path.suffix == ".tar": ".tar" alone has none
        names = sorted(e.name for e in entries
                       if e.name.endswith(".tar") and len(e.name) > 4 and e.is_file())
    base = os.path.join(str(Path(folder)), "")  # the paths str(Path(folder) / name) gives
    return [base + name for name in names]


def shards_stamp(shards: Sequence[str], cache: dict | None = None) -> str:
    """A digest of the shards' paths, sizes and modification times (ns): it changes when a shard
    is added, removed, renamed, rewritten or touched. Given to a job as a param, it makes
    Snakemake rerun the job when its shards change (the params trigger) without listing every
    shard as an input file. ``cache`` (path -> (size, mtime_ns)) saves the stat of a shard
    stamped twice."""
    cache = {} if cache is None else cache
    lines = []
    for shard in shards:
        stamp = cache.get(shard)
        if stamp is None:
            try:
                st = os.stat(shard)
                stamp = cache[shard] = st.st_size, st.st_mtime_ns
            except FileNotFoundError:
                stamp = cache[shard] = -1, -1
        lines.append(f"{shard}\0{stamp[0]}\0{stamp[1]}\n")
    return hashlib.blake2b("".join(lines).encode(), digest_size=16).hexdigest()


# 2. gather --------------------------------------------------------------------------------------


def gather(parts: Sequence[str | Path], out: str | Path) -> dict:
    """Concatenate pool hash files (streamed, one row group at a time) into ``out``; its
    metadata gets the summed report (n_samples, n_hashed, skipped) and the per-part reports."""
    if not parts:
        raise DedupError("no pool hash files to gather")
    reports = [read_report(p) for p in parts]
    skipped = SkipCounter()
    for r in reports:
        skipped.counts.update(r["skipped"]["counts"])
        for reason, examples in r["skipped"]["examples"].items():
            have = skipped.examples.setdefault(reason, [])
            have.extend(examples[: max(0, 10 - len(have))])
    report = {
        "name": "pool",
        "n_parts": len(parts),
        "n_shards": sum(len(r["shards"]) for r in reports),
        "n_samples": sum(r["n_samples"] for r in reports),
        "n_hashed": sum(r["n_hashed"] for r in reports),
        "skipped": skipped.as_dict(),
        "seconds": round(sum(r["seconds"] for r in reports), 3),
        "parts": [{k: r[k] for k in ("name", "n_samples", "n_hashed")} |
                  {"skipped": r["skipped"]["total"]} for r in reports],
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    columns = [open_hashes(p).schema_arrow.remove_metadata() for p in parts]
    for part, cols in zip(parts, columns):
        if cols != columns[0]:
            raise DedupError(f"{part}: hash columns {cols.names} differ from {parts[0]}'s "
                             f"{columns[0].names} (hashed with other dedup settings?)")
    if len(columns[0]) > len(HASH_SCHEMA):
        report["variants"] = reports[0].get("variants", [])
    schema = columns[0].with_metadata({META_KEY: json.dumps(report).encode()})
    n = 0
    with pq.ParquetWriter(tmp, schema) as writer:
        for part in parts:
            f = open_hashes(part)
            for i in range(f.num_row_groups):
                rg = f.read_row_group(i)
                n += rg.num_rows
                writer.write_table(rg.replace_schema_metadata(schema.metadata))
    if n != report["n_hashed"]:
        tmp.unlink()
        raise DedupError(f"gathered {n} rows but the parts report {report['n_hashed']} hashes")
    tmp.replace(out)
    log.info("gathered %d pool hashes from %d files", n, len(parts))
    return report


def hash_report(pool: str | Path, downstream: Sequence[str | Path]) -> dict:
    """One readable summary of every hash job: pool totals and each downstream set."""
    out = {"pool": read_report(pool), "downstream": {}}
    for path in downstream:
        r = read_report(path)
        out["downstream"][r["name"]] = r
    return out


def open_hashes(path: str | Path) -> pq.ParquetFile:
    """A hash parquet (key, shard, phash and any phash_<variant> uint64 columns), checked;
    DedupError naming the file otherwise."""
    if not Path(path).is_file():
        raise DedupError(f"hash file not found: {path}")
    try:
        f = pq.ParquetFile(path)
    except pa.ArrowInvalid as e:
        raise DedupError(f"{path} is not a parquet file: {e}") from None
    schema = f.schema_arrow.remove_metadata()
    base = pa.schema(list(schema)[: len(HASH_SCHEMA)])
    extra = list(schema)[len(HASH_SCHEMA):]
    if base != HASH_SCHEMA or not all(c.name.startswith("phash_") and c.type == pa.uint64()
                                      for c in extra):
        raise DedupError(f"{path}: not a hash file (columns {f.schema_arrow.names}, "
                         f"expected key: string, shard: string, phash: uint64 "
                         f"[, phash_<variant>: uint64 ...])")
    return f
