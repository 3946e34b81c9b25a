#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtual environment in .venv with the tested versions
# (requirements.txt) and clipscale itself. Idempotent: a second run only checks.
# Needs Python 3.11 and a package index (PyPI or a local mirror); no model hubs, no datasets.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), "clipscale needs Python 3.11, found %s" % sys.version.split()[0]'
stamp=.venv/.clipscale-installed
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c 'import clipscale, open_clip, clip_benchmark, snakemake' 2>/dev/null; then
  echo "[setup] .venv is up to date"
  exit 0
fi
echo "[setup] creating .venv with $("$PY" --version)"
"$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "WARNING: Location" || true
echo "[setup] installing requirements.txt (torch is large: a few minutes)"
.venv/bin/python -m pip install -q -r requirements.txt 2>&1 | grep -v "WARNING: Location" || true
.venv/bin/python -m pip install -q --no-deps -e . 2>&1 | grep -v "WARNING: Location" || true
.venv/bin/python -c 'import clipscale, open_clip, clip_benchmark, snakemake, torch; print("[setup] ok: torch", torch.__version__, "open_clip", open_clip.__version__)'
echo "$want" > "$stamp"
