"""The pipeline's figure step: ``draw`` one figure of any kind, ``make`` it from table files."""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import pandas as pd

from clipscale import fit as fitting
from clipscale.figures.bottleneck import draw_bottleneck
from clipscale.figures.compute import draw_compute, fit_laws
from clipscale.figures.overlap import draw_overlap
from clipscale.figures.specs import FINETUNE_METRICS, FigureError, FigureSpec, check_spec
from clipscale.figures.style import save
from clipscale.table import add_group_means, groups_of


def draw(spec: FigureSpec, tables: Mapping[str, pd.DataFrame] | None = None, overlap: pd.DataFrame | None = None,
         fit_config: Mapping | None = None, seed: int = 0, data_sizes: Mapping[str, int] | None = None,
         groups: Mapping[str, Iterable[str]] | None = None,
         laws: Mapping[tuple[str, str, str], fitting.Fit] | None = None):
    """Draw one figure; returns the matplotlib Figure. A compute figure draws ``laws`` (the fit
    step's: ``fit.laws_from_frames``), or, without them, the laws ``fit_laws`` fits here with
    ``fit_config`` and ``seed`` the way the fit step does."""
    check_spec(spec)
    if spec.kind == "overlap":
        if overlap is None:
            raise FigureError(f"figure {spec.name!r} needs an overlap table (dataset, overlap_pct)")
        return draw_overlap(spec, overlap)
    tables = dict(tables or {})
    if groups and "ours" in tables:
        tables["ours"] = add_group_means(tables["ours"], groups)
    if spec.kind == "compute":
        if laws is None:
            laws = fit_laws(tables, fit_config, seed) if spec.fit else {}
        return draw_compute(spec, tables, laws, data_sizes)
    return draw_bottleneck(spec, tables, data_sizes)


def make(settings: Mapping, tables: Mapping[str, str], overlap: str | None,
         outputs: Sequence[str], fits: Mapping[str, tuple[str, str]] | None = None) -> None:
    """The pipeline's figure step: draw one figure from table files.

    ``settings`` is what shapes the figure (``clipscale.shaping.figure``: its spec, the data
    scales, the downstream groups; for a figure that ``reads_finetune``, the fit settings and
    the seed); ``tables`` maps an input ("published", "ours") to a results table file, and
    "finetune" to the fine-tuning table, whose rows are drawn with our runs' and whose laws are
    fitted here; ``fits`` maps an input to the fit step's (coefficients.csv, draws.csv), the laws
    a compute figure draws; ``overlap`` is the overlap CSV (dataset, overlap_pct) of an overlap
    figure.
    """
    from clipscale.table import read_table

    spec = FigureSpec(**settings["spec"])
    loaded = {inp: read_table(path) for inp, path in tables.items()}
    finetune = loaded.pop("finetune", None)
    if finetune is not None:
        loaded["ours"] = pd.concat([loaded["ours"], finetune], ignore_index=True) if "ours" in loaded else finetune
    ov = None
    if overlap:
        try:
            ov = pd.read_csv(overlap)
        except Exception as e:
            raise FigureError(f"figure {spec.name!r}: cannot read the overlap table {overlap}: {e}") from None
    laws = None
    if fits is not None:
        laws = {}
        for inp, (coefficients, draws) in fits.items():
            laws.update(fitting.laws_from_frames(pd.read_csv(coefficients), pd.read_csv(draws)))
        if finetune is not None and spec.fit:
            own = fit_laws({"ours": add_group_means(finetune, groups_of(settings))}, settings.get("fit"),
                           settings.get("seed", 0))
            laws.update({k: v for k, v in own.items() if k[2] in FINETUNE_METRICS})
    fig = draw(spec, loaded, overlap=ov, data_sizes=dict(settings.get("scales", {})), groups=groups_of(settings),
               laws=laws)
    save(fig, outputs)
