#!/usr/bin/env bash
# Stop the private Slurm started by start_slurm.sh: cancel leftover jobs, then stop the daemons
# listed in the pid files under $SLURM_TEST_BASE/run (and only those), and put back an
# /etc/slurm/slurm.conf that start_slurm.sh had moved aside. Idempotent; exit 0 when nothing runs.
#   sudo bash scripts/slurm/stop_slurm.sh
set -uo pipefail
BASE=$(realpath -m "${SLURM_TEST_BASE:-$PWD/.slurm-test}")
log() { echo "[stop_slurm $(date +%T)] $*"; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# cancel leftover jobs of this private cluster so that no slurmstepd / job processes survive
if alive "$BASE/run/slurmctld.pid"; then
  ids=$(squeue -h -o %i 2>/dev/null || true)
  if [ -n "$ids" ]; then
    log "cancelling leftover jobs: $(echo $ids)"
    scancel $ids 2>/dev/null || true
    for _ in $(seq 1 30); do [ -z "$(squeue -h -t running,completing -o %i 2>/dev/null)" ] && break; sleep 0.5; done
  fi
fi

# the daemon a pid file names must still be that program (guard against a recycled pid)
expected_comm() { case "$1" in munged) echo munged;; mariadbd) echo mariadbd;; *) echo "$1";; esac; }
status=0
for d in slurmd slurmctld slurmdbd mariadbd munged; do
  f=$BASE/run/$d.pid
  [ -s "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    if [ "$comm" != "$(expected_comm "$d")" ]; then
      log "pid $pid in $f is now '$comm', not $d: left alone"
    else
      kill -TERM "$pid"
      for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      if kill -0 "$pid" 2>/dev/null; then
        log "$d ($pid) did not stop on SIGTERM: SIGKILL"; kill -KILL "$pid" || status=1
      fi
      log "stopped $d ($pid)"
    fi
  fi
  rm -f "$f"
done

# put back configs that start_slurm.sh moved aside
for c in slurm.conf slurmdbd.conf gres.conf; do
  if [ -L "/etc/slurm/$c" ] && [ "$(readlink "/etc/slurm/$c")" = "$BASE/etc/$c" ]; then
    rm -f "/etc/slurm/$c"
    [ -e "/etc/slurm/$c.orig" ] && mv "/etc/slurm/$c.orig" "/etc/slurm/$c"
  fi
done
exit $status
