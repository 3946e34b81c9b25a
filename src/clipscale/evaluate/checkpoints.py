"""The checkpoint behind an evaluation: where it is, and what the results table says about it
(model, data, exact samples seen, GMAC), from its run's run.json or a released file's name."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from clipscale import files, grid, models, paths, released
from clipscale.config import ConfigError, format_count
from clipscale.evaluate.benchmark import EvaluationError
from clipscale.evaluate.plan import SOURCES


@dataclass
class CheckpointInfo:
    """A checkpoint and what the results table says about it."""

    source: str
    model: str             # open_clip model name (registered custom model or built-in architecture)
    label: str             # model as shown in figures
    arch_id: str
    data: str
    samples_seen: int      # exact samples seen at this checkpoint
    samples_seen_label: str
    gmac_per_sample: float
    epoch: int | None
    final: bool
    path: str              # the file to load
    checkpoint: str        # the table's checkpoint column
    data_size: int | None
    extra: dict = field(default_factory=dict)

    @property
    def total_gmac(self) -> float:
        return self.gmac_per_sample * self.samples_seen


def _read_json(path: str | Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} not found") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{what} {path} is not valid JSON: {e}") from None


def our_checkpoint(config: dict, model: str, scale: str, samples: str, epoch: int | str,
                   run_record: str | Path | None = None) -> CheckpointInfo:
    """Checkpoint ``epoch`` of one of our runs, described from its run.json."""
    from clipscale.train.records import checkpoint_dir

    run = grid.find_run(config, model, scale, samples)
    record_path = run_record or paths.fill(paths.RUN_DONE, **run.wildcards)
    record = _read_json(record_path, f"run record of {run.name}")
    missing = [k for k in ("epochs", "train_num_samples", "samples_seen_exact", "gmac_per_sample")
               if k not in record]
    if missing:
        raise ConfigError(f"run record {record_path} lacks {missing}")
    epoch = int(epoch)
    epochs = int(record["epochs"])
    if not 1 <= epoch <= epochs:
        raise ConfigError(f"run {run.name} has epochs 1..{epochs}, not {epoch}")
    final = epoch == epochs
    path = record.get("checkpoints", {}).get(str(epoch))
    if final and record.get("final_checkpoint"):
        path = record["final_checkpoint"]
    path = str(path or checkpoint_dir(run) / f"epoch_{epoch}.pt")
    # what the run had really drawn by that checkpoint (open_clip rounds each epoch up to whole
    # batches: samples_seen_exact is epochs x that)
    seen = int(record["samples_seen_exact"]) * epoch // epochs
    spec = config["models"][model]
    return CheckpointInfo(
        source=grid.source_of(run), model=model, label=spec.get("label", model), arch_id=model,
        data=f"{config['pool'].get('name', 'pool')}-{scale}", samples_seen=seen,
        samples_seen_label=run.samples_label if final else format_count(seen),
        gmac_per_sample=float(record["gmac_per_sample"]), epoch=epoch, final=final, path=path,
        checkpoint=path, data_size=int(record.get("data_samples") or config["scales"][scale]),
        extra={"run_record": str(record_path), "epochs": epochs},
    )


def released_gmac(config: dict, model: str, profile: str | Path | None = None) -> float:
    """GMAC per sample of a released checkpoint's architecture (config, Table 25, or measured:
    ``profile``, the model's profile the rule gives as input, else measured here)."""
    if model in config.get("models", {}):
        prof = json.loads(Path(profile).read_text()) if profile else None
        return models.gmac_per_sample(config, model, prof)
    value = models.paper_gmac(model)
    if value is not None:
        return value
    return float(models.measure_gmac(model)["gmac_per_sample"])


def released_checkpoint(config: dict, model: str, scale: str, samples: str,
                        profile: str | Path | None = None) -> CheckpointInfo:
    ckpt = released.find(config, model, scale, samples)
    return CheckpointInfo(
        source="released", model=ckpt.model, label=ckpt.label, arch_id=ckpt.model, data=ckpt.data,
        samples_seen=ckpt.samples_seen, samples_seen_label=ckpt.name.samples_label,
        gmac_per_sample=released_gmac(config, ckpt.model, profile), epoch=None, final=True, path=ckpt.path,
        checkpoint=ckpt.file, data_size=ckpt.name.data_size,
        extra={"lr": ckpt.name.lr, "batch_size": ckpt.batch_size,
               "samples_seen_from": ckpt.samples_seen_source, "in_table18": ckpt.table18},
    )


def checkpoint_info(config: dict, checkpoint: Mapping, run_record: str | Path | None = None,
                    profile: str | Path | None = None) -> CheckpointInfo:
    """The checkpoint named by an evaluation job's wildcards (source, model, scale, samples,
    epoch), described for the results table."""
    source, model, scale, samples = (checkpoint[k] for k in ("source", "model", "scale", "samples"))
    if source == "ours":
        return our_checkpoint(config, model, scale, samples, checkpoint["epoch"], run_record)
    if source == "released":
        return released_checkpoint(config, model, scale, samples, profile)
    raise ConfigError(f"unknown source {source!r} (expected one of {list(SOURCES)})")


def stamp(path: str | Path) -> dict:
    """What identifies a checkpoint file's content cheaply: path, size and modification time
    (a re-trained run rewrites its checkpoints)."""
    st = Path(path).stat()
    return {"checkpoint": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def table_row(info: CheckpointInfo) -> dict:
    """The results-table columns a checkpoint fixes (all but task, dataset, metric, value, error)."""
    return {"source": info.source, "model": info.label, "arch_id": info.arch_id, "data": info.data,
            "samples_seen": info.samples_seen, "samples_seen_label": info.samples_seen_label,
            "gmac_per_sample": info.gmac_per_sample, "total_gmac": info.total_gmac,
            "epoch": info.epoch, "final": info.final, "checkpoint": info.checkpoint,
            "data_size": info.data_size}


def check_checkpoint(path: str | Path) -> dict:
    """Open a checkpoint (memory-mapped: cheap for big files) to fail early on a missing or
    truncated file; returns its small metadata (epoch, name) when it has any."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"checkpoint {path} does not exist")
    try:
        ckpt = files.load_weights_only(path)
    except Exception as e:  # noqa: BLE001 - any failure to load means unusable
        raise EvaluationError(f"checkpoint {path} cannot be read: {type(e).__name__}: {e}") from None
    meta = {}
    if isinstance(ckpt, dict):
        for key in ("epoch", "name"):
            if isinstance(ckpt.get(key), (int, str)):
                meta[key] = ckpt[key]
        if "state_dict" not in ckpt and not any(hasattr(v, "shape") for v in ckpt.values()):
            raise EvaluationError(f"checkpoint {path} holds no state_dict nor tensors "
                                  f"(keys: {sorted(ckpt)[:10]})")
    return meta
