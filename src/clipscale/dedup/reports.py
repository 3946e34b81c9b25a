"""Reports of the matches: the overlap table (the paper's Table 3), a contact sheet, recall and precision on planted duplicates."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from clipscale import phash as P
from clipscale.dedup.formats import MODE_COLUMNS, OVERLAP_COLUMNS, DedupError
from clipscale.dedup.hashing import image_member, read_report
from clipscale.dedup.modes import check_modes
from clipscale.shards import iter_samples

log = logging.getLogger(__name__)

# 4. reports -------------------------------------------------------------------------------------


def overlap_table(matches: pd.DataFrame, tests: Sequence[str | Path], radius: int,
                  modes: Sequence[str] = ("phash",)) -> pd.DataFrame:
    """The paper's Table 3 for our sets: % of each test set found in the pool, at radius 0
    (identical hashes) and at ``radius``; n_test = test images hashed, n_skipped = not hashable.

    These columns count the pairs of the paper's pHash (mode phash). Each further mode in
    ``modes`` adds its own columns (overlap_pct_<mode>, n_matched_<mode>,
    n_pool_matched_<mode>: its pairs within ``radius``), and with more than one mode the union
    of all of them (``_any``): how much overlap pHash alone leaves behind."""
    modes = check_modes(modes)
    if "phash" not in modes:
        raise DedupError(f"the overlap table needs the paper's mode phash among {modes}")
    if "mode" not in matches:
        matches = matches.assign(mode="phash")
    extra = [m for m in modes if m != "phash"] + (["any"] if len(modes) > 1 else [])
    columns = OVERLAP_COLUMNS + [c.format(mode=m) for m in extra for c in MODE_COLUMNS]
    rows = []
    for path in tests:
        report = read_report(path)
        name = report["name"]
        mine = matches[(matches["dataset"] == name) & (matches["distance"] <= radius)]
        m = mine[mine["mode"] == "phash"]
        exact = m[m["distance"] == 0]
        n_test = int(report["n_hashed"])
        n_matched, n_exact = m["test_key"].nunique(), exact["test_key"].nunique()

        def pct(n):
            return round(100.0 * n / n_test, 4) if n_test else float("nan")

        row = {
            "dataset": name,
            "overlap_pct": pct(n_matched),
            "overlap_pct_exact": pct(n_exact),
            "radius": radius, "n_test": n_test, "n_matched": int(n_matched),
            "n_matched_exact": int(n_exact), "n_pool_matched": int(m["pool_key"].nunique()),
            "n_skipped": int(report["skipped"]["total"]),
        }
        for mode in extra:
            found = mine[mine["mode"].isin(modes)] if mode == "any" else mine[mine["mode"] == mode]
            n = found["test_key"].nunique()
            row |= {f"overlap_pct_{mode}": pct(n), f"n_matched_{mode}": int(n),
                    f"n_pool_matched_{mode}": int(found["pool_key"].nunique())}
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def fetch_images(wanted: Iterable[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
    """Image bytes of (shard path, key) pairs: one streaming pass over each shard needed."""
    by_shard: dict[str, set[str]] = {}
    for shard, key in wanted:
        by_shard.setdefault(shard, set()).add(key)
    found = {}
    for shard, keys in by_shard.items():
        if not Path(shard).is_file():
            log.warning("contact sheet: shard %s not found", shard)
            continue
        left = set(keys)
        for key, files in iter_samples(shard):
            if key in left and (ext := image_member(files)):
                found[(shard, key)] = files[ext]
                left.discard(key)
                if not left:
                    break
    return found


def contact_sheet(matches: pd.DataFrame, out: str | Path, n_pairs: int = 24, seed: int = 0,
                  columns: int = 4) -> int:
    """PNG of sample matches: each test image beside its pool match, with the distance.

    Pairs are drawn at random (seeded), the same number from each dataset as far as possible,
    and shown sorted by dataset and distance. Returns the number of pairs drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt
    from PIL import Image

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    picked = []
    if len(matches) and n_pairs > 0:
        groups = {name: g for name, g in matches.groupby("dataset", sort=True)}
        per = max(1, n_pairs // len(groups))
        for name, g in groups.items():
            picked.append(g.iloc[np.sort(rng.choice(len(g), size=min(per, len(g)), replace=False))])
        sample = pd.concat(picked)
        if len(sample) < n_pairs:  # fill up from the rest
            rest = matches.drop(sample.index)
            extra = min(n_pairs - len(sample), len(rest))
            sample = pd.concat([sample, rest.iloc[np.sort(rng.choice(len(rest), extra, replace=False))]])
        sample = sample.iloc[:n_pairs].sort_values(["dataset", "distance", "test_key"])
    else:
        sample = matches.iloc[:0]
    images = fetch_images(list(zip(sample["test_shard"], sample["test_key"]))
                          + list(zip(sample["pool_shard"], sample["pool_key"])))

    def load(shard, key):
        data = images.get((shard, key))
        if data is None:
            return None
        try:
            return Image.open(io.BytesIO(data)).convert("RGB")
        except Exception:
            return None

    n = len(sample)
    unreadable = []  # (shard, key) of a pair whose image is not in its shard or does not decode
    rows = max(1, math.ceil(n / columns))
    height = rows * 1.55 + 0.7
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(2 * columns * 1.3, height), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, pair in enumerate(sample.itertuples(index=False)):
        r, c = divmod(i, columns)
        for k, (shard, key, label) in enumerate([
            (pair.test_shard, pair.test_key, f"{pair.dataset}\n{pair.test_key}"),
            (pair.pool_shard, pair.pool_key, f"pool {pair.pool_key}\n" + (
                f"cos={pair.similarity:.3f}" if getattr(pair, "mode", "") == "embedding" else f"d={pair.distance}")),
        ]):
            ax = axes[r, 2 * c + k]
            img = load(shard, key)
            if img is not None:
                ax.imshow(img, interpolation="nearest")
            else:
                ax.text(0.5, 0.5, "missing", ha="center", va="center", fontsize=6)
                unreadable.append(f"{shard}: {key}")
            ax.set_title(label, fontsize=5.5)
    if n == 0:
        axes[0, 0].text(0, 0.5, "no test image was found in the pool", fontsize=9)
    fig.suptitle(f"pHash matches: test image (left) beside pool image (right), "
                 f"{n} of {len(matches)} pairs", fontsize=8, y=1 - 0.12 / height)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.75 / height, wspace=0.08,
                        hspace=0.45)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    if unreadable:
        log.warning("contact sheet: %d of its %d images not found or unreadable (drawn as 'missing'), "
                    "e.g. %s", len(unreadable), 2 * n, ", ".join(unreadable[:3]))
    return n


