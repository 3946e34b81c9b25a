"""The imports a training job does not need, kept out of its process (as
``clipscale.evaluate.imports`` does for an evaluation job).

``import open_clip_train.main`` imports wandb and tensorboard (optional loggers, used only with
``--report-to``), and through open_clip timm (timm image towers, ``--opt timm/...``) and
transformers (Hugging Face text towers): all four optional upstream (``try: import ... except
ImportError``). A training run whose model, report_to and extra_args name none of them uses none,
so ``keep_out`` marks them absent in ``sys.modules`` before open_clip is imported: the same run,
about 1,000 modules and 1.5-2 CPU-s fewer per job (benchmarks/README.md). Only for a process
that is one training job (``python -m clipscale.train``, which the rules' ``launch`` starts):
the marks last as long as the process.
"""

from __future__ import annotations

import json

from clipscale import grid
from clipscale.evaluate.imports import keep_out, model_config

__all__ = ["keep_out", "unused"]

# package kept out -> words that say a run uses it (in its model's open_clip config, its
# train.report_to or its train.extra_args)
USED_WHEN = {
    "wandb": ("wandb",),
    "torch.utils.tensorboard": ("tensorboard",),
    "tensorboard": ("tensorboard",),
    "timm": ("timm",),
    "transformers": ("hf_", "hf-", "transformers"),
}


def unused(config: dict, run: grid.Run) -> list[str]:
    """The optional packages the training run ``run`` never imports for its work; all of them
    are kept when the model's open_clip config is not found."""
    cfg = model_config(config, run.model)
    if cfg is None:
        return []
    hp = grid.hparams(config, run)
    text = " ".join([json.dumps(cfg), *(hp.get("report_to") or []), *map(str, hp.get("extra_args") or [])])
    return [name for name, words in USED_WHEN.items() if not any(w in text for w in words)]
