"""Dedup matching modes: what pHash misses (mirrored, framed, letterboxed, cropped copies) is
caught by the mode made for it, reported apart, removable; the paper's pHash table unchanged."""

from __future__ import annotations

import io
import json

import imagehash
import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from clipscale import cli, phash
from clipscale import dedup as D
from clipscale.shards import ShardWriter

ALL = ["phash", "mirror", "trim", "crops"]
EDITS = {  # the copy in the pool -> the mode that finds it
    "flip": "mirror", "frame": "trim", "bars": "trim", "crop80": "crops", "crop90": "crops"}


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def edit(image: Image.Image, kind: str) -> Image.Image:
    w, h = image.size
    if kind == "flip":
        return ImageOps.mirror(image)
    if kind == "frame":
        return ImageOps.expand(image, border=(w // 10, h // 10), fill=(250, 250, 245))
    if kind == "bars":
        canvas = Image.new("RGB", (w, h + 2 * (h // 5)), (0, 0, 0))
        canvas.paste(image, (0, h // 5))
        return canvas
    keep = int(kind[4:]) / 100
    cw, ch = round(w * keep), round(h * keep)
    return image.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))


@pytest.fixture(scope="module")
def photos():
    import skimage.data

    rng = np.random.default_rng(14)
    base = [Image.fromarray(getattr(skimage.data, n)()).convert("RGB")
            for n in ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "brick")]
    out = []
    for i in range(30):  # distinct photographs: random crops
        im = base[i % len(base)]
        w, h = im.size
        x, y = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        out.append(im.crop((x, y, x + w // 2, y + h // 2)).resize((160, 120)))
    return out


@pytest.fixture(scope="module")
def audit(tmp_path_factory, photos):
    """A test set of 10 photographs; a pool holding one edited copy of each of the first five
    (flip, frame, bars, crop80, crop90), an exact copy of the sixth, 20 other photographs and a
    corrupt JPEG; hashed and matched in every mode through the command line."""
    d = tmp_path_factory.mktemp("modes")
    (d / "set" / "test").mkdir(parents=True)
    with ShardWriter(d / "set" / "test" / "0.tar") as w:
        for i in range(10):
            w.write(f"t{i}", {"jpg": _jpeg(photos[i]), "cls": "0"})
    copies = {}
    with ShardWriter(d / "pool.tar") as w:
        for i, kind in enumerate(list(EDITS) + ["same"]):
            key = f"p_{kind}"
            copies[key] = f"t{i}"
            w.write(key, {"jpg": _jpeg(photos[i] if kind == "same" else edit(photos[i], kind)), "txt": kind})
        for i in range(10, 30):
            w.write(f"other{i}", {"jpg": _jpeg(photos[i]), "txt": "other"})
        w.write("corrupt", {"jpg": _jpeg(photos[0])[:400], "txt": "a cut JPEG"})
    variants = D.pool_variants(ALL)
    assert cli.main(["dedup-hash", "--out", str(d / "pool.parquet"), str(d / "pool.tar"),
                     "--variants", *variants]) == 0
    assert cli.main(["dedup-hash", "--dataset-dir", str(d / "set"), "--out", str(d / "set.parquet"),
                     "--variants", *D.downstream_variants(ALL)]) == 0
    assert cli.main(["dedup-match", "--pool", str(d / "pool.parquet"), "--tests", str(d / "set.parquet"),
                     "--radius", "4", "--modes", *ALL, "--out", str(d / "matches.parquet")]) == 0
    return d, copies


def test_variant_hashes_are_imagehash_of_the_variant_images(audit, photos):
    d, _ = audit
    test = D.load_test_hashes([d / "set.parquet"]).set_index("key")
    assert list(test.columns) == ["dataset", "shard", "phash", "phash_mirror", "phash_trim",
                                  "phash_crop80", "phash_crop90"]

    def ref(image):
        return int(str(imagehash.phash(image)), 16)

    for i in range(10):
        image = Image.open(io.BytesIO(_jpeg(photos[i])))
        row = test.loc[f"t{i}"]
        assert row["phash"] == ref(image)
        assert row["phash_mirror"] == ref(ImageOps.mirror(image))
        assert row["phash_crop80"] == ref(D.variant_function("crop80")(image))
        assert row["phash_trim"] == ref(D.trim(image))


def test_each_edit_is_missed_by_phash_and_caught_by_its_mode(audit):
    d, copies = audit
    m = D.read_matches(d / "matches.parquet")
    found = {(r.pool_key, r.mode) for r in m.itertuples() if copies.get(r.pool_key) == r.test_key}
    for kind, mode in EDITS.items():
        assert (f"p_{kind}", mode) in found, (kind, mode, sorted(found))
        assert (f"p_{kind}", "phash") not in found, kind  # the paper's pHash misses it
    assert ("p_same", "phash") in found
    assert set(m["mode"]) <= set(ALL)
    # only the planted copies are matched: no photograph is taken for another
    assert all(copies.get(r.pool_key) == r.test_key for r in m.itertuples()), m
    # every pair is at its distance (the variant's hash against the pool column it was matched to)
    assert (phash.hamming(m["test_phash"], m["pool_phash"]) == m["distance"]).all()


def test_overlap_table_keeps_the_papers_columns_and_adds_each_modes(audit, tmp_path):
    d, _ = audit
    m = D.read_matches(d / "matches.parquet")
    tests = [d / "set.parquet"]
    paper = D.overlap_table(m[m["mode"] == "phash"], tests, 4)
    assert list(paper.columns) == D.OVERLAP_COLUMNS
    # the default (mode phash only) is the paper's table whatever else the matches hold
    pd.testing.assert_frame_equal(D.overlap_table(m, tests, 4), paper)
    assert cli.main(["dedup-overlap", "--matches", str(d / "matches.parquet"), "--tests", *map(str, tests),
                     "--radius", "4", "--modes", *ALL, "--out", str(tmp_path / "o.csv")]) == 0
    table = pd.read_csv(tmp_path / "o.csv")
    pd.testing.assert_frame_equal(table[D.OVERLAP_COLUMNS], pd.read_csv(io.StringIO(paper.to_csv(index=False))))
    row = table.iloc[0]
    assert row["n_matched"] == 1 and row["overlap_pct"] == 10.0  # t5, the exact copy
    assert row["n_matched_mirror"] == 1 and row["n_matched_crops"] == 2
    assert row["n_matched_trim"] >= 2  # frame and bars (and t5: its own trim)
    assert row["n_matched_any"] == 6 and row["overlap_pct_any"] == 60.0
    assert row["n_pool_matched_any"] == 6


def test_corrupt_images_are_counted_with_variants_as_without(audit, tmp_path):
    d, _ = audit
    with_variants = D.read_report(d / "pool.parquet")
    plain = D.hash_shards([d / "pool.tar"], tmp_path / "plain.parquet")
    assert with_variants["skipped"]["counts"] == plain["skipped"]["counts"] == {"corrupt image (OSError)": 1}
    assert with_variants["n_hashed"] == plain["n_hashed"] == 26
    a, b = pd.read_parquet(d / "pool.parquet"), pd.read_parquet(tmp_path / "plain.parquet")
    assert a["phash"].equals(b["phash"]) and with_variants["variants"] == ["trim"]
    # an image without a border is its own trim; the framed copy is not
    assert (a["phash"] == a["phash_trim"]).sum() >= 20
    assert a.set_index("key").loc["p_frame", "phash_trim"] != a.set_index("key").loc["p_frame", "phash"]


def test_trim_finds_frames_and_bars_not_borders_of_photographs(photos):
    # photographs keep their pixels (a strip of dark sky is no border: it fades into the picture)
    assert [i for i, p in enumerate(photos) if D.trim_box(p) is not None] == []
    image = photos[0]
    w, h = image.size
    framed = Image.open(io.BytesIO(_jpeg(edit(image, "frame"))))
    assert D.trim_box(framed) == (w // 10, h // 10, w // 10 + w, h // 10 + h)
    barred = Image.open(io.BytesIO(_jpeg(edit(image, "bars"))))
    assert D.trim_box(barred) == (0, h // 5, w, h // 5 + h)
    assert D.trim_box(Image.new("RGB", (50, 40), (9, 9, 9))) is None  # uniform: nothing to trim
    dot = Image.new("RGB", (100, 100), (255, 255, 255))
    dot.paste((0, 0, 0), (48, 48, 52, 52))
    assert D.trim_box(dot) is None  # a dot on a plain ground is no picture in a frame


@pytest.fixture(scope="module")
def dim_photos():
    """Borderless photographs that are dark or flat, where a trim that takes the corners' grey
    for a border cuts into the picture: a deep field, the moon, a cell, a blurred clock and a
    rocket at dusk as they are, and underexposed (a quarter of the light) or flat (a quarter of
    the contrast) crops of three others; 76 random crops, 106-320 px, JPEG."""
    import skimage.data
    from PIL import ImageEnhance

    rng = np.random.default_rng(29)
    kinds = [(n, None) for n in ("hubble_deep_field", "moon", "cell", "clock", "rocket")]
    kinds += [(n, e) for n in ("camera", "coffee", "chelsea") for e in ("dark", "flat")]
    out = []
    for name, enhance in kinds:
        base = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        w, h = base.size
        for _ in range(8 if enhance is None else 6):
            cw, ch = int(rng.integers(w // 3, w)), int(rng.integers(h // 3, h))
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            image = base.crop((x, y, x + cw, y + ch))
            if enhance == "dark":
                image = ImageEnhance.Brightness(image).enhance(0.25)
            elif enhance == "flat":
                image = ImageEnhance.Contrast(image).enhance(0.25)
            image.thumbnail((320, 320))
            jpeg = Image.open(io.BytesIO(_jpeg(image, int(rng.integers(75, 96))))).convert("RGB")
            out.append((f"{name} {enhance or ''} {x},{y} {cw}x{ch}", jpeg))
    return out


def test_trim_leaves_dark_and_flat_photographs_as_they_are(dim_photos):
    changed = {name: D.trim(image).size for name, image in dim_photos if D.trim(image).size != image.size}
    assert not changed, (f"{len(changed)} of {len(dim_photos)} borderless photographs trimmed, e.g. "
                         f"{dict(list(changed.items())[:5])}")


def test_trim_cuts_a_frame_or_bars_around_a_dark_or_flat_photograph_to_the_photograph(dim_photos):
    for name, image in dim_photos[::4]:
        w, h = image.size
        for kind, copy, box in (
                ("frame", ImageOps.expand(image, border=(w // 10, h // 10), fill=(250, 250, 245)),
                 (w // 10, h // 10, w // 10 + w, h // 10 + h)),
                ("bars", edit(image, "bars") if "dark" not in name and "hubble" not in name else None,
                 (0, h // 5, w, h // 5 + h))):
            if copy is None:  # black bars around a black sky: no step between them to see
                continue
            copy = Image.open(io.BytesIO(_jpeg(copy)))
            assert D.trim_box(copy) == box, (name, kind)
            assert D.trim(copy).size == image.size, (name, kind)


def test_trim_keeps_a_fifth_of_each_side_over_all_passes(photos):
    # a photograph in two frames: each pass alone keeps 40% of the side it trims, both 16%
    inner = ImageOps.expand(photos[0].resize((80, 80)), border=60, fill=(250, 250, 245))
    image = ImageOps.expand(inner, border=150, fill=(20, 20, 20))
    assert image.size == (500, 500) and D.trim_box(image) == (150, 150, 350, 350)
    assert D.trim_box(inner) == (60, 60, 140, 140)
    assert D.trim(image).size == (200, 200)  # the inner frame stays: 80 px would be 16% of 500


def test_matching_without_the_pool_trim_column_trims_the_test_side_only(audit, tmp_path):
    d, copies = audit
    D.hash_shards([d / "pool.tar"], tmp_path / "pool.parquet")  # trim_pool off: no phash_trim
    report = D.match_files(tmp_path / "pool.parquet", [d / "set.parquet"], 4, tmp_path / "m.parquet",
                           modes=["phash", "trim"])
    assert report["modes"]["trim"]["compares"] == [["phash_trim", "phash"]]
    m = D.read_matches(tmp_path / "m.parquet")
    assert "p_frame" not in set(m["pool_key"])  # a framed pool copy needs the pool trimmed
    with pytest.raises(D.DedupError, match="phash_mirror"):
        D.match_files(tmp_path / "pool.parquet", [tmp_path / "pool.parquet"], 4, tmp_path / "x.parquet",
                      modes=["phash", "mirror"])


def test_mode_settings():
    assert D.downstream_variants(["phash"]) == [] and D.pool_variants(["phash"]) == []
    assert D.downstream_variants(ALL, crops=[0.75]) == ["mirror", "trim", "crop75"]
    assert D.pool_variants(ALL, trim_pool=False) == []
    assert D.removal_modes({"modes": ALL, "remove_duplicates": True}) == ALL
    assert D.removal_modes({"modes": ALL, "remove_duplicates": ["mirror"]}) == ["mirror"]
    assert D.removal_modes({"remove_duplicates": False}) == []
    with pytest.raises(D.DedupError, match="does not match"):
        D.removal_modes({"modes": ["phash"], "remove_duplicates": ["crops"]})
    with pytest.raises(D.DedupError, match="unknown dedup mode"):
        D.settings({"modes": ["phash", "embedding?"]})


# the embedded world's planted copies ---------------------------------------------------------


@pytest.fixture(scope="module")
def world_matches(small_world, tmp_path_factory):
    from clipscale.world import DOWNSTREAM_SETS

    out = tmp_path_factory.mktemp("world_modes")
    D.hash_shards(sorted((small_world / "pool").glob("*.tar")), out / "pool.parquet", name="pool",
                  variants=D.pool_variants(ALL))
    tests = []
    for name in DOWNSTREAM_SETS:
        tests.append(out / f"{name}.parquet")
        D.hash_shards(D.downstream_test_shards(small_world / "downstream" / name), tests[-1], name=name,
                      variants=D.downstream_variants(ALL))
    D.match_files(out / "pool.parquet", tests, 4, out / "m.parquet", modes=ALL)
    return out, tests


def test_world_hard_copies_are_found_by_their_modes(small_world, world_matches):
    out, tests = world_matches
    assert cli.main(["dedup-recall", "--matches", str(out / "m.parquet"), "--planted",
                     str(small_world / "planted_duplicates.csv"), "--pool", str(out / "pool.parquet"),
                     "--tests", *map(str, tests), "--radius", "4", "--modes", *ALL,
                     "--out", str(out / "r.json")]) == 0
    r = json.loads((out / "r.json").read_text())
    by_mode = r["modes"]
    assert by_mode["phash"]["recall"] == r["recall"]  # the top level is the paper's pHash
    for kind, mode in EDITS.items():
        assert by_mode["phash"]["by_transform"][kind] <= 0.25, (kind, by_mode["phash"])
        assert by_mode[mode]["by_transform"][kind] >= 0.5, (kind, mode, by_mode[mode])
    assert by_mode["any"]["recall"] >= r["recall"] + 0.3
    for mode in ("mirror", "crops"):  # mirrored and cropped hashes take no unrelated image
        assert by_mode[mode]["precision"] >= 0.9, by_mode[mode]


def test_remove_duplicates_by_mode(small_world, world_matches, in_tmp):
    from clipscale.subsets import build_index, subset_keys, write_subset

    out, _ = world_matches
    write_subset(build_index(small_world / "pool"), "all", 600, seed=1, out_dir="subset")
    keys = set(subset_keys(json.loads((in_tmp / "subset" / "manifest.json").read_text())))
    m = D.read_matches(out / "m.parquet")
    left = {}
    for modes in (["phash"], ["phash", "mirror"], ALL):
        target = in_tmp / "-".join(modes)
        assert cli.main(["dedup-filter", "--manifest", "subset/manifest.json", "--matches",
                         str(out / "m.parquet"), "--out-dir", str(target), "--modes", *modes]) == 0
        left[tuple(modes)] = set(subset_keys(json.loads((target / "manifest.json").read_text())))
        removed = keys - left[tuple(modes)]
        assert removed == set(m.loc[m["mode"].isin(modes), "pool_key"]) & keys, modes
    planted = pd.read_csv(small_world / "planted_duplicates.csv", dtype=str)
    flips = set(planted.loc[planted["transform"] == "flip", "pool_key"])
    assert flips and flips <= left[("phash",)]  # pHash leaves the mirrored copies in
    assert not flips & left[("phash", "mirror")]


def test_overlap_figure_shows_the_modes_side_by_side(audit, tmp_path):
    from clipscale import figures

    d, _ = audit
    table = D.overlap_table(D.read_matches(d / "matches.parquet"), [d / "set.parquet"], 4, ALL)
    spec = figures.FigureSpec("overlap_ours", "overlap", ["ours"])
    fig = figures.draw(spec, overlap=table)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["pHash (paper)", "mirror", "trim", "crops", "any mode"]
    widths = {c.get_label(): [b.get_width() for b in c] for c in ax.containers}
    assert widths["pHash (paper)"] == [10.0] and widths["any mode"] == [60.0]
    figures.plt.close(fig)
    fig = figures.draw(spec, overlap=table[D.OVERLAP_COLUMNS])  # the paper's table: one bar a set
    assert fig.axes[0].get_legend() is None and len(fig.axes[0].containers) == 1
    figures.plt.close(fig)