def planted_recall(matches: pd.DataFrame, planted: pd.DataFrame, radius: int,
                   pool_hashes: pd.DataFrame | None = None,
                   test_hashes: pd.DataFrame | None = None,
                   modes: Sequence[str] = ("phash",)) -> dict:
    """Recall and precision against the planted near-duplicates: of the paper's pHash (mode
    phash) at the top level, and with more modes, each mode's and their union's under
    ``modes`` (recall, precision, pool images matched that are no planted copy, recall by
    transform), so a flipped or framed copy that only a further mode finds shows there."""
    modes = check_modes(modes)
    if "mode" not in matches:
        matches = matches.assign(mode="phash")
    report = _planted_recall(matches[matches["mode"] == "phash"], planted, radius, pool_hashes,
                             test_hashes)
    if modes != ["phash"]:
        report["modes"] = {}
        for mode in modes + ["any"]:
            sub = matches[matches["mode"].isin(modes)] if mode == "any" else matches[matches["mode"] == mode]
            r = _planted_recall(sub, planted, radius, None, test_hashes)
            report["modes"][mode] = {k: r[k] for k in (
                "n_planted", "n_found", "recall", "n_pairs", "precision", "unplanted_pool_keys")} | {
                "by_transform": {t: v["recall"] for t, v in r["by_transform"].items()}}
    return report


