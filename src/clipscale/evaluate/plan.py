"""What to evaluate: every checkpoint x every configured (downstream set, task).

One evaluation job per checkpoint (``clipscale.evaluate.job``); one result file per (checkpoint,
set, task) (``paths.EVAL``), the tidy artifact the results table is made of.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from clipscale import grid, models, paths, released, table
from clipscale.config import ConfigError
from clipscale.config import section as config_section

TASKS = table.TASKS
SOURCES = ("ours", "released")
FINAL = "final"  # the {epoch} of a released checkpoint (its epoch is read from the file)
CHECKPOINT_WILDCARDS = ("source", "model", "scale", "samples", "epoch")


@dataclass(frozen=True, order=True)
class Target:
    """One evaluation: the wildcards of ``paths.EVAL``."""

    source: str
    model: str
    scale: str
    samples: str
    epoch: str
    dataset: str
    task: str

    @property
    def path(self) -> str:
        return paths.fill(paths.EVAL, **asdict(self))

    @property
    def checkpoint(self) -> dict:
        """The wildcards of its checkpoint (those of the evaluation job)."""
        return {k: getattr(self, k) for k in CHECKPOINT_WILDCARDS}

    @property
    def run_name(self) -> str:
        return f"{self.source} {self.model}/{self.scale}/{self.samples} epoch {self.epoch}"

    def describe(self) -> str:
        return f"{self.run_name} {self.dataset} {self.task}"


def dataset_tasks(config: dict) -> list[tuple[str, str]]:
    """(downstream set, task) pairs of the config, in config order."""
    return [(name, task) for name, spec in config["downstream"].items() for task in spec["tasks"]]


def dataset_dir(config: dict, dataset: str) -> str:
    """The clip_benchmark webdataset directory of a downstream set."""
    return paths.downstream_dir(config, dataset)


def benchmark_name(config: dict, dataset: str) -> str:
    """clip_benchmark's name of a downstream set: downstream.<name>.benchmark_name, else
    ``wds/<name>`` (a webdataset folder: the world's sets, or the set's path)."""
    return config["downstream"][dataset].get("benchmark_name") or f"wds/{dataset}"


def our_epochs(config: dict, run: grid.Run) -> list[int]:
    """Epochs of a run to evaluate: the last, or all with evaluate.all_checkpoints. From the
    schedule (grid.hparams), as the checkpoints exist only once the run is done."""
    hp = grid.hparams(config, run)
    epochs = hp["epochs"]
    if config_section(config, "evaluate")["all_checkpoints"]:
        # a const-cooldown trunk saves every save_every epochs; a branch has its own from its
        # start on (the checkpoints before it are its trunk's)
        start, every = hp.get("branch_epoch") or 0, hp.get("save_every") or 1
        return sorted({e for e in range(start + 1, epochs + 1) if e % every == 0} | {epochs})
    return [epochs]


def checkpoint_wildcards(config: dict) -> list[dict]:
    """source, model, scale, samples, epoch of every checkpoint to evaluate (one job each)."""
    out = []
    for run in grid.runs(config):
        for epoch in our_epochs(config, run):
            out.append({"source": "ours", **run.wildcards, "epoch": str(epoch)})
    for ckpt in released.checkpoints(config):
        out.append(ckpt.wildcards)
    return out


def targets(config: dict) -> list[Target]:
    """Every evaluation of the config: checkpoints x (downstream set, task)."""
    pairs = dataset_tasks(config)
    return [Target(**w, dataset=d, task=t) for w in checkpoint_wildcards(config) for d, t in pairs]


def target_paths(config: dict) -> list[str]:
    return [t.path for t in targets(config)]


def output_patterns(config: dict) -> list[str]:
    """The evaluation job's outputs: one result file per (set, task), the checkpoint's wildcards
    left as {source}, {model}, {scale}, {samples}, {epoch}."""
    keep = {k: "{" + k + "}" for k in CHECKPOINT_WILDCARDS}
    return [paths.fill(paths.EVAL, **keep, dataset=d, task=t) for d, t in dataset_tasks(config)]


def outputs_of(config: dict, checkpoint: dict) -> dict[tuple[str, str], str]:
    """(set, task) -> result file of one checkpoint."""
    return {(d, t): Target(**checkpoint, dataset=d, task=t).path for d, t in dataset_tasks(config)}


def record_of(config: dict, run: grid.Run, epoch: int) -> str:
    """The record of the training job that writes checkpoint ``epoch`` of a run: the run's
    (run.json), or, with train.segments, the segment's that ends with or after it (evaluated while
    the run goes on)."""
    segment = grid.segment_of(config, run, epoch)
    return (paths.fill(paths.RUN_SEGMENT, **run.wildcards, epoch=segment) if segment
            else paths.fill(paths.RUN_DONE, **run.wildcards))


def missing_checkpoints(config: dict) -> dict[str, list[str]]:
    """Checkpoints to evaluate (or fine-tune) that are gone although the record of the job that
    wrote them is there (deleted by hand, lost): record -> those checkpoint files. Snakemake
    cannot see them (checkpoints are not rule outputs: a failed job keeps its own), so the
    Snakefile moves those records aside (``set_aside_stale_records``): their jobs run again
    (clipscale.train writes the checkpoints anew), then what reads them. A stat per checkpoint,
    only for records that exist."""
    out: dict[str, list[str]] = {}
    for run in grid.runs(config):
        for epoch in our_epochs(config, run):
            record = record_of(config, run, epoch)
            checkpoint = f"{paths.fill(paths.RUN_CHECKPOINTS, **run.wildcards)}/epoch_{epoch}.pt"
            if os.path.isfile(record) and not os.path.isfile(checkpoint):
                out.setdefault(record, []).append(checkpoint)
    return out


def set_aside_stale_records(config: dict) -> list[str]:
    """Move each record of ``missing_checkpoints`` to ``<record>.stale``, so that Snakemake sees
    its job's output missing and runs it again; returns what was done, a line per record."""
    out = []
    for record, gone in missing_checkpoints(config).items():
        os.replace(record, f"{record}.stale")
        out.append(f"{', '.join(gone)} does not exist: {record} moved to {record}.stale, so that "
                   f"the job that wrote it runs again")
    return out


def job_inputs(config: dict, source: str, model: str, scale: str, samples: str, epoch: str) -> dict[str, str]:
    """Files an evaluation job waits for: the record of the training job that wrote the
    checkpoint (ours: run.json, or a segment's record) or the checkpoint file (released), and the world when it generates a downstream set (a user's set, with a path,
    is checked before any job starts)."""
    out: dict[str, str] = {}
    if source == "ours":
        run = grid.find_run(config, model, scale, samples)
        if epoch not in [str(e) for e in our_epochs(config, run)]:
            raise ConfigError(f"{run.name}: epoch {epoch} is not evaluated (epochs: "
                              f"{our_epochs(config, run)}; see evaluate.all_checkpoints)")
        out["run"] = record_of(config, run, int(epoch))
    elif source == "released":
        if epoch != FINAL:
            raise ConfigError(f"released checkpoints are evaluated as epoch_{FINAL}, not {epoch}")
        out["checkpoint"] = released.find(config, model, scale, samples).path
        if models.profile_needed(config, model):  # its GMAC is measured
            out["profile"] = paths.fill(paths.MODEL_PROFILE, model=model)
    else:
        raise ConfigError(f"unknown source {source!r} (expected one of {list(SOURCES)})")
    if any("path" not in spec for spec in config["downstream"].values()):
        out["world"] = paths.WORLD_DONE
    return out
