import hashlib
import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipscale import drawing, world
from clipscale.shards import iter_samples
from conftest import SMALL_WORLD


def digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_generation_is_deterministic(small_world, tmp_path):
    again = tmp_path / "again"
    world.generate(SMALL_WORLD, again, progress=False)
    assert digest(small_world) == digest(again)
    parallel = tmp_path / "parallel"  # the make_world rule's threads: the pool's shards in processes
    world.generate(SMALL_WORLD, parallel, progress=False, workers=3)
    assert digest(small_world) == digest(parallel)
    other = tmp_path / "other"
    world.generate(world.WorldSpec(**{**SMALL_WORLD.__dict__, "seed": 4}), other, progress=False)
    assert digest(small_world / "pool") != digest(other / "pool")


def test_a_failing_pool_shard_stops_generation_and_leaves_nothing_for_forked_writers(tmp_path, monkeypatch):
    """The error reaches the caller; the pool job handed to forked shard writers is dropped
    (a later generation in the process starts clean)."""
    real = world.pool_sample

    def failing(spec, index, *args):
        if index == 3:
            raise ValueError("bad sample 3")
        return real(spec, index, *args)

    monkeypatch.setattr(world, "pool_sample", failing)
    with pytest.raises(ValueError, match="bad sample 3"):
        world.generate(SMALL_WORLD, tmp_path / "failing", progress=False)
    assert world._POOL_JOB is None


def test_pool_is_img2dataset_like(small_world):
    shards = sorted((small_world / "pool").glob("*.tar"))
    assert [s.name for s in shards] == [f"{i:05d}.tar" for i in range(6)]
    n = 0
    for shard in shards:
        meta = pd.read_parquet(shard.with_suffix(".parquet"))
        stats = json.loads(shard.with_name(shard.stem + "_stats.json").read_text())
        samples = list(iter_samples(shard))
        assert len(samples) == len(meta) == stats["successes"] == 100
        for (key, files), row in zip(samples, meta.itertuples()):
            assert set(files) == {"jpg", "txt", "json"}
            assert key == row.key and files["txt"].decode() == row.caption
            img = Image.open(io.BytesIO(files["jpg"]))
            meta_json = json.loads(files["json"])
            if meta_json.get("transform") not in ("resize", "frame", "bars", "crop80", "crop90"):
                assert img.size == (32, 32)
        n += len(samples)
    assert n == SMALL_WORLD.pool_size


def test_captions_describe_the_images(small_world):
    """Full captions name the drawn attributes: the structure a CLIP can learn."""
    full = 0
    for key, files in iter_samples(small_world / "pool" / "00000.tar"):
        meta = json.loads(files["json"])
        text = files["txt"].decode()
        if meta["kind"] == "synthetic" and meta["caption_kind"] == "full":
            full += 1
            for attr in ("shape", "colour", "size") + (("count",) if meta["count"] != "one" else ("position",)):
                assert meta[attr] in text, (text, meta)
        if meta["kind"] == "digit":
            assert meta["digit"] in text
    assert full > 50


def test_every_text_the_world_makes_fits_the_default_models_context(small_world):
    """The default's text towers read 16 tokens (the world's longest caption is 15 with its start
    and end tokens): no pool caption, class prompt or retrieval caption is cut. A longer caption
    template or class name fails here instead of being truncated silently."""
    import open_clip
    import yaml

    from conftest import REPO

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    context = min(m["open_clip"]["text_cfg"]["context_length"] for m in cfg["models"].values())
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=77)
    texts = [files["txt"].decode() for shard in sorted((small_world / "pool").glob("*.tar"))
             for _key, files in iter_samples(shard)]
    rng = np.random.default_rng(0)  # every template with every kind of description, beyond 6 shards
    texts += [world.caption(world.random_attrs(rng), rng, 0.2, 0.25)[0] for _ in range(5000)]
    texts += [u.format(n=9999) for u in drawing.UNRELATED]
    for name, (kind, classes, templates, _group) in world.DOWNSTREAM_SETS.items():
        if kind == "classification":
            texts += [t.replace("{c}", c) for t in templates for c in classes]
        else:
            d = small_world / "downstream" / name / "test"
            for i in range(int((d / "nshards.txt").read_text())):
                texts += [line for _k, f in iter_samples(d / f"{i}.tar") for line in f["txt"].decode().splitlines()]
    lengths = (tokenizer(texts) != 0).sum(dim=1)
    longest = int(lengths.argmax())
    assert int(lengths.max()) <= context, (texts[longest], int(lengths.max()), context)


def test_downstream_sets_in_clip_benchmark_layout(small_world):
    root = small_world / "downstream"
    assert sorted(p.name for p in root.iterdir()) == sorted(world.DOWNSTREAM_SETS)
    for name, (kind, classes, templates, _group) in world.DOWNSTREAM_SETS.items():
        d = root / name
        assert (d / "dataset_type.txt").read_text().strip() == kind
        nshards = int((d / "test" / "nshards.txt").read_text())
        samples = [s for i in range(nshards) for s in iter_samples(d / "test" / f"{i}.tar")]
        assert samples
        if kind == "classification":
            assert (d / "classnames.txt").read_text().split("\n")[:-1] == classes
            assert all("{c}" in t for t in (d / "zeroshot_classification_templates.txt").read_text().split("\n")[:-1])
            labels = {int(f["cls"]) for _k, f in samples}
            assert labels == set(range(len(classes)))
        else:
            assert all(len(f["txt"].decode().splitlines()) == 2 for _k, f in samples)