def _planted_recall(matches: pd.DataFrame, planted: pd.DataFrame, radius: int,
                    pool_hashes: pd.DataFrame | None = None,
                    test_hashes: pd.DataFrame | None = None) -> dict:
    """Recall and precision of the matches against the planted near-duplicates.

    recall: planted (pool_key, dataset, test_key) pairs found / planted pairs.
    precision: found pairs that are planted / all pairs found. A pair that is not planted can
    still be a true duplicate the world made by chance (two renders that look alike), so the
    report also counts the pool keys of unplanted pairs. With the hashes given, the distance of
    every planted pair is reported too (so a miss shows how far it was). Planted copies of sets
    that were not hashed (a set the world makes but the config leaves out) are not counted as
    misses: they are counted per set in ``planted_in_other_sets``."""
    cols = ["pool_key", "dataset", "test_key"]
    planted = planted.astype({c: str for c in cols})
    other: dict[str, int] = {}
    if test_hashes is not None:
        matched = planted["dataset"].isin(set(test_hashes["dataset"].astype(str)))
        other = {str(k): int(v) for k, v in planted.loc[~matched, "dataset"].value_counts().sort_index().items()}
        planted = planted[matched]
    found = matches[matches["distance"] <= radius][cols + ["distance"]].astype({c: str for c in cols})
    # a pair found by two modes counts once, at its smallest distance
    found = found.sort_values("distance", kind="stable").drop_duplicates(subset=cols).sort_index()
    truth = planted.merge(found, on=cols, how="left")
    truth["found"] = truth["distance"].notna()
    truth["found_exact"] = truth["distance"] == 0
    hits = found.merge(planted[cols].drop_duplicates(), on=cols, how="left", indicator=True)
    is_planted = hits["_merge"] == "both"

    def ratio(a, b):
        return round(float(a) / b, 6) if b else None

    n_planted = len(planted)
    # each planted pair counts once even if found twice (it cannot be: pairs are unique)
    truth = truth.drop_duplicates(subset=cols)
    report = {
        "radius": radius,
        "n_planted": n_planted,
        "n_found": int(truth["found"].sum()),
        "recall": ratio(truth["found"].sum(), n_planted),
        "recall_exact": ratio(truth["found_exact"].sum(), n_planted),
        "n_pairs": len(found),
        "n_pairs_planted": int(is_planted.sum()),
        "precision": ratio(is_planted.sum(), len(found)),
        "n_pairs_exact": int((found["distance"] == 0).sum()),
        "precision_exact": ratio((is_planted & (hits["distance"] == 0)).sum(),
                                 int((found["distance"] == 0).sum())),
        "unplanted_pool_keys": int(hits.loc[~is_planted, "pool_key"].nunique()),
        "unplanted_examples": hits.loc[~is_planted, cols + ["distance"]].head(10).to_dict("records"),
        "by_radius": {}, "by_transform": {}, "by_dataset": {},
        "planted_in_other_sets": other,
    }
    for r in range(radius + 1):  # how recall and precision trade off below the radius used
        within = found["distance"] <= r
        n_true = int(truth["distance"].le(r).sum())
        report["by_radius"][str(r)] = {
            "recall": ratio(n_true, n_planted), "n_pairs": int(within.sum()),
            "precision": ratio((is_planted & within.to_numpy()).sum(), int(within.sum()))}
    if pool_hashes is not None and test_hashes is not None:
        ph = pool_hashes[["key", "phash"]].rename(columns={"key": "pool_key", "phash": "pool_phash"})
        th = test_hashes[["dataset", "key", "phash"]].rename(columns={"key": "test_key",
                                                                      "phash": "test_phash"})
        d = truth.merge(ph.astype({"pool_key": str}), on="pool_key", how="left").merge(
            th.astype({"test_key": str}), on=["dataset", "test_key"], how="left")
        ok = d["pool_phash"].notna() & d["test_phash"].notna()
        truth = truth.assign(true_distance=np.nan)
        truth.loc[ok.to_numpy(), "true_distance"] = P.hamming(
            d.loc[ok, "pool_phash"].astype(np.uint64).to_numpy(),
            d.loc[ok, "test_phash"].astype(np.uint64).to_numpy()).astype(float)
        report["planted_not_hashed"] = int((~ok).sum())
    for col, key in (("transform", "by_transform"), ("dataset", "by_dataset")):
        if col not in truth:
            continue
        for value, g in truth.groupby(col, sort=True):
            entry = {"n": len(g), "found": int(g["found"].sum()),
                     "recall": ratio(g["found"].sum(), len(g)),
                     "recall_exact": ratio(g["found_exact"].sum(), len(g))}
            if "true_distance" in g:
                dist = g["true_distance"].dropna()
                entry["distance_median"] = float(dist.median()) if len(dist) else None
                entry["distance_max"] = float(dist.max()) if len(dist) else None
            report[key][str(value)] = entry
    report["missed_examples"] = truth.loc[~truth["found"], [c for c in planted.columns] + (
        ["true_distance"] if "true_distance" in truth else [])].head(10).to_dict("records")
    return report


def read_pool_hashes(path: str | Path, keys: Iterable[str] | None = None) -> pd.DataFrame:
    """Pool hashes (key, shard, phash), all of them or only the rows of the given keys."""
    filters = [("key", "in", sorted(set(keys)))] if keys is not None else None
    if keys is not None and not filters[0][2]:
        return pd.DataFrame({"key": [], "shard": [], "phash": np.zeros(0, np.uint64)})
    return pd.read_parquet(path, filters=filters)


def read_planted(path: str | Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype=str)
    except FileNotFoundError:
        raise DedupError(f"planted duplicates file not found: {path}") from None
    missing = {"pool_key", "dataset", "test_key"} - set(df.columns)
    if missing:
        raise DedupError(f"{path}: missing columns {sorted(missing)}")
    return df
