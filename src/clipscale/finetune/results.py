"""The fine-tuning table: the rows of the fine-tuning jobs' result files (the results table's
columns, tasks ``finetune`` and ``patching``, with the group means) and its log of what is not in
it (failed, missing, unreadable jobs; samples that did not decode). Its own table, made by its own
rule (aggregate_finetune), so that the results table, our fits and our figures never wait on a
fine-tuning job; the fine-tuning figures read both tables."""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path
from typing import Iterable

from clipscale import files as files_mod
from clipscale import paths

log = logging.getLogger("clipscale.finetune")


def write_failure(output: str | Path, model: str, scale: str, samples: str, protocol: str, error: str) -> dict:
    """The result file of a job that failed: its reason, no rows."""
    result = {"format": 1, "status": "failed", "protocol": protocol,
              "target": {"model": model, "scale": scale, "samples": samples, "protocol": protocol},
              "error": error, "rows": [], "finished": datetime.datetime.now().isoformat(timespec="seconds")}
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    files_mod.write_json(output, result)
    log.error("%s/%s/%s %s: fine-tuning failed: %s; its result %s records why (delete it to try again)",
              model, scale, samples, protocol, error, output)
    return result


def _describe(path: Path, data: dict | None = None) -> str:
    t = (data or {}).get("target")
    if t:
        return f"{t['model']}/{t['scale']}/{t['samples']} {t['protocol']}"
    parts = path.parts
    return " ".join(["/".join(parts[-5:-2]), parts[-2]]) if len(parts) >= 5 else str(path)


def result_rows(result_files: Iterable[str | Path]) -> tuple[list[dict], list[str], dict[str, int]]:
    """Rows of the fine-tuning table from result files, log lines for the jobs that add nothing
    (failed, missing, unreadable) and for skipped samples, and the counts of each."""
    from clipscale.table import RESULTS_COLUMNS

    rows, lines = [], []
    counts = dict.fromkeys(("ok", "failed", "missing", "unreadable"), 0)
    for path in result_files:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            if data.get("status", "ok") == "failed":
                counts["failed"] += 1
                lines.append(f"FAILED     fine-tuning {_describe(path, data)}: {data.get('error')}  ({path})")
                continue
            base, items = data["row"], data["rows"]
        except FileNotFoundError:
            counts["missing"] += 1
            lines.append(f"MISSING    fine-tuning {_describe(path)}: {path} does not exist (see "
                         f"{paths.LOGS}/finetune/)")
            continue
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            counts["unreadable"] += 1
            lines.append(f"UNREADABLE fine-tuning {_describe(path)}: {path}: {e}")
            continue
        counts["ok"] += 1
        for item in items:
            rows.append({**{k: base.get(k) for k in RESULTS_COLUMNS if k in base},
                         "data_size": base.get("data_size"), **item})
        sk = data.get("skipped", {})
        if sk.get("train") or sk.get("test"):
            lines.append(f"SKIPPED    fine-tuning {_describe(path, data)}: {sk.get('train', 0)} training and "
                         f"{sk.get('test', 0)} test samples did not decode "
                         f"({'; '.join(sk.get('examples', [])[:2])})  ({path})")
    return rows, lines, counts


def build_table(config: dict, result_files: Iterable[str | Path]):
    """The fine-tuning table (the results table's columns, with the group means), its log lines
    and counts."""
    import pandas as pd

    from clipscale import table

    rows, lines, counts = result_rows(result_files)
    if rows:
        df = table.validate_table(table.complete(pd.DataFrame(rows)), where="(fine-tuning results)")
        df = table.add_group_means(df, table.groups_of(config))
    else:
        df = table.validate_table(table.empty_table(), where="(no fine-tuning results)")
    return df, lines, counts


def aggregate(config: dict, result_files: Iterable[str | Path], out_table: str | Path = paths.FINETUNE_TABLE,
              out_csv: str | Path = paths.FINETUNE_CSV, out_log: str | Path = paths.FINETUNE_LOG):
    """Write the fine-tuning table (parquet and CSV) and its log; never stops on a failed or
    missing job."""
    from clipscale import table

    result_files = [str(f) for f in result_files]
    df, lines, counts = build_table(config, result_files)
    table.write_table(df, out_table)
    table.write_table(df, out_csv)
    header = [
        f"# clipscale fine-tuning log: what is and is not in {out_table} "
        f"({datetime.datetime.now():%Y-%m-%d %H:%M})",
        f"# fine-tuning jobs expected: {len(result_files)}; " + ", ".join(f"{k}: {v}" for k, v in counts.items()),
        f"# rows: {len(df)}",
        "# A FAILED job's result file records why; delete it and re-run the workflow to retry (it resumes",
        "# from its state.pt). MISSING: no result file; SKIPPED: samples that did not decode.",
    ]
    Path(out_log).parent.mkdir(parents=True, exist_ok=True)
    Path(out_log).write_text("\n".join(header + (lines or ["(every expected fine-tuning job is in the table)"])) + "\n")
    problems = counts["failed"] + counts["missing"] + counts["unreadable"]
    (log.warning if problems else log.info)("fine-tuning table %s: %d rows from %d jobs (%s); see %s", out_table,
                                            len(df), len(result_files),
                                            ", ".join(f"{k} {v}" for k, v in counts.items()), out_log)
    return df
