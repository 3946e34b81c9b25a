"""One open_clip training run per grid cell, as the paper trained them.

``python -m clipscale.train --config C --model M --scale S --samples N`` runs open_clip_train's own
``main`` in this process (so custom model configs can be registered first) with the paper's
recipe: --dataset-resampled, samples seen = epochs x train-num-samples, --local-loss
--gather-with-grad, a checkpoint per virtual epoch. Under torchrun or srun every process runs
this same module.

Resume: checkpoints live in the run's folder, which is not a Snakemake output, so a failed,
killed or timed-out job keeps them; the next attempt passes ``--resume latest`` and continues
from the newest good checkpoint. Before open_clip picks one, the file it would pick is checked
(loaded with ``weights_only=True``: a checkpoint is data, never code) and moved aside with the
reason when it is unreadable, unsafe, or not an epoch of this run. Only ``run.json`` is the
rule's output, written last.

Files in the run's folder besides run.json (kept across attempts, none a Snakemake output):

* ``attempts.jsonl``: one line when an attempt starts and one when it ends (steps, seconds,
  resumed_from, how it ended); run.json copies the attempts and adds steps/seconds totals;
* ``skipped/``: per-process counts of the samples open_clip's data pipeline skipped (corrupt
  images, samples without caption), summed into run.json's ``skipped_samples``;
* ``openclip/``: open_clip's own logs and ``checkpoints/epoch_N.pt`` (files moved aside end in
  ``.corrupt`` or ``.rejected``).

Stopping: SIGINT/SIGTERM reach the launcher (the rule's script), which passes them on to the
training processes (started in their own session) and kills them if they do not stop in time;
a training process stops at once (after a checkpoint being saved), records its attempt and
exits non-zero, so no run.json is written. Both also stop when the process above them exits.

Divergence: every loss is checked before its backward pass; NaN/inf, or a jump above
``max_loss_jump`` x the running mean, stops the run with a message naming the run and step.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from clipscale import checks, grid, models, train_imports
from clipscale import config as config_mod
from clipscale.stopping import TrainingStopped, stop_on_signals
from clipscale.train.records import TrainingError, rank
from clipscale.train.run import train

log = logging.getLogger("clipscale.train")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipscale.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="config YAML (validated)")
    parser.add_argument("--config-json", help="the resolved config as JSON (Snakemake passes it)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--scale", required=True)
    parser.add_argument("--samples", required=True, help="samples seen, e.g. 48k or 3B")
    parser.add_argument("--manifest", required=True, help="subset manifest.json")
    parser.add_argument("--out", required=True, help="run.json to write on success")
    parser.add_argument("--profile", help="the model's profile (measured GMAC per sample); without it, "
                        "the config's or Table 25's value, else measured here")
    parser.add_argument("--until-epoch", type=int, help="stop once this epoch's checkpoint is saved "
                        "(a segment of the run); --out then gets the record up to it")
    a = parser.parse_args(argv)
    # our own handler on the clipscale logger only: open_clip_train installs one on the root
    # logger, and a second root handler would print every line twice
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    if not (a.config or a.config_json):
        parser.error("one of --config or --config-json is required")
    if a.config_json:
        cfg = config_mod.validate(json.loads(Path(a.config_json).read_text()), a.config_json)
    else:
        cfg = checks.load(a.config)  # a config the Snakefile did not check: all its checks
    run = grid.find_run(cfg, a.model, a.scale, a.samples)
    train_imports.keep_out(train_imports.unused(cfg, run))  # one job, one process: before open_clip
    with stop_on_signals():
        try:
            record = train(cfg, run, a.manifest, until=a.until_epoch)
            if rank() == 0:
                prof = json.loads(Path(a.profile).read_text()) if a.profile else None
                record["gmac_per_sample"] = models.gmac_per_sample(cfg, run.model, prof)
                record["total_gmac"] = record["gmac_per_sample"] * record["samples_seen_exact"]
                record["trained_gmac"] = record["gmac_per_sample"] * record["samples_trained_exact"]
                tmp = Path(f"{a.out}.tmp")
                tmp.write_text(json.dumps(record, indent=1))
                os.replace(tmp, a.out)  # whole or not at all, even if a signal comes now
                log.info("run %s done in %.1f s: %s", run.name, record["seconds_this_attempt"], a.out)
        except TrainingError as e:
            log.error("%s", e)
            return 1
        except TrainingStopped as e:
            log.warning("run %s %s; the next attempt resumes from the latest checkpoint", run.name, e)
            return 128 + e.signum
    return 0
