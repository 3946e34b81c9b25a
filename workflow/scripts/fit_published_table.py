"""Adapter: rule published_table -> clipscale.reference (the paper's numbers as a results table)."""

import logging

from clipscale.logs import job_logging
from clipscale.reference import load_published
from clipscale.table import write_table

with job_logging(snakemake.log[0]):  # noqa: F821
    table = load_published()
    write_table(table, snakemake.output.table)  # noqa: F821
    logging.info("%d rows: %s", len(table), table["source"].value_counts().to_dict())
