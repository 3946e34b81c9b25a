#!/usr/bin/env bash
# The test command: set up (if needed), then the whole suite: unit tests, the DAG on a reduced
# embedded default, and the Slurm profile against a real Slurm started by the tests (root only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m pytest "$@"
