"""Figures from tidy results tables: the paper's scaling plots, for its numbers and for ours.

A figure is described by a ``FigureSpec`` (name, kind, sources, datasets, metrics) and drawn from
results tables (``clipscale.table`` format) keyed by input: "published" (the paper's numbers,
sources "published" and "openai") and "ours" (source "ours"). Nothing here knows dataset names:
which task/dataset/metric a figure shows comes from its spec, so the same code draws the paper's
ImageNet figure and our embedded world's "shapes" figure.

Kinds:

- ``compute``: error (%) vs total compute C (GMAC), log-log, one panel per dataset x metric;
  points coloured by training data, marker by model, size by samples seen; one fitted line per
  source (the paper's fit: binned, or direct for OpenAI) with its bootstrap band, the formula in
  the legend ("OpenCLIP (LAION): E = 5.86·C^-0.11").
- ``data_bottleneck``: error vs samples seen, one line per data scale, one panel per model.
- ``samples_bottleneck``: error vs data scale, one line per samples seen, one panel per model.
- ``overlap``: the near-duplicate overlap table (dataset, overlap_pct) as a bar chart.

Built-in specs: ``published_specs()`` (the paper's figures, "<name>_published") and
``default_our_specs(config)`` (derived from config.downstream). ``figure_specs(config)`` gives the
configured list: built-ins, with config.figures entries added or replacing those of same name.

Modules, by role:

* ``style``: the figures' shared look: sources' labels, colours, line styles and markers, axis and
  legend helpers, panels, and writing a figure (``save``, with fixed metadata so the same inputs give
  the same bytes);
* ``specs``: what a figure shows (``FigureSpec``): the paper's figures, ours (fine-tuning figures
  included), checks;
* ``panels``: shared by the plot families: a figure's rows (``_select``), its panels and their layout,
  dash patterns;
* ``compute``: compute plots: error against compute with the fitted scaling laws;
* ``bottleneck``: bottleneck plots: error against samples seen or data size, one panel per model;
* ``overlap``: dedup figures: the overlap of the downstream sets with the training data;
* ``step``: the pipeline's figure step: ``draw`` one figure of any kind, ``make`` it from table files;
* ``curves``: training curves (each run's losses.csv) and learning curves (every checkpoint's error);
"""

from clipscale.figures.bottleneck import draw_bottleneck
from clipscale.figures.compute import draw_compute, fit_laws
from clipscale.figures.curves import (LOSS_SMOOTHING, draw_learning_curves, draw_training_curves, make_learning_curves,
                                      make_training_curves, read_losses)
from clipscale.figures.overlap import draw_overlap
from clipscale.figures.specs import (FINETUNE_METRICS, FigureError, FigureSpec, KINDS, PUBLISHED_CLASSIFICATION,
                                     PUBLISHED_FINETUNE, PUBLISHED_IMAGENET_FINETUNE, PUBLISHED_RETRIEVAL, check_spec,
                                     default_our_specs, figure_specs, find_spec, published_specs, reads_finetune,
                                     spec_from_dict)
from clipscale.figures.step import draw, groups_of, make
from clipscale.figures.style import (DATASET_LABELS, HOLLOW_SOURCES, INPUT_OF_SOURCE, KNOWN_DATA_COLORS,
                                     LABEL_FONTSIZE, MARKERS, METRIC_LABELS, SOURCE_COLORS, SOURCE_LABELS,
                                     SOURCE_LINESTYLES, TITLE_FONTSIZE, dataset_label, error_label, metric_label, plt,
                                     save)

__all__ = [
    "DATASET_LABELS", "FINETUNE_METRICS", "FigureError", "FigureSpec", "HOLLOW_SOURCES", "INPUT_OF_SOURCE", "KINDS",
    "KNOWN_DATA_COLORS", "LABEL_FONTSIZE", "LOSS_SMOOTHING", "MARKERS", "METRIC_LABELS", "PUBLISHED_CLASSIFICATION",
    "PUBLISHED_FINETUNE", "PUBLISHED_IMAGENET_FINETUNE", "PUBLISHED_RETRIEVAL", "SOURCE_COLORS", "SOURCE_LABELS",
    "SOURCE_LINESTYLES", "TITLE_FONTSIZE", "check_spec", "dataset_label", "default_our_specs", "draw",
    "draw_bottleneck", "draw_compute", "draw_learning_curves", "draw_overlap", "draw_training_curves", "error_label",
    "figure_specs", "find_spec", "fit_laws", "groups_of", "make", "make_learning_curves", "make_training_curves",
    "metric_label", "plt", "published_specs", "read_losses", "reads_finetune", "save", "spec_from_dict",
]
