"""Where a study stands: ``clipscale status``, read from the files its jobs leave (and squeue).

One table of the grid (``grid.runs``), one row per run with its state:

* ``done``: its record ``run.json`` is there;
* ``training``: a job holds the run now (a Slurm job of the run's ``train``/``train_segment``
  rule that squeue shows running, or the live process that claimed the folder:
  ``owner.json``, ``clipscale.ownership``); step k of n from ``losses.csv``, its pace (samples
  per second) and ETA from the steps trained since the attempt's start or its newest checkpoint
  and the file times;
* ``waiting``: its Slurm job went back to the queue for its next walltime window (requeued), or,
  without Slurm, its last attempt ended at the walltime warning: the next one resumes;
* ``queued``: a Slurm job of the run waits in the queue and no attempt has started yet;
* ``interrupted``: the last attempt was stopped (SIGINT, SIGTERM) or killed (no end record) and
  no job holds the run: re-running the workflow resumes it at the place shown;
* ``failed``: the last attempt ended with an error, or the job's log ends with one (the reason
  and the log's path);
* ``pending``: nothing of the run yet (its inputs, or its turn, are still to come).

The windows (attempts) used come from ``attempts.jsonl``, the last loss from ``losses.csv``, the
place a run resumes from from its partial checkpoint (``partial.pt``: its epoch and step are read
from the pickle's opcodes, ``pickletools``, without unpickling anything) or its newest epoch
checkpoint. Then: evaluations done and missing per checkpoint, the fine-tuning jobs, and
whether the results table, the fits and the figures are older than what they are made from.

Slurm: where ``squeue`` answers, the user's jobs whose working directory is the study's are
matched to runs by the comment snakemake-executor-plugin-slurm gives them
(``rule_<rule>_wildcards_<w1>_<w2>...``, the rule's wildcard values joined by ``_``).

Nothing here writes a file: it works while Snakemake runs, after it died, and on a finished
study.

Modules, by role:

* ``traces``: what a job leaves behind, read without torch: a partial checkpoint's place (its pickle
  read as data), the last loss, the last error of a log;
* ``queue``: what Slurm and Snakemake say: squeue's jobs and their comments, Snakemake's incomplete and
  locked marks;
* ``runs``: a training run's state (``run_status``): done, training, waiting, queued, interrupted,
  failed, pending;
* ``outputs``: the state of what follows training: evaluations, fine-tuning jobs, the study's other
  outputs;
* ``report``: the whole study (``study``) and its text (``render``);
"""

from clipscale.status.outputs import (CheckpointEvals, FinetuneStatus, OutputStatus, evaluations, finetune_jobs,
                                      outputs)
from clipscale.status.queue import (SLURM_ACTIVE, SLURM_WAITING, SlurmJob, plugin_comment, snakemake_incomplete,
                                    snakemake_locked, squeue_jobs, train_comments)
from clipscale.status.report import render, study
from clipscale.status.runs import RunStatus, STATES, run_status
from clipscale.status.traces import PARTIAL_KEYS, last_error, last_loss, partial_place

__all__ = [
    "CheckpointEvals", "FinetuneStatus", "OutputStatus", "PARTIAL_KEYS", "RunStatus", "SLURM_ACTIVE", "SLURM_WAITING",
    "STATES", "SlurmJob", "evaluations", "finetune_jobs", "last_error", "last_loss", "outputs", "partial_place",
    "plugin_comment", "render", "run_status", "snakemake_incomplete", "snakemake_locked", "squeue_jobs", "study",
    "train_comments",
]