def test_clip_benchmark_reads_the_sets(small_world):
    from clip_benchmark.datasets.builder import build_dataset

    ds = build_dataset("wds/shapes", root=str(small_world / "downstream" / "shapes"),
                       transform=lambda im: im.size, split="test", task="zeroshot_classification")
    items = list(ds)
    assert len(items) == 4 * len(world.SHAPES)
    assert ds.classes == world.SHAPES


def test_digits_are_real_images(small_world):
    from sklearn.datasets import load_digits

    test = small_world / "downstream" / "digits" / "test"
    n_test = sum(1 for shard in test.glob("*.tar") for _ in iter_samples(shard))
    assert n_test == len(load_digits().target) - int(0.4 * 1797) - int(0.3 * 1797)


def test_planted_duplicates_are_recorded(small_world):
    truth = pd.read_csv(small_world / "planted_duplicates.csv", dtype=str)
    assert len(truth) == SMALL_WORLD.near_duplicates + SMALL_WORLD.hard_duplicates
    assert set(truth["transform"]) == set(world.NEAR_DUPLICATE_TRANSFORMS + world.HARD_DUPLICATE_TRANSFORMS)
    assert truth["pool_key"].is_unique
    by_key = {}
    for shard in sorted((small_world / "pool").glob("*.tar")):
        for key, files in iter_samples(shard):
            by_key[key] = json.loads(files["json"])
    test_keys = {}
    for name in world.DOWNSTREAM_SETS:
        for shard in (small_world / "downstream" / name / "test").glob("*.tar"):
            for key, _f in iter_samples(shard):
                test_keys.setdefault(name, set()).add(key)
    for row in truth.itertuples():
        meta = by_key[row.pool_key]
        assert meta["kind"] == "planted" and meta["test_key"] == row.test_key
        assert row.test_key in test_keys[row.dataset]


def test_hard_duplicates_leave_the_rest_of_the_pool_as_it_was(small_world, tmp_path):
    """The copies pHash misses take pool slots of their own, from test images of their own: the
    world without them differs only in those slots, and each is its test image edited."""
    plain = tmp_path / "plain"
    world.generate(world.WorldSpec(**{**SMALL_WORLD.__dict__, "hard_duplicates": 0}), plain, progress=False)
    truth = pd.read_csv(small_world / "planted_duplicates.csv", dtype=str)
    before = pd.read_csv(plain / "planted_duplicates.csv", dtype=str)
    hard = truth[truth["transform"].isin(world.HARD_DUPLICATE_TRANSFORMS)]
    assert len(hard) == SMALL_WORLD.hard_duplicates
    pd.testing.assert_frame_equal(truth[~truth["transform"].isin(world.HARD_DUPLICATE_TRANSFORMS)]
                                  .reset_index(drop=True), before)
    assert not set(hard["test_key"] + hard["dataset"]) & set(before["test_key"] + before["dataset"])

    def images(folder):
        return {key: files["jpg"] for shard in sorted((folder / "pool").glob("*.tar"))
                for key, files in iter_samples(shard)}

    new, old = images(small_world), images(plain)
    assert new.keys() == old.keys()
    assert {k for k in new if new[k] != old[k]} == set(hard["pool_key"])
    tests = {}
    for name in set(hard["dataset"]):
        for shard in (small_world / "downstream" / name / "test").glob("*.tar"):
            for key, files in iter_samples(shard):
                tests[name, key] = Image.open(io.BytesIO(files["jpg"])).convert("RGB")
    for row in hard.itertuples():  # each copy is its test image edited (JPEG aside)
        test = np.asarray(tests[row.dataset, row.test_key], dtype=float)
        copy = np.asarray(Image.open(io.BytesIO(new[row.pool_key])).convert("RGB"), dtype=float)
        h, w = test.shape[:2]
        if row.transform == "flip":
            inner = copy[:, ::-1]
        elif row.transform == "frame":
            assert copy.shape[:2] == (h + 2 * round(0.1 * h), w + 2 * round(0.1 * w))
            inner = copy[round(0.1 * h): -round(0.1 * h), round(0.1 * w): -round(0.1 * w)]
        elif row.transform == "bars":
            assert copy.shape[:2] == (h + 2 * round(0.25 * h), w)
            inner = copy[round(0.25 * h): -round(0.25 * h)]
        else:
            keep = int(row.transform[4:]) / 100
            ch, cw = round(h * keep), round(w * keep)
            assert copy.shape[:2] == (ch, cw)
            inner, test = copy, test[(h - ch) // 2: (h - ch) // 2 + ch, (w - cw) // 2: (w - cw) // 2 + cw]
        assert np.abs(inner - test).mean() < 12, (row.transform, np.abs(inner - test).mean())
