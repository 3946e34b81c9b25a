"""The evaluation job of one checkpoint: every configured (downstream set, task), the model
loaded once, one result file per (set, task).

A result file records its fingerprint: the settings that shape it (``clipscale.shaping.evaluate``,
the same slice the rule's params carry) and the checkpoint file's stamp (path, size, mtime). The
rule's outputs are flagged ``update`` (Snakemake does not delete them before the job), so when a
job reruns because a downstream set was added or one set's settings changed, the results whose
fingerprint still matches are kept as they are and only the others are computed. A failed
result is always computed again. To force a result to be recomputed, delete its file (a result
file is a target of the workflow: Snakemake reruns its job). A checkpoint that does not exist
fails the job (EvaluationError) and writes nothing: the results already there are kept.

One set that fails (a broken folder, too few samples) is recorded in its own result files
(status "failed", with the reason) and the others go on; a change upstream (UpstreamChanged)
fails the job.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Mapping

from clipscale import config as config_mod
from clipscale import files, models, paths, shaping
from clipscale.evaluate import benchmark
from clipscale.evaluate.benchmark import EvaluationError, UpstreamChanged
from clipscale.evaluate.checkpoints import check_checkpoint, checkpoint_info, stamp, table_row
from clipscale.evaluate.plan import Target, benchmark_name, dataset_dir, dataset_tasks, outputs_of

log = logging.getLogger("clipscale.evaluate")

RESULT_FORMAT = 2


def fingerprint(config: dict, target: Target, checkpoint_stamp: dict | None) -> dict:
    """What a result depends on: its settings and the checkpoint file it was computed from."""
    settings = shaping.evaluate(config, target.source, target.model, target.scale, target.dataset,
                                target.task)
    return {"settings": settings, "checkpoint": checkpoint_stamp}


def reusable(path: str | Path, expected: dict) -> bool:
    """A result file that exists, is readable, did not fail, and has this fingerprint."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(data, dict) and data.get("format") == RESULT_FORMAT
            and data.get("status") in ("ok", "partial") and data.get("fingerprint") == expected)


def set_settings(config: dict, dataset: str) -> benchmark.SetSettings:
    ev = config_mod.section(config, "evaluate")
    return benchmark.SetSettings(
        name=dataset, benchmark_name=benchmark_name(config, dataset), root=dataset_dir(config, dataset),
        batch_size=ev["batch_size"], workers=ev["workers"], recall_k=list(ev["recall_k"]),
        linear_probe_k=list(ev["linear_probe_k"]), linear_probe_epochs=ev["linear_probe_epochs"],
        linear_probe_lr=ev["linear_probe_lr"], seed=config.get("seed", 0))


def unused_imports(config: dict, checkpoint: Mapping[str, str], run_record: str | Path | None = None,
                   profile: str | Path | None = None) -> list[str]:
    """The optional packages the evaluation job of ``checkpoint`` never uses (``imports.unused``:
    its model's towers, its sets' builders), for the job's process to keep out. A checkpoint that
    cannot be described keeps all but those never used: evaluate_checkpoint reports the problem."""
    from clipscale.evaluate import imports

    try:
        model = checkpoint_info(config, checkpoint, run_record, profile).model
    except Exception:  # noqa: BLE001 (evaluate_checkpoint raises it with its own message)
        return list(imports.NEVER_USED)
    return imports.unused(config, model, [benchmark_name(config, d) for d, _ in dataset_tasks(config)])


