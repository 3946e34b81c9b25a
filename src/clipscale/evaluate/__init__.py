"""Evaluation of checkpoints with clip_benchmark, and the tidy results table.

One evaluation job per checkpoint (``job.evaluate_checkpoint``): the model is loaded once, each
downstream set's test image features are computed once and shared by zero-shot classification
and the linear probe, and clip_benchmark's own code computes every metric
(``benchmark``). Each (checkpoint, set, task) is a result file of its own (``paths.EVAL``), kept
when a later job finds its settings and checkpoint unchanged. ``aggregate`` makes the results
table and its log of everything that is not in it.

Modules, by role (as CLIP_benchmark separates its builder, metrics and CLI):

* ``plan``: what to evaluate (checkpoints x (set, task)), the job's outputs and inputs;
* ``checkpoints``: the checkpoint behind an evaluation and its table row (samples seen, GMAC);
* ``benchmark``: the calls into clip_benchmark, the shared features, the CPU linear probe;
* ``job``: one checkpoint's evaluation job, result files with their fingerprints;
* ``aggregate``: the results table and its log;
* ``imports``: the optional packages an evaluation job keeps out of its process;
* ``cli``: the ``clipscale evaluate|aggregate-results|eval-targets`` subcommands.

Command line::

    clipscale evaluate --config config/config.yaml --source ours --model vit-s \\
        --scale 12k --samples 30k            # every set and task of the config (or --dataset/--task)
    clipscale aggregate-results --config config/config.yaml
    clipscale eval-targets --config config/config.yaml
"""

from clipscale.evaluate.aggregate import aggregate, build_table, collect, data_lines, read_result
from clipscale.evaluate.benchmark import (CPU_LINEAR_PROBE_PATCHES, EvaluationError, UpstreamChanged,
                                          check_downstream, cpu_linear_probe, cpu_linear_probe_source,
                                          prepare_feature_cache, resolve_device)
from clipscale.evaluate.checkpoints import (CheckpointInfo, check_checkpoint, checkpoint_info, our_checkpoint,
                                            released_checkpoint, table_row)
from clipscale.evaluate.job import RESULT_FORMAT, evaluate_checkpoint, unused_imports
from clipscale.evaluate.plan import (FINAL, SOURCES, TASKS, Target, benchmark_name, checkpoint_wildcards,
                                     dataset_dir, dataset_tasks, job_inputs, missing_checkpoints,
                                     output_patterns, outputs_of, record_of, set_aside_stale_records,
                                     target_paths, targets)

__all__ = [
    "CPU_LINEAR_PROBE_PATCHES", "CheckpointInfo", "EvaluationError", "FINAL", "RESULT_FORMAT", "SOURCES",
    "TASKS", "Target", "UpstreamChanged", "aggregate", "benchmark_name", "build_table", "check_checkpoint",
    "check_downstream", "checkpoint_info", "checkpoint_wildcards", "collect", "cpu_linear_probe",
    "cpu_linear_probe_source", "data_lines", "dataset_dir", "dataset_tasks", "evaluate_checkpoint",
    "job_inputs", "missing_checkpoints", "our_checkpoint", "output_patterns", "outputs_of",
    "prepare_feature_cache", "read_result", "record_of", "released_checkpoint", "resolve_device",
    "set_aside_stale_records", "table_row", "target_paths", "targets", "unused_imports",
]
