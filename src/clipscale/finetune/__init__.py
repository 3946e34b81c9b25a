"""The paper's fourth protocol: fine-tuning (ImageNet-style) and joint fine-tuning with patching
of our runs' final checkpoints (Sec. 4.4; supplement B.2.2).

* ``recipe``: the recipe of the paper's Table 10 made of timm's parts, patching's interpolation;
* ``plan``: which jobs a config asks for (one per final checkpoint and protocol), their settings;
* ``job``: the job (resumable), its result file, the rows it adds to the results table.
"""

from clipscale.finetune.job import FinetuneError, finetune_checkpoint, result_rows  # noqa: F401
from clipscale.finetune.plan import PROTOCOLS, enabled, target_paths  # noqa: F401
