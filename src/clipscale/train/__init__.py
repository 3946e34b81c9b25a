"""One open_clip training run per grid cell, as the paper trained them.

``python -m clipscale.train --config C --model M --scale S --samples N`` runs open_clip_train's own
``main`` in this process (so custom model configs can be registered first) with the paper's
recipe. How runs resume, the files in a run's folder, stopping and divergence: ``entry``'s
docstring (``python -m clipscale.train --help``).

Modules, by role:

* ``records``: the run's folder and its records: paths, checkpoints on disk and their checks, attempts,
  settings;
* ``arguments``: from the config to open_clip_train's command line: device, arguments, a branch's trunk
  checkpoint;
* ``patches``: patches installed into open_clip_train before its ``main`` runs: skip counting, the data
  path, the shuffle buffer, offline wandb, safe saving, and the loss guard (divergence);
* ``run``: one training process: runs open_clip_train's ``main`` with the patches and returns the run
  record;
* ``launcher``: the launcher (the rule's script): starts the run's processes and waits; Slurm windows
  and requeue;
* ``entry``: ``main``, the command line of ``python -m clipscale.train`` (its docstring is the
  ``--help``);
"""

from clipscale.stopping import TrainingStopped, stop_on_signals  # as train.py had them
from clipscale.train.arguments import device_of, open_clip_args, seed_branch, trunk_checkpoint
from clipscale.train.entry import main
from clipscale.train.launcher import (check_requeue, end_of_window, launch, refuse_hopeless, requeue_this_job,
                                      slurm_job_fields)
from clipscale.train.patches import (LossGuard, MAX_SKIP_EXAMPLES, install_fast_data_path, install_guards,
                                     install_multi_tensor_adamw, install_safe_saving, install_shuffle_buffer,
                                     install_skip_counting, install_wandb_offline, skipped_summary)
from clipscale.train.records import (ATTEMPTS_NAME, DivergenceError, LOSSES_NAME, OPENCLIP_NAME, Requeued,
                                     SETTINGS_NAME, SKIPPED_NAME, SKIP_DIR_ENV, SUPERSEDED_NAME, TrainingError,
                                     check_resume_checkpoints, check_shards, checkpoint_dir, checkpoint_problem,
                                     checkpoints, end_attempt, file_identity, rank, read_attempts,
                                     resume_before_missing, run_dir, start_attempt, supersede_other_settings)
from clipscale.train.run import train

__all__ = [
    "ATTEMPTS_NAME", "DivergenceError", "LOSSES_NAME", "LossGuard", "MAX_SKIP_EXAMPLES", "OPENCLIP_NAME", "Requeued",
    "SETTINGS_NAME", "SKIPPED_NAME", "SKIP_DIR_ENV", "SUPERSEDED_NAME", "TrainingError", "TrainingStopped",
    "check_requeue", "check_resume_checkpoints", "check_shards", "checkpoint_dir", "checkpoint_problem",
    "checkpoints", "device_of", "end_attempt", "end_of_window", "file_identity", "install_fast_data_path",
    "install_guards", "install_multi_tensor_adamw", "install_safe_saving", "install_shuffle_buffer",
    "install_skip_counting", "install_wandb_offline", "launch", "main", "open_clip_args", "rank", "read_attempts", "refuse_hopeless",
    "requeue_this_job", "resume_before_missing", "run_dir", "seed_branch", "skipped_summary", "slurm_job_fields",
    "start_attempt", "stop_on_signals", "supersede_other_settings", "train", "trunk_checkpoint",
]
