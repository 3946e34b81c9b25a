"""The whole study (``study``) and its text (``render``)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from clipscale import grid
from clipscale.status.outputs import evaluations, finetune_jobs, outputs
from clipscale.status.queue import snakemake_incomplete, snakemake_locked, squeue_jobs
from clipscale.status.runs import STATES, run_status


# ---------------------------------------------------------------------------------------------
# the whole study


def study(config: dict, directory: str | Path = ".", slurm: bool = True) -> dict:
    """Everything ``clipscale status`` shows, as plain data (its --json). Paths are relative to
    the study's working directory, which must be the current one."""
    jobs = squeue_jobs(directory) if slurm else None
    runs = [run_status(config, run, jobs) for run in grid.runs(config)]
    counts = {s: sum(r.state == s for r in runs) for s in STATES if any(r.state == s for r in runs)}
    locked, incomplete = snakemake_locked(directory), snakemake_incomplete(directory)
    evals = evaluations(config, jobs, incomplete, locked)
    return {
        "directory": str(Path(directory).resolve()),
        "time": datetime.now().astimezone().isoformat(timespec="seconds"),
        "snakemake_lock": locked,
        "snakemake_incomplete": sorted(incomplete),
        "slurm": None if jobs is None else [asdict(j) for j in jobs],
        "runs": [asdict(r) | {"progress": r.progress} for r in runs],
        "counts": counts,
        "evaluations": [asdict(e) for e in evals],
        "evaluations_done": sum(e.done for e in evals),
        "evaluations_total": sum(e.total for e in evals),
        "finetune": [asdict(f) for f in finetune_jobs(config, jobs)],
        "outputs": [asdict(o) for o in outputs(config)],
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 3 * 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds / 86400:.1f} d"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]


def render(data: dict) -> str:
    """The status as text: the runs' table, then notes, evaluations, fine-tuning and outputs."""
    lines = []
    counts = ", ".join(f"{n} {s}" for s, n in data["counts"].items())
    slurm = ("squeue: no job of this study" if data["slurm"] == [] else
             f"squeue: {len(data['slurm'])} jobs of this study" if data["slurm"] else
             "no Slurm here: live jobs from owner.json")
    lock = ("a Snakemake holds it (or a killed one left its lock)" if data["snakemake_lock"]
            else "no Snakemake holds it")
    lines.append(f"{data['directory']} at {data['time']}: {len(data['runs'])} runs ({counts}); {lock}; {slurm}")
    lines.append("")
    rows = []
    for r in data["runs"]:
        rows.append([r["run"], r["state"], r["progress"],
                     f"{r['samples_per_s']:g}/s" if r["samples_per_s"] else "",
                     _duration(r["eta_s"]), str(r["windows"] or ""),
                     f"{r['last_loss']:.4f}" if r["last_loss"] is not None else ""])
    lines += _table(["run", "state", "progress", "samples", "ETA", "windows", "loss"], rows)
    notes = [r for r in data["runs"] if r["detail"] and r["state"] != "done"]
    if notes:
        lines.append("")
        lines += [f"  {r['run']}: {r['detail']}" for r in notes]
    lines.append("")
    evals = data["evaluations"]
    lines.append(f"evaluations: {data['evaluations_done']} of {data['evaluations_total']} results, "
                 f"{sum(e['state'] == 'complete' for e in evals)} of {len(evals)} checkpoints complete")
    waiting = [e for e in evals if e["state"] == "waiting for training"]
    for e in evals:
        if e["state"] not in ("complete", "waiting for training"):
            what = ", ".join(e["missing"]) if len(e["missing"]) <= 4 else f"{len(e['missing'])} sets/tasks"
            extra = f" (see {e['log']})" if e["state"].startswith("failed") else ""
            lines.append(f"  {e['checkpoint']}: {e['done']}/{e['total']}, {e['state']}{extra}; missing {what}")
    if waiting:
        lines.append(f"  {len(waiting)} checkpoints wait for their training")
    if data["finetune"]:
        ft = data["finetune"]
        lines.append(f"fine-tuning: {sum(f['state'] == 'done' for f in ft)} of {len(ft)} jobs done")
        for f in ft:
            if f["state"] != "done":
                lines.append(f"  {f['job']}: {f['state']}" + (f" ({f['detail']})" if f["detail"] else ""))
    lines.append("outputs:")
    for o in data["outputs"]:
        lines.append(f"  {o['output']}: {o['state']}" + (f" ({o['detail']})" if o["detail"] else ""))
    return "\n".join(lines)
