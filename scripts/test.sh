#!/usr/bin/env bash
# The test command: set up (if needed), then the whole suite: unit tests, the DAG on a reduced
# embedded default, and the Slurm profile against a real Slurm started by the tests (root only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
# Two test processes by default (pytest-xdist; CLIPSCALE_TEST_WORKERS=0 runs the suite in this
# one): the Slurm tests, in one process, wait on the scheduler and on walltimes much of the time.
workers=${CLIPSCALE_TEST_WORKERS:-2}
if [ "$workers" != 0 ]; then
  set -- -n "$workers" --dist loadfile "$@"
fi
# the suite's folders (pipelines, checkpoints) take up to about 0.8 GB at a time, besides .venv
df -h "${TMPDIR:-/tmp}" . | awk 'NR==1 || !seen[$0]++' >&2
exec .venv/bin/python -m pytest "$@"
