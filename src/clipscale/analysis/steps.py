"""The pipeline's analysis steps: read a table, analyse, write the outputs (``input_table``, ``write_output``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from clipscale.analysis.bins import bin_winners, bin_winners_markdown
from clipscale.analysis.comparison import comparison, comparison_markdown
from clipscale.analysis.extrapolation import extrapolation, extrapolation_markdown
from clipscale.analysis.plots import data_ranges, draw_comparison, draw_extrapolation, main_panels

log = logging.getLogger("clipscale.analysis")


# ---------------------------------------------------------------------------------------------
# the pipeline's steps


def input_table(table_path: str, input_name: str, settings: Mapping) -> pd.DataFrame:
    """An analysis step's input: the results table, with our groups' means for our runs."""
    from clipscale.table import add_group_means, groups_of, read_table

    table = read_table(table_path)
    groups = groups_of(settings) if input_name == "ours" else None
    return add_group_means(table, groups) if groups else table


def write_output(path: str, text_or_frame) -> None:
    """An analysis step's output: a frame as CSV or a text (its folder made)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text_or_frame, pd.DataFrame):
        text_or_frame.to_csv(path, index=False)
    else:
        Path(path).write_text(text_or_frame)


def extrapolation_step(table_path: str, input_name: str, settings: Mapping, runs: str, summary: str,
                       markdown: str, figures: Sequence[str]) -> None:
    """Rule fit_extrapolation: ``settings`` is clipscale.shaping.extrapolation's slice."""
    from clipscale.figures import save

    table = input_table(table_path, input_name, settings)
    out = extrapolation(table, input_name, settings.get("fit", {}), int(settings.get("seed", 0)))
    write_output(runs, out["runs"])
    write_output(summary, out["summary"])
    write_output(markdown, extrapolation_markdown(out["summary"], out["coverage"]))
    checked = sorted({k[:4] for k in out["fits"]})
    panels = main_panels(checked, input_name, settings)
    title = (f"Extrapolation check ({input_name}): laws fitted below the cut, {len(panels)} main tasks"
             + (f" (all {len(checked)} in extrapolation_{input_name}.md)" if len(panels) < len(checked) else ""))
    save(draw_extrapolation(table, out, title, panels), figures)
    log.info("%s: %d laws checked on %d held-out predictions", input_name, len(out["summary"]), len(out["runs"]))


def comparison_step(table_path: str, input_name: str, settings: Mapping, csv: str, markdown: str,
                    figures: Sequence[str]) -> None:
    """Rule fit_comparison: ``settings`` is clipscale.shaping.comparison's slice."""
    from clipscale.figures import save

    table = input_table(table_path, input_name, settings)
    fit_config = settings.get("fit", {})
    comp = comparison(table, input_name, fit_config, int(settings.get("seed", 0)), fit_config.get("comparisons"))
    write_output(csv, comp)
    write_output(markdown, comparison_markdown(comp))
    within = fit_config.get("comparison_figure_within", 10.0)
    save(draw_comparison(comp, f"Comparison of scaling laws ({input_name})",
                         data_ranges(table, input_name, fit_config.get("comparisons")), within), figures)
    log.info("%s: %d comparison rows", input_name, len(comp))


def bin_winners_step(table_path: str, input_name: str, settings: Mapping, csv: str, markdown: str) -> None:
    """Rule fit_bin_winners: ``settings`` is clipscale.shaping.bin_winners's slice."""
    table = input_table(table_path, input_name, settings)
    front = bin_winners(table, input_name, settings.get("fit", {}))
    write_output(csv, front)
    write_output(markdown, bin_winners_markdown(front))
    log.info("%s: %d bin winners", input_name, len(front))
