"""Adapter: rules figure_* -> clipscale.figures.make (draw one configured figure)."""

from clipscale.figures import make
from clipscale.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    names = sm.input.keys()
    make(
        sm.params.settings,  # the spec and what drawing it reads (clipscale.shaping.figure)
        # finetune: the fine-tuning table (figures of fine-tuning metrics), drawn with ours
        {name: sm.input[name] for name in ("published", "ours", "finetune") if name in names},
        sm.input["overlap"] if "overlap" in names else None,
        [sm.output.pdf, sm.output.png],
        # the fit step's laws of each input (compute figures): coefficients.csv and draws.csv
        {name: (sm.input[f"{name}_coefficients"], sm.input[f"{name}_draws"])
         for name in ("published", "ours") if f"{name}_coefficients" in names} or None,
    )
