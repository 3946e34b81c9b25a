"""Mode embedding: near-duplicates by the cosine similarity of learned image features.

pHash compares pixels' low frequencies; a CLIP image encoder maps a flipped, framed, cropped or
re-coloured copy close to its original, as DataComp deduplicates with learned descriptors. The
encoder is a checkpoint the pipeline has: one of its own trained runs (``dedup.embedding.run``,
by default the grid's run of most compute) or a user-given open_clip checkpoint
(``dedup.embedding.checkpoint`` with its ``model``). Every pool image and every test image is
encoded once (L2-normalised features, float16, one ``.npz`` per pool hash group and per test set,
written by the jobs ``dedup_embed_pool`` / ``dedup_embed_downstream``), and an exact inner-product
search with faiss (``IndexFlatIP`` over the test features, the small side; a range search with the
pool features streamed through it) gives every pair at cosine similarity >= ``threshold``. The
pairs join the hash modes' in ``matches.parquet`` as mode ``embedding`` (their ``similarity``
set, ``distance`` 0), so the overlap table, the planted recall and the filtered subsets treat
them like any mode's.

Unreadable images are skipped and counted as the hash jobs count them (never fatal).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clipscale import phash as P
from clipscale.dedup.formats import PAIR_SCHEMA, DedupError
from clipscale.dedup.hashing import iter_image_members, skip_bad_image
from clipscale.logs import progress
from clipscale.shards import SkipCounter

log = logging.getLogger(__name__)

MODE = "embedding"


def encoder(config: Mapping) -> dict:
    """Which checkpoint encodes the images: {"model", "checkpoint"} of a user-given file, or
    {"model", "run"} of one of our runs (dedup.embedding.run; by default the grid's run of most
    compute: its last model, largest data scale and most samples seen, cosine schedule first)."""
    from clipscale import grid
    from clipscale.config import format_count, parse_count

    emb = config["dedup"]["embedding"]
    if emb.get("checkpoint"):
        if not emb.get("model"):
            raise DedupError("dedup.embedding.checkpoint needs dedup.embedding.model (its architecture)")
        return {"model": emb["model"], "checkpoint": str(emb["checkpoint"])}
    if emb.get("run"):
        r = emb["run"]
        label = format_count(parse_count(r["samples_seen"]))
        label += "-cooldown" if r.get("schedule") == grid.CONST_COOLDOWN else ""
        try:
            run = grid.find_run(config, r["model"], r["scale"], label)
        except KeyError:
            raise DedupError(f"dedup.embedding.run: {r['model']}/{r['scale']}/{label} is not a run of "
                             f"the grid") from None
    else:
        runs = grid.runs(config)
        if not runs:
            raise DedupError("mode embedding: the grid has no run to encode images with; give "
                             "dedup.embedding.checkpoint and model")
        models, scales = config["grid"]["models"], list(config["grid"]["scales"])
        run = max(runs, key=lambda r: (models.index(r.model), scales.index(r.scale) if r.scale in scales else -1,
                                       r.samples_seen, r.schedule == grid.COSINE))
    return {"model": run.model, "run": run}


def load_encoder(config: Mapping, model: str, checkpoint: str | Path, device: str = "cpu"):
    """The image encoder of a checkpoint, loaded as the evaluation loads it (the config's custom
    models registered with open_clip; the file checked to hold tensors only first)."""
    from clipscale import models
    from clipscale.evaluate.benchmark import Model
    from clipscale.evaluate.checkpoints import check_checkpoint

    if not Path(checkpoint).is_file():
        raise DedupError(f"embedding checkpoint not found: {checkpoint}")
    models.register(dict(config))
    check_checkpoint(checkpoint)  # weights only: never unpickle objects from a file on disk
    return Model.load(model, str(checkpoint), device, amp=False)


def _batches(tars: Sequence[str | Path], transform, skipped: SkipCounter, stats: dict,
             batch_size: int) -> Iterator[tuple[list[str], list[str], object]]:
    """(keys, shards, image tensor) batches of the images of the tars; bad samples counted."""
    import torch

    keys, shards, images = [], [], []
    for tar in tars:
        tar = str(tar)
        for key, ext, data in iter_image_members(tar, skipped, stats):
            try:
                with P.open_image(data, ext) as image:
                    images.append(transform(image.convert("RGB")))
            except Exception as e:  # Pillow raises many types for bad bytes
                skip_bad_image(skipped, e, f"{tar}:{key}.{ext}")
                continue
            keys.append(key)
            shards.append(tar)
            if len(images) == batch_size:
                yield keys, shards, torch.stack(images)
                keys, shards, images = [], [], []
    if images:
        yield keys, shards, torch.stack(images)


def embed_shards(encoder, tars: Sequence[str | Path], out: str | Path, name: str,
                 batch_size: int = 256) -> dict:
    """Encode every image of the tars into ``out`` (.npz: key, shard, features float16 [n, d],
    L2-normalised; report: the JSON of name, checkpoint, n_samples, n_embedded, skipped,
    seconds). Returns the report."""
    import torch
    import torch.nn.functional as F

    tars = [str(t) for t in tars]
    for tar in tars:
        if not Path(tar).is_file():
            raise DedupError(f"shard not found: {tar}")
    skipped, stats = SkipCounter(), {"n_samples": 0}
    start = time.perf_counter()
    keys, shards, feats = [], [], []
    done = progress(what=f"encode {name}", unit="images", logger=log)  # the total is known once read
    with torch.no_grad(), done:
        for k, s, images in _batches(tars, encoder.transform, skipped, stats, batch_size):
            f = F.normalize(encoder.model.encode_image(images.to(encoder.device)).float(), dim=-1)
            feats.append(f.cpu().numpy().astype(np.float16))
            keys += k
            shards += s
            done.update(len(k))
    dim = feats[0].shape[1] if feats else 0
    features = np.concatenate(feats) if feats else np.zeros((0, dim), np.float16)
    report = {"name": name, "checkpoint": str(encoder.path), "model": encoder.name, "shards": len(tars),
              "n_samples": stats["n_samples"], "n_embedded": len(keys), "dim": int(dim),
              "skipped": skipped.as_dict(), "seconds": round(time.perf_counter() - start, 3)}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, key=np.array(keys, dtype=str), shard=np.array(shards, dtype=str), features=features,
             report=np.array(json.dumps(report)))
    tmp.replace(out)
    log.info("%s: %d of %d images encoded (%d skipped) in %.1fs", name, len(keys), stats["n_samples"],
             report["skipped"]["total"], report["seconds"])
    return report


def read_embeddings(path: str | Path) -> dict:
    """key, shard, features (float32) and report of an embeddings file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {"key": z["key"], "shard": z["shard"], "features": z["features"].astype(np.float32),
                    "report": json.loads(str(z["report"]))}
    except FileNotFoundError:
        raise DedupError(f"embeddings file not found: {path}") from None
    except (KeyError, ValueError, OSError) as e:
        raise DedupError(f"{path}: not an embeddings file ({e})") from None


