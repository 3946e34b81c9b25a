"""The grid of training runs: one run per (model, data scale, samples seen), with its hyper-parameters.

This is the one place that turns a config into runs; the Snakefile, the trainer, the evaluator and
the results table all go through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clipscale.config import format_count, parse_count


@dataclass(frozen=True, order=True)
class Run:
    model: str
    scale: str
    samples_seen: int  # nominal samples seen, as configured

    @property
    def samples_label(self) -> str:
        return format_count(self.samples_seen)

    @property
    def wildcards(self) -> dict:
        return {"model": self.model, "scale": self.scale, "samples": self.samples_label}

    @property
    def name(self) -> str:
        return f"{self.model}/{self.scale}/{self.samples_label}"

    @classmethod
    def from_wildcards(cls, model: str, scale: str, samples: str) -> "Run":
        return cls(model, scale, parse_count(samples))


def _matches(entry: dict, run: Run) -> bool:
    if "model" in entry and entry["model"] != run.model:
        return False
    if "scale" in entry and entry["scale"] != run.scale:
        return False
    if "samples_seen" in entry and parse_count(entry["samples_seen"]) != run.samples_seen:
        return False
    return True


def runs(config: dict) -> list[Run]:
    """All runs of the grid, minus grid.exclude, in a stable order."""
    grid = config["grid"]
    out = []
    for model in grid["models"]:
        for scale in grid["scales"]:
            for samples in grid["samples_seen"]:
                run = Run(model, scale, parse_count(samples))
                if not any(_matches(e, run) for e in grid.get("exclude", [])):
                    out.append(run)
    return out


def hparams(config: dict, run: Run) -> dict:
    """Training settings of one run: config.train with every matching override applied in order.

    Adds the derived schedule: ``train_num_samples`` per virtual epoch and ``epochs`` such that
    epochs x train_num_samples is the run's exact samples seen (``samples_seen_exact``).
    """
    settings = {k: v for k, v in config["train"].items() if k != "overrides"}
    for entry in config["train"].get("overrides", []):
        if _matches(entry, run):
            settings.update({k: v for k, v in entry.items() if k not in ("model", "scale", "samples_seen")})
    epochs = settings["checkpoints"]
    per_epoch = max(1, run.samples_seen // epochs)
    settings["epochs"] = epochs
    settings["train_num_samples"] = per_epoch
    settings["world_size"] = settings.get("nproc", 1) * settings.get("nodes", 1)
    settings["global_batch_size"] = settings["batch_size"] * settings["world_size"]
    settings["samples_seen_exact"] = epochs * samples_per_epoch(
        per_epoch, settings["global_batch_size"], settings.get("workers", 1))
    return settings


def segment_ends(config: dict, run: Run) -> list[int]:
    """Epochs at which a run's jobs end before its last (``train.segments`` jobs per run in the
    DAG, cut at epochs E x k / S, at most one per epoch): [] for a run in one job."""
    hp = hparams(config, run)
    epochs, segments = hp["epochs"], hp.get("segments", 1)
    return sorted({round(epochs * k / segments) for k in range(1, segments)} - {0, epochs})


def segment_of(config: dict, run: Run, epoch: int) -> int | None:
    """The segment end whose job writes checkpoint ``epoch`` (None: the run's last job)."""
    return next((end for end in segment_ends(config, run) if end >= epoch), None)


def samples_per_epoch(train_num_samples: int, global_batch_size: int, workers: int) -> int:
    """Samples open_clip_train really draws per (virtual) epoch with --dataset-resampled: it
    rounds up to whole global batches, then to a multiple of the dataloader workers
    (open_clip_train/data.py, get_wds_dataset). This is the paper's exact samples seen."""
    batches = math.ceil(train_num_samples / global_batch_size)
    workers = max(1, workers)
    return math.ceil(batches / workers) * workers * global_batch_size


def find_run(config: dict, model: str, scale: str, samples: str) -> Run:
    run = Run.from_wildcards(model, scale, samples)
    if run not in runs(config):
        raise KeyError(f"{run.name} is not a run of the configured grid")
    return run
