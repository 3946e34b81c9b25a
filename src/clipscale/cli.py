"""The ``clipscale`` command line: the package's steps one by one, outside Snakemake too.

The one command line of the package (``clipscale --help``). Only the training processes, which
torchrun and srun start again on every rank, have entry points of their own
(``python -m clipscale.train``, ``python -m clipscale.launch``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from clipscale import dedup
from clipscale.evaluate import cli as evaluate_cli


def _check_config(a) -> int:
    """The Snakefile's check (clipscale.checks: schema, every domain's checks, configured paths
    from the working directory); the runs it reports are grid.runs, the train jobs of the DAG."""
    from clipscale import checks, grid

    for path in a.files:
        try:
            cfg = checks.load(path, check_paths=True)
        except checks.ConfigError as e:
            print(e, file=sys.stderr)
            return 2
        runs = grid.runs(cfg)
        print(f"{path}: valid ({len(runs)} training runs, {len(cfg['downstream'])} downstream sets)")
    return 0


def _status(a) -> int:
    """Where the study in a.directory stands (clipscale.status); config files as Snakemake
    takes them: --configfile (merged in order, later ones win), else config/config.yaml."""
    import os

    from clipscale import checks, config, status

    files = a.configfile
    if not files:
        default = Path(a.directory) / "config" / "config.yaml"
        files = [str(default if default.exists() else Path("config") / "config.yaml")]
    try:
        merged: dict = {}
        for path in files:
            content = config.read_yaml(path)
            if not isinstance(content, dict):
                raise config.ConfigError(f"config file {path} must hold a mapping")
            merged = config.merge(merged, content)
        cfg = checks.validate(merged, source=" + ".join(files))
    except config.ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    if not Path(a.directory).is_dir():
        print(f"error: working directory {a.directory} does not exist", file=sys.stderr)
        return 2
    os.chdir(a.directory)  # the artifacts' paths are relative to it, as in Snakemake's -d
    data = status.study(cfg, ".", slurm=not a.no_slurm)
    print(json.dumps(data, indent=1) if a.json else status.render(data))
    return 0


def _make_world(a) -> int:
    from clipscale import checks
    from clipscale.world import WorldSpec, generate

    cfg = checks.load(a.config)
    summary = generate(WorldSpec.from_config(cfg), a.out)
    print(json.dumps(summary["pool"], indent=1))
    return 0


def _index_pool(a) -> int:
    from clipscale.subsets import build_index, pool_missing, pool_problems, pool_summary

    index = build_index(a.pool, workers=a.workers)
    index.to_parquet(a.out, index=False)
    print(f"{pool_summary(index)} -> {a.out}")
    for line in pool_missing(index):  # failed downloads of img2dataset: reported, not problems
        print(line)
    for line in pool_problems(index):  # the shards' problems, as the rule's log lists them
        print(f"shard {line}", file=sys.stderr)
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
    from clipscale import checks, models

    cfg = checks.load(a.config) if a.config else None
    if cfg:
        models.register(cfg)
    for name in a.models:
        print(json.dumps(models.measure_gmac(name)))
    return 0


def _published_table(a) -> int:
    """The paper's published results (shipped tables) as a tidy results table."""
    from clipscale.reference import ReferenceError, load_published
    from clipscale.table import TableError, write_table

    try:
        df = load_published(Path(a.reference_dir) if a.reference_dir else None)
        for out in a.out:
            write_table(df, out)
            counts = ", ".join(f"{k}={v}" for k, v in df["source"].value_counts().items())
            print(f"wrote {out}: {len(df)} rows ({counts})")
    except (ReferenceError, TableError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _standin(a) -> int:
    import yaml

    from clipscale import checks, config, standin

    cfg = yaml.safe_load(Path(a.config).read_text())
    try:
        checks.validate(cfg, source=a.config)
    except config.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(standin.write(cfg, a.out, a.shards))
    return 0


def _fit(a) -> int:
    from clipscale import fit
    from clipscale.reference import gmac_lookup
    from clipscale.table import TableError, read_table

    try:
        table = read_table(a.table)
        out = fit.run(table, a.input_name, {"bins": a.bins, "bootstrap": a.bootstrap, "ci": a.ci,
                                            "predictions": json.loads(a.targets)}, a.seed, gmac_lookup())
    except (TableError, fit.FitError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    fit.write_outputs(out, a.coefficients, a.predictions, a.points, a.markdown_dir)
    return 0


def _published_figures(a) -> int:
    from clipscale import figures
    from clipscale.reference import load_overlap, load_published

    specs = {s.name: s for s in figures.published_specs()}
    try:
        table = load_published()
        for name in a.names or list(specs):
            if name not in specs:
                raise figures.FigureError(f"no published figure named {name!r} (known: {list(specs)})")
            fig = figures.draw(specs[name], {"published": table}, overlap=load_overlap(),
                               fit_config={"bootstrap": a.bootstrap}, seed=a.seed)
            figures.save(fig, [Path(a.outdir) / f"{name}.pdf", Path(a.outdir) / f"{name}.png"])
            print(f"wrote {a.outdir}/{name}.{{pdf,png}}")
    except figures.FigureError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipscale", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check-config", help="validate config files: schema, cross-references, paths")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=_check_config)

    p = sub.add_parser("status", help="where a study stands: runs, evaluations, fine-tuning, outputs")
    p.add_argument("--configfile", "--configfiles", action="extend", nargs="+", help="config file(s), as given to snakemake "
                   "(repeatable; later ones win); default: config/config.yaml of the directory")
    p.add_argument("-d", "--directory", default=".", help="the study's working directory (snakemake -d)")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument("--no-slurm", action="store_true", help="do not ask squeue (live jobs from owner.json)")
    p.set_defaults(func=_status)

    p = sub.add_parser("make-world", help="generate the embedded default world")
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--out", default="results/world")
    p.set_defaults(func=_make_world)

    p = sub.add_parser("index-pool", help="count the samples of each shard of a pool directory")
    p.add_argument("pool")
    p.add_argument("--out", default="pool_index.parquet")
    p.add_argument("--workers", type=int, default=1, help="processes scanning shards (default 1)")
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

    p = sub.add_parser("published-table", help="the paper's published results as a tidy results table")
    p.add_argument("--out", required=True, nargs="+", help="output file(s): .parquet and/or .csv")
    p.add_argument("--reference-dir", help="directory of the reference CSVs (default: the shipped ones)")
    p.set_defaults(func=_published_table)

    p = sub.add_parser("standin", help="empty stand-ins for a config's pool and downstream sets (DAG tests)")
    p.add_argument("--config", required=True, help="config YAML")
    p.add_argument("--out", required=True, help="folder for the stand-ins")
    p.add_argument("--shards", type=int, default=40, help="empty pool shards to make")
    p.set_defaults(func=_standin)

    p = sub.add_parser("fit", help="fit the scaling laws of a results table")
    p.add_argument("--table", required=True, help="results table (.parquet or .csv)")
    p.add_argument("--input-name", default="published", help="name of the input in the outputs")
    p.add_argument("--coefficients", required=True, help="output CSV of fitted coefficients")
    p.add_argument("--predictions", help="output CSV of predictions")
    p.add_argument("--points", help="output CSV of the points each fit went through")
    p.add_argument("--markdown-dir", help="also write coefficients.md and predictions.md here")
    p.add_argument("--bins", type=int, default=5)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--ci", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--targets", default="[]", help='JSON list of {"model": ..., "samples_seen": ...} to predict')
    p.set_defaults(func=_fit)

    p = sub.add_parser("published-figures", help="draw the paper's figures from its published numbers")
    p.add_argument("names", nargs="*", help="figure names (default: all published figures)")
    p.add_argument("--outdir", default="results/figures")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_published_figures)

    # the dedup and evaluation steps' subcommands live beside their code
    dedup.add_commands(sub)
    evaluate_cli.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