def match_embeddings(tests: Sequence[str | Path], pools: Sequence[str | Path], threshold: float,
                     out: str | Path) -> dict:
    """Every (test, pool) pair at cosine similarity >= ``threshold`` into ``out`` (parquet,
    PAIR_SCHEMA: mode embedding, its similarity, distance 0, no hashes): faiss's exact inner
    product search over the test features, each pool file streamed through a range search."""
    import faiss

    if not 0 < threshold <= 1:
        raise DedupError(f"dedup.embedding.threshold must be in (0, 1], got {threshold}")
    start = time.perf_counter()
    test = [read_embeddings(p) for p in tests]
    names = [t["report"]["name"] for t in test]
    dims = {t["features"].shape[1] for t in test if len(t["key"])}
    feats = np.concatenate([t["features"] for t in test]) if test else np.zeros((0, 0), np.float32)
    dataset = np.concatenate([[n] * len(t["key"]) for n, t in zip(names, test)]) if test else np.array([])
    test_key = np.concatenate([t["key"] for t in test]) if test else np.array([])
    test_shard = np.concatenate([t["shard"] for t in test]) if test else np.array([])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    n_pool = n_pairs = 0
    index = None
    if len(feats):
        index = faiss.IndexFlatIP(feats.shape[1])
        index.add(np.ascontiguousarray(feats))
    with pq.ParquetWriter(tmp, PAIR_SCHEMA) as writer:
        for path in pools:
            pool = read_embeddings(path)
            n_pool += len(pool["key"])
            if index is None or not len(pool["key"]):
                continue
            if pool["features"].shape[1] not in dims:
                raise DedupError(f"{path}: features of {pool['features'].shape[1]} dimensions, the test "
                                 f"sets' have {sorted(dims)} (embedded with another model?)")
            lims, sims, rows = index.range_search(np.ascontiguousarray(pool["features"]), float(threshold))
            qi = np.repeat(np.arange(len(pool["key"])), np.diff(lims.astype(np.int64)))
            if not len(qi):
                continue
            order = np.lexsort((qi, rows))
            qi, rows, sims = qi[order], rows[order].astype(np.int64), sims[order]
            writer.write_table(pa.table({
                "dataset": pa.array(dataset[rows], pa.string()),
                "test_key": pa.array(test_key[rows], pa.string()),
                "test_shard": pa.array(test_shard[rows], pa.string()),
                "pool_key": pa.array(pool["key"][qi], pa.string()),
                "pool_shard": pa.array(pool["shard"][qi], pa.string()),
                "distance": pa.array(np.zeros(len(qi), np.uint8), pa.uint8()),
                "test_phash": pa.nulls(len(qi), pa.uint64()),
                "pool_phash": pa.nulls(len(qi), pa.uint64()),
                "mode": pa.array([MODE] * len(qi), pa.string()),
                "similarity": pa.array(np.minimum(sims, 1.0).astype(np.float32), pa.float32()),
            }, schema=PAIR_SCHEMA))
            n_pairs += len(qi)
            log.info("%s: %d pool images searched, %d pairs so far", path, n_pool, n_pairs)
    tmp.replace(out)
    report = {"threshold": threshold, "n_test": int(len(feats)), "n_pool": n_pool, "n_pairs": n_pairs,
              "seconds": round(time.perf_counter() - start, 3), "method": "faiss IndexFlatIP range search"}
    log.info("embedding matches: %d test against %d pool images at cosine >= %s: %d pairs in %.1fs",
             report["n_test"], n_pool, threshold, n_pairs, report["seconds"])
    if n_pairs > 10 * max(1, report["n_test"]):
        log.warning("embedding matches: %d pairs, %.0f per test image: at cosine >= %s this encoder "
                    "finds look-alikes, not copies (raise dedup.embedding.threshold, or encode with a "
                    "stronger checkpoint)", n_pairs, n_pairs / max(1, report["n_test"]), threshold)
    return report


def read_pairs(path: str | Path) -> pa.Table:
    """An embedding pairs file (PAIR_SCHEMA) to append to the hash modes' matches."""
    try:
        return pq.read_table(path).cast(PAIR_SCHEMA)
    except FileNotFoundError:
        raise DedupError(f"embedding pairs file not found: {path}") from None