def evaluate_checkpoint(config: dict, checkpoint: Mapping[str, str],
                        outputs: Mapping[tuple[str, str], str] | None = None, *,
                        run_record: str | Path | None = None, threads: int | None = None,
                        device: str | None = None, profile: str | Path | None = None) -> dict[tuple[str, str], dict]:
    """Evaluate one checkpoint (wildcards source, model, scale, samples, epoch) on every
    configured (set, task); write each result to ``outputs[(set, task)]`` (default: its place
    under results/). Returns (set, task) -> result (read back for the reused ones)."""
    import torch

    ev = config_mod.section(config, "evaluate")
    threads = threads or ev["threads"]
    torch.set_num_threads(threads)
    device = device or benchmark.resolve_device(ev["device"])
    amp = bool(ev["amp"]) and device == "cuda"
    outputs = dict(outputs or outputs_of(config, dict(checkpoint)))
    info = checkpoint_info(config, checkpoint, run_record, profile)
    t_job = time.time()
    if not Path(info.path).is_file():  # an error of the job, not a result: the results are kept
        raise EvaluationError(
            f"checkpoint {info.path} does not exist; no result is written (those there are kept). "
            + ("Re-running the workflow first trains its run again (it writes the checkpoint anew)"
               if checkpoint["source"] == "ours" else "Put the released checkpoint back"))
    problem = None
    try:
        meta = check_checkpoint(info.path)
        ckpt_stamp = stamp(info.path)
    except EvaluationError as e:
        problem, meta, ckpt_stamp = str(e), {}, None
    row = table_row(info)
    if checkpoint["source"] == "released" and isinstance(meta.get("epoch"), int):
        row["epoch"] = meta["epoch"]

    targets = {key: Target(**checkpoint, dataset=key[0], task=key[1]) for key in outputs}
    prints = {key: fingerprint(config, t, ckpt_stamp) for key, t in targets.items()}
    todo = [key for key in outputs if problem or not reusable(outputs[key], prints[key])]
    kept = [key for key in outputs if key not in todo]
    log.info("checkpoint %s (%s) on %s: %d evaluations to run, %d kept (unchanged settings and "
             "checkpoint)", targets[next(iter(outputs))].run_name if outputs else checkpoint, info.path,
             device, len(todo), len(kept))
    results: dict[tuple[str, str], dict] = {key: json.loads(Path(outputs[key]).read_text()) for key in kept}

    def record(key, res: benchmark.TaskResult | None, seconds: float, error: str | None = None) -> None:
        res = res or benchmark.TaskResult()
        if error:
            res.failures.append({"metric": "*", "error": error})
        status = "ok" if not res.failures else ("partial" if res.metrics else "failed")
        result = {
            "format": RESULT_FORMAT, "target": asdict(targets[key]), "row": row,
            "checkpoint_path": info.path, "checkpoint_extra": info.extra, "fingerprint": prints[key],
            "status": status, "metrics": res.metrics, "undefined": res.undefined, "failures": res.failures,
            "clip_benchmark": res.clip_benchmark, "device": device, "threads": threads,
            "versions": _versions(), "seconds": round(seconds, 3),
            "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        files.write_json(outputs[key], result)
        results[key] = result
        for f in res.failures:
            log.error("%s: %s: %s", targets[key].describe(), f["metric"], f["error"])
        log.info("%s: %s in %.1f s: %s", targets[key].describe(), status, seconds,
                 ", ".join(f"{k}={v:.2f}" for k, v in res.metrics.items()))

    if problem:
        for key in todo:
            record(key, None, 0.0, problem)
        return results
    if todo:
        benchmark.check_upstream()
        models.register(config)  # the config's custom model definitions, in this process
        t0 = time.time()
        model = benchmark.Model.load(info.model, info.path, device, amp)
        log.info("model %s loaded from %s in %.1f s", info.model, info.path, time.time() - t0)
        for dataset in dict.fromkeys(d for d, _ in todo):  # config order, each set once
            tasks = [t for d, t in todo if d == dataset]
            feature_root = Path(paths.fill(paths.EVAL_FEATURES, **checkpoint, dataset=dataset))
            t0 = time.time()
            try:
                done = benchmark.evaluate_set(model, set_settings(config, dataset), tasks, feature_root)
            except UpstreamChanged:
                raise
            except Exception as e:  # noqa: BLE001 - one set's failure is recorded, the others go on
                log.error("%s: %s", dataset, traceback.format_exc())
                for task in tasks:
                    record((dataset, task), None, time.time() - t0,
                           f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
                continue
            seconds = (time.time() - t0) / max(1, len(tasks))
            for task in tasks:
                record((dataset, task), done[task], seconds)
    log.info("checkpoint done in %.1f s", time.time() - t_job)
    return results


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for dist in ("clip_benchmark", "open_clip_torch", "torch", "webdataset", "clipscale"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out
