"""Adapter: rules figure_training_curves, figure_learning_curves -> clipscale.figures."""

from clipscale.figures import make_learning_curves, make_training_curves
from clipscale.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    outputs = [sm.output.pdf, sm.output.png]
    if sm.rule == "figure_training_curves":
        make_training_curves(sm.params.settings, list(sm.input.runs), outputs)
    else:
        make_learning_curves(sm.params.settings, sm.input.table, outputs)
