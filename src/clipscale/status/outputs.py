"""The state of what follows training: evaluations, fine-tuning jobs, the study's other outputs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from clipscale import grid, ownership, paths
from clipscale.status.queue import SLURM_ACTIVE, SlurmJob, plugin_comment
from clipscale.status.traces import _mtime, last_error


# ---------------------------------------------------------------------------------------------
# evaluations, fine-tuning, and what is made from them


@dataclass
class CheckpointEvals:
    checkpoint: str
    done: int
    total: int
    missing: list[str] = field(default_factory=list)
    state: str = ""  # complete | ready | waiting for training | running | failed
    log: str | None = None


def evaluations(config: dict, jobs: list[SlurmJob] | None = None, incomplete: set[str] = frozenset(),
                locked: bool = False) -> list[CheckpointEvals]:
    """Evaluation results done and missing per checkpoint, and the state of its job: running
    (a Slurm job, or Snakemake's incomplete mark while it holds the directory), incomplete (that
    mark left by a Snakemake that stopped), failed (its log's last error, newer than the
    checkpoint's record), ready, waiting for training."""
    from clipscale.evaluate import plan

    out = []
    comments = {j.comment: j for j in jobs or []}
    for ckpt in plan.checkpoint_wildcards(config):
        outputs = plan.outputs_of(config, ckpt)
        missing = [f"{d}/{t}" for (d, t), p in outputs.items() if not os.path.exists(p)]
        name = f"{ckpt['source']} {ckpt['model']}/{ckpt['scale']}/{ckpt['samples']} epoch {ckpt['epoch']}"
        log = paths.log_file("evaluate", ckpt["source"], ckpt["model"], ckpt["scale"], ckpt["samples"],
                             f"epoch_{ckpt['epoch']}")
        e = CheckpointEvals(name, len(outputs) - len(missing), len(outputs), missing, log=log)
        job = comments.get(plugin_comment("evaluate", *(ckpt[k] for k in plan.CHECKPOINT_WILDCARDS)))
        if not missing:
            e.state = "complete"
        elif job is not None:
            e.state = "running" if job.state in SLURM_ACTIVE else "queued"
        elif incomplete.intersection(outputs.values()):
            e.state = "running" if locked else "incomplete (its Snakemake stopped while it ran)"
        elif ckpt["source"] == "ours":
            run = grid.Run.from_wildcards(ckpt["model"], ckpt["scale"], ckpt["samples"])
            path = Path(paths.fill(paths.RUN_CHECKPOINTS, **run.wildcards)) / f"epoch_{ckpt['epoch']}.pt"
            record = plan.record_of(config, run, int(ckpt["epoch"]))
            if not (path.exists() and os.path.exists(record)):
                e.state = "waiting for training"
            else:
                error = last_error(log)
                e.state = f"failed: {error}" if error and (_mtime(log) or 0) > (_mtime(record) or 0) else "ready"
        else:
            error = last_error(log)
            e.state = f"failed: {error}" if error else "ready"
        out.append(e)
    return out


@dataclass
class FinetuneStatus:
    job: str
    state: str
    detail: str = ""
    log: str | None = None


def finetune_jobs(config: dict, jobs: list[SlurmJob] | None = None) -> list[FinetuneStatus]:
    from clipscale.finetune import plan as ft_plan

    if not ft_plan.enabled(config):
        return []
    comments = {j.comment: j for j in jobs or []}
    out = []
    for run in ft_plan.runs(config):
        for protocol in ft_plan.section(config)["protocols"]:
            folder = Path(paths.fill(paths.FINETUNE_DIR, **run.wildcards, protocol=protocol))
            log = paths.log_file("finetune", run.model, run.scale, run.samples_key, protocol)
            st = FinetuneStatus(f"{run.name} {protocol}", "pending", log=log)
            job = comments.get(plugin_comment("finetune", run.model, run.scale, run.samples_key, protocol))
            owner = ownership.read_owner(folder)
            if (folder / "result.json").exists() or Path(ft_plan.result_path(run, protocol)).exists():
                st.state = "done"
            elif job is not None:
                st.state = "running" if job.state in SLURM_ACTIVE else "queued"
                st.detail = f"Slurm job {job.job_id} {job.state}"
            elif owner is not None and ownership.is_live(owner)[0]:
                st.state, st.detail = "running", ownership.is_live(owner)[1]
            elif not Path(paths.fill(paths.RUN_DONE, **run.wildcards)).exists():
                st.state = "waiting for training"
            else:
                error = last_error(log)
                if error:
                    st.state, st.detail = "failed", f"{error} (see {log})"
                elif (folder / "state.pt").exists():
                    st.state, st.detail = "interrupted", f"resumes from {folder / 'state.pt'}"
                else:
                    st.state = "ready"
            out.append(st)
    return out


@dataclass
class OutputStatus:
    output: str
    state: str  # up to date | older than its inputs | missing | not made yet
    detail: str = ""


def _against(output: str, inputs: list[str], what: str, log: str | None = None) -> OutputStatus:
    there = [(p, _mtime(p)) for p in inputs]
    present = [(p, t) for p, t in there if t is not None]
    t_out = _mtime(output)
    if log and (_mtime(log) or 0) > (t_out or 0):  # its job ran after the output was made
        error = last_error(log)
        if error:
            return OutputStatus(output, "failed", f"{error} (see {log})")
    if t_out is None:
        return OutputStatus(output, "missing", f"{len(present)} of its {len(inputs)} {what} there")
    newer = sorted((p for p, t in present if t > t_out), key=lambda p: -(_mtime(p) or 0))
    absent = len(inputs) - len(present)
    if newer:
        return OutputStatus(output, "outdated", f"older than {len(newer)} of its {len(inputs)} {what} "
                            f"(newest {newer[0]})" + (f"; {absent} missing" if absent else ""))
    if absent:
        return OutputStatus(output, "incomplete", f"{absent} of its {len(inputs)} {what} not made yet")
    return OutputStatus(output, "up to date")


def outputs(config: dict) -> list[OutputStatus]:
    """The results table (and the fine-tuning table), the fits of our results and the figures,
    each against the files it is made from (file times: older than one of them means a re-run of
    the workflow remakes it)."""
    from clipscale.evaluate import plan
    from clipscale.finetune import plan as ft_plan

    out = [_against(paths.RESULTS_TABLE, plan.target_paths(config), "evaluation results",
                    paths.log_file("aggregate_results", "results"))]
    if ft_plan.enabled(config):
        out.append(_against(paths.FINETUNE_TABLE, ft_plan.target_paths(config), "fine-tuning results",
                            paths.log_file("aggregate_finetune", "finetune")))
    fit_of = {"ours": paths.RESULTS_TABLE, "published": paths.PUBLISHED_TABLE}
    inputs = ["ours"] + (["published"] if config.get("published", {}).get("enabled", True) else [])
    for name in inputs:
        out.append(_against(paths.fill(paths.FIT_INPUT_COEFFICIENTS, input=name), [fit_of[name]], "tables",
                            paths.log_file("fit", name)))
    try:
        from clipscale import figures
    except ImportError:  # pragma: no cover - matplotlib missing: figures are not made either
        return out
    tables = {"published": paths.PUBLISHED_TABLE, "ours": paths.RESULTS_TABLE}
    for spec in figures.figure_specs(config):
        if spec.kind == "overlap":
            made_from = [paths.OVERLAP_TABLE] if "ours" in spec.inputs else []
        else:
            made_from = [tables[n] for n in spec.inputs if n in tables]
            if spec.kind == "compute" and spec.fit:
                made_from += [paths.fill(paths.FIT_INPUT_COEFFICIENTS, input=n) for n in spec.inputs]
        if not made_from:
            continue
        out.append(_against(paths.fill(paths.FIGURE, figure=spec.name, ext="pdf"), made_from, "inputs",
                            paths.log_file("figures", spec.name)))
    return out
