"""The paper's fourth protocol: fine-tuning (ImageNet-style) and joint fine-tuning with patching
of our runs' final checkpoints (Sec. 4.4; supplement B.2.2).

* ``plan``: which jobs a config asks for (one per final checkpoint and protocol), their settings
  and recipes (no torch: the Snakefile and the config check import it);
* ``recipe``: the recipe of the paper's Table 10 made of timm's parts, patching's interpolation;
* ``job``: the job (resumable, data parallel), its result file; ``python -m clipscale.finetune``
  is one process of a launched job; its parts: ``data`` (a task's shards, splits, batches, seeded
  decoding; the ranks), ``loop`` (the training loop, the ``Trainer``), ``evaluation`` (heads,
  accuracy, the protocols' runs, patching's sweep);
* ``results``: the fine-tuning table of the jobs' result files and its log.
"""

from clipscale.finetune.plan import PROTOCOLS, enabled, target_paths  # noqa: F401

_LAZY = {"FinetuneError": "job", "finetune_checkpoint": "job", "run_job": "job", "result_rows": "results",
         "aggregate": "results"}


def __getattr__(name: str):
    """The job's names on first use: importing the package (the Snakefile does) loads no torch."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"clipscale.finetune.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
