"""The ``clipscale`` command line: the package's steps one by one, outside Snakemake too."""

from __future__ import annotations

import argparse
import json
import logging
import sys


def _check_config(a) -> int:
    """The Snakefile's check (schema, cross-references, configured paths from the working
    directory); the runs it reports are grid.runs, the train jobs of the DAG."""
    from clipscale import config, grid

    for path in a.files:
        try:
            cfg = config.load(path, check_paths=True)
        except config.ConfigError as e:
            print(e, file=sys.stderr)
            return 2
        runs = grid.runs(cfg)
        print(f"{path}: valid ({len(runs)} training runs, {len(cfg['downstream'])} downstream sets)")
    return 0


def _make_world(a) -> int:
    from clipscale import config
    from clipscale.world import WorldSpec, generate

    cfg = config.load(a.config)
    summary = generate(WorldSpec.from_config(cfg), a.out)
    print(json.dumps(summary["pool"], indent=1))
    return 0


def _index_pool(a) -> int:
    from clipscale.subsets import build_index

    index = build_index(a.pool)
    index.to_parquet(a.out, index=False)
    print(f"{len(index)} shards, {int(index['n_samples'].sum())} samples -> {a.out}")
    return 0


def _subset(a) -> int:
    import pandas as pd

    from clipscale.config import parse_count
    from clipscale.subsets import build_index, write_subset

    index = pd.read_parquet(a.index) if a.index else build_index(a.pool)
    manifest = write_subset(index, a.name, parse_count(a.size), a.seed, a.out)
    print(f"{manifest['n_samples']} samples in {manifest['n_shards']} shards: {manifest['url']}")
    return 0


def _gmac(a) -> int:
    from clipscale import config, models

    cfg = config.load(a.config) if a.config else None
    if cfg:
        models.register(cfg)
    for name in a.models:
        print(json.dumps(models.measure_gmac(name)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipscale", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check-config", help="validate config files: schema, cross-references, paths")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=_check_config)

    p = sub.add_parser("make-world", help="generate the embedded default world")
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--out", default="results/world")
    p.set_defaults(func=_make_world)

    p = sub.add_parser("index-pool", help="count the samples of each shard of a pool directory")
    p.add_argument("pool")
    p.add_argument("--out", default="pool_index.parquet")
    p.set_defaults(func=_index_pool)

    p = sub.add_parser("subset", help="write one nested subset (shard manifest) of a pool")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--pool", help="img2dataset output directory")
    source.add_argument("--index", help="pool index parquet (from index-pool) instead of --pool")
    p.add_argument("--name", required=True)
    p.add_argument("--size", required=True, help="samples, e.g. 12000 or 80M")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_subset)

    p = sub.add_parser("gmac", help="measure image+text forward GMAC per sample of models")
    p.add_argument("models", nargs="+")
    p.add_argument("--config", help="config whose custom models to register first")
    p.set_defaults(func=_gmac)

    from clipscale import dedup
    from clipscale.evaluate import cli as evaluate_cli

    for module in (dedup, evaluate_cli):
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
