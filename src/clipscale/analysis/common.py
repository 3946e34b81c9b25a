"""What the analyses share: the group columns, the tolerance of "inside an interval", the fit settings, the
groups of a table."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from clipscale import fit as fitting


GROUP = ["source", "task", "dataset", "metric"]

INSIDE_TOL = 1e-9  # relative slack of "inside the interval" (a noise-free law has a zero-width band)


def _settings(fit_config: Mapping) -> dict:
    st = fitting.FitSettings.of(fit_config)
    return {"bins": st.bins, "bootstrap": st.bootstrap, "ci": st.ci, "pad": st.bin_pad,
            "min_bootstrap_computes": st.min_bootstrap_computes}


def _groups(df: pd.DataFrame):
    yield from fitting.final_points(df).groupby(GROUP, sort=True)
