#!/usr/bin/env bash
# Bring up a private single-node Slurm "cluster" on this machine (Debian 12 packages, no systemd),
# idempotently: running it again leaves running daemons alone and starts only what is missing.
#
#   sudo bash scripts/slurm/start_slurm.sh              # munged + slurmctld + slurmd (no accounting)
#   sudo WITH_DBD=1 bash scripts/slurm/start_slurm.sh   # + mariadbd + slurmdbd (sacct works)
#   sudo bash scripts/slurm/stop_slurm.sh               # stop what this script started
#
# Environment:
#   SLURM_TEST_BASE       state dir (config, spool, logs, pid files); default $PWD/.slurm-test
#   WITH_DBD=1            also run mariadbd + slurmdbd (accounting; `sacct` works)
#   SLURM_TEST_PARTITION  name of the one (default) partition; default "debug"
#   SLURM_TEST_CPUS       CPUs the node advertises; default $(nproc)
#   SLURM_TEST_DEF_MEM_PER_CPU  DefMemPerCPU in MB (a job without --mem gets this per CPU); default 512
#   SLURM_TEST_GPUS       GPUs the node declares (gres gpu, stand-in devices: the same character
#                         device as /dev/null, which is all Slurm needs to schedule them; the jobs
#                         run on the CPU); default 4, 0 for none
#
# Exit status: 0 up; 2 not root; 3 the Debian packages are missing and cannot be installed;
# 1 any other failure (the tail of the daemon's log is printed).
#
# Pitfalls this handles (seen on these machines):
# - /etc/slurm/slurm.conf must be the real config: the snakemake jobstep plugin strips SLURM_CONF
#   from the job environment, so it is a symlink to $SLURM_TEST_BASE/etc/slurm.conf.
# - without slurmdbd `sacct` fails, and a snakemake run polling with sacct never ends: the
#   project's profile polls with squeue, and MinJobAge=600 keeps finished jobs visible to squeue
#   longer than the plugin's longest poll interval (180 s).
# - DefMemPerCPU is set, otherwise one job without --mem takes the whole node's memory.
# - munged runs as user munge; /run/munge is created by hand (no systemd).
set -euo pipefail

BASE=$(realpath -m "${SLURM_TEST_BASE:-$PWD/.slurm-test}")
WITH_DBD=${WITH_DBD:-0}
PARTITION=${SLURM_TEST_PARTITION:-debug}
NCPU=${SLURM_TEST_CPUS:-$(nproc)}
DEF_MEM_PER_CPU=${SLURM_TEST_DEF_MEM_PER_CPU:-512}

log() { echo "[start_slurm $(date +%T)] $*"; }
die() { local code=$1; shift; echo "[start_slurm] ERROR: $*" >&2; exit "$code"; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
waitfor() { local n=$1; shift; for _ in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done; return 1; }
show_log() { [ -f "$1" ] && { echo "---- tail $1" >&2; tail -n 30 "$1" >&2; }; return 0; }

[ "$(id -u)" = 0 ] || die 2 "must run as root (installs Debian packages, runs slurmctld/slurmd as root)"

# ---- 1. packages ------------------------------------------------------------------------------
PKGS="slurmctld slurmd slurm-client munge"
[ "$WITH_DBD" = 1 ] && PKGS="$PKGS slurmdbd mariadb-server"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  command -v apt-get >/dev/null || die 3 "packages missing:$missing, and there is no apt-get"
  log "installing:$missing"
  tmp_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then   # keep the packages' postinst from starting daemons
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; tmp_policy=1
  fi
  mkdir -p "$BASE/log"; rc=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends $missing; } >"$BASE/log/apt.log" 2>&1 || rc=$?
  [ "$tmp_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || { show_log "$BASE/log/apt.log"; die 3 "apt-get could not install:$missing (exit $rc)"; }
fi

# ---- 2. config ----------------------------------------------------------------------------------
NODE=$(hostname -s)
# RealMemory must not exceed what slurmd detects; leave 1 GB to the system
MEM=$(( $(awk '/^MemTotal:/{print int($2 / 1024)}' /proc/meminfo) - 1024 ))
mkdir -p "$BASE"/{etc,spool/ctld,spool/d,log,run}
if [ "$WITH_DBD" = 1 ]; then
  ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819"
else
  ACCT="AccountingStorageType=accounting_storage/none"
fi
# GPUs declared through gres: stand-in device files (c 1 3, as /dev/null) and a gres.conf beside
# slurm.conf (a node's gres needs a restart of the daemons, not `scontrol reconfigure`)
GPUS=${SLURM_TEST_GPUS:-4}
GRES=""
: > "$BASE/etc/gres.conf.new"
if [ "$GPUS" -gt 0 ]; then
  mkdir -p "$BASE/dev"
  for i in $(seq 0 $((GPUS - 1))); do
    [ -e "$BASE/dev/nvidia$i" ] || mknod "$BASE/dev/nvidia$i" c 1 3
  done
  GRES="Gres=gpu:$GPUS"
  echo "NodeName=$NODE Name=gpu File=$BASE/dev/nvidia[0-$((GPUS - 1))]" > "$BASE/etc/gres.conf.new"
fi
if ! cmp -s "$BASE/etc/gres.conf.new" "$BASE/etc/gres.conf" 2>/dev/null; then
  mv "$BASE/etc/gres.conf.new" "$BASE/etc/gres.conf"; gres_changed=1
else
  rm -f "$BASE/etc/gres.conf.new"; gres_changed=0
fi
if [ -e /etc/slurm/gres.conf ] && [ ! -L /etc/slurm/gres.conf ]; then
  mv /etc/slurm/gres.conf /etc/slurm/gres.conf.orig   # stop_slurm.sh puts it back
fi
ln -sfn "$BASE/etc/gres.conf" /etc/slurm/gres.conf
cat > "$BASE/etc/slurm.conf.new" <<EOF
# generated by scripts/slurm/start_slurm.sh -- a private single-node test cluster
ClusterName=clipscale
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$BASE/spool/ctld
SlurmdSpoolDir=$BASE/spool/d
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM_PER_CPU
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SlurmdParameters=config_overrides
$ACCT
# one line per finished job (state, exit code, times): accounting-free evidence of what ran
JobCompType=jobcomp/filetxt
JobCompLoc=$BASE/log/jobcomp.txt
# squeue-based status polling needs finished jobs to stay visible longer than snakemake's
# longest poll interval (180 s)
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
Waittime=0
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$NCPU Sockets=1 CoresPerSocket=$NCPU ThreadsPerCore=1 RealMemory=$MEM $GRES State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
conf_changed=0
if ! cmp -s "$BASE/etc/slurm.conf.new" "$BASE/etc/slurm.conf" 2>/dev/null; then
  mv "$BASE/etc/slurm.conf.new" "$BASE/etc/slurm.conf"; conf_changed=1
else
  rm -f "$BASE/etc/slurm.conf.new"
fi
mkdir -p /etc/slurm
if [ -e /etc/slurm/slurm.conf ] && [ ! -L /etc/slurm/slurm.conf ]; then
  mv /etc/slurm/slurm.conf /etc/slurm/slurm.conf.orig   # stop_slurm.sh puts it back
  log "moved the existing /etc/slurm/slurm.conf to /etc/slurm/slurm.conf.orig"
fi
ln -sfn "$BASE/etc/slurm.conf" /etc/slurm/slurm.conf

# ---- 3. munge -----------------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --force; chown munge:munge /etc/munge/munge.key; chmod 600 /etc/munge/munge.key
fi
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge; chmod 755 /run/munge
if alive "$BASE/run/munged.pid"; then
  :
elif sh -c 'munge -n | unmunge' >/dev/null 2>&1; then
  log "a munged not started by this script is running; using it (stop_slurm.sh leaves it alone)"
else
  runuser -u munge -- /usr/sbin/munged --force
  waitfor 20 test -s /run/munge/munged.pid || die 1 "munged did not start"
  cp /run/munge/munged.pid "$BASE/run/munged.pid"
  log "munged pid $(cat "$BASE/run/munged.pid")"
fi
waitfor 20 sh -c 'munge -n | unmunge' || die 1 "munge does not work (munge -n | unmunge fails)"

# ---- 4. optional accounting: mariadbd + slurmdbd -------------------------------------------------
if [ "$WITH_DBD" = 1 ]; then
  DB=$BASE/mysql; DBRUN=$BASE/mysql-run
  mkdir -p "$DB" "$DBRUN"; chown mysql:mysql "$DB" "$DBRUN"
  if [ ! -d "$DB/mysql" ]; then
    mariadb-install-db --user=mysql --datadir="$DB" --skip-test-db >"$BASE/log/mariadb-install.log" 2>&1 \
      || { show_log "$BASE/log/mariadb-install.log"; die 1 "mariadb-install-db failed"; }
  fi
  if ! alive "$BASE/run/mariadbd.pid"; then
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DB" --socket="$DBRUN/mysqld.sock" \
      --pid-file="$DBRUN/mariadbd.pid" --bind-address=127.0.0.1 --port=3306 \
      --log-error="$BASE/log/mariadb.err" --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 \
      </dev/null >/dev/null 2>&1 &
    { waitfor 60 test -S "$DBRUN/mysqld.sock" && waitfor 20 test -s "$DBRUN/mariadbd.pid"; } \
      || { show_log "$BASE/log/mariadb.err"; die 1 "mariadbd did not start"; }
    cp "$DBRUN/mariadbd.pid" "$BASE/run/mariadbd.pid"
    log "mariadbd pid $(cat "$BASE/run/mariadbd.pid")"
  fi
  mariadb -S "$DBRUN/mysqld.sock" -u root -e "
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
  cat > "$BASE/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=$BASE/run/slurmdbd.pid
LogFile=$BASE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$BASE/etc/slurmdbd.conf"   # slurmdbd refuses a world-readable file
  if [ -e /etc/slurm/slurmdbd.conf ] && [ ! -L /etc/slurm/slurmdbd.conf ]; then
    mv /etc/slurm/slurmdbd.conf /etc/slurm/slurmdbd.conf.orig
  fi
  ln -sfn "$BASE/etc/slurmdbd.conf" /etc/slurm/slurmdbd.conf
  if ! alive "$BASE/run/slurmdbd.pid"; then
    /usr/sbin/slurmdbd
    waitfor 60 sacctmgr -n list cluster || { show_log "$BASE/log/slurmdbd.log"; die 1 "slurmdbd did not start"; }
    log "slurmdbd pid $(cat "$BASE/run/slurmdbd.pid")"
  fi
  sacctmgr -n -P list cluster format=cluster | grep -qx clipscale || sacctmgr -i add cluster clipscale >/dev/null
fi

# ---- 5. slurmctld + slurmd ----------------------------------------------------------------------
stop_pid() {  # stop the daemon of a pid file of ours, wait for it
  local f=$1 pid; alive "$f" || return 0; pid=$(cat "$f"); kill -TERM "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"; rm -f "$f"
}
[ "$gres_changed" = 1 ] && conf_changed=1
if [ "$conf_changed" = 1 ] && { alive "$BASE/run/slurmctld.pid" || alive "$BASE/run/slurmd.pid"; }; then
  # some parameters (AccountingStorageType, SelectType, node definitions) need a restart, not
  # `scontrol reconfigure`; queued jobs survive it (state is saved in StateSaveLocation)
  log "slurm.conf changed: restarting slurmd and slurmctld"
  stop_pid "$BASE/run/slurmd.pid"; stop_pid "$BASE/run/slurmctld.pid"
fi
if ! alive "$BASE/run/slurmctld.pid"; then
  if scontrol ping 2>/dev/null | grep -q 'is UP'; then
    die 1 "a slurmctld not started from $BASE answers 'scontrol ping'; stop it first"
  fi
  /usr/sbin/slurmctld || { show_log "$BASE/log/slurmctld.log"; die 1 "slurmctld failed to start"; }
  waitfor 60 scontrol ping || { show_log "$BASE/log/slurmctld.log"; die 1 "slurmctld does not answer"; }
  log "slurmctld pid $(cat "$BASE/run/slurmctld.pid")"
fi
if ! alive "$BASE/run/slurmd.pid"; then
  /usr/sbin/slurmd -N "$NODE" || { show_log "$BASE/log/slurmd.log"; die 1 "slurmd failed to start"; }
  waitfor 20 test -s "$BASE/run/slurmd.pid" || { show_log "$BASE/log/slurmd.log"; die 1 "slurmd did not start"; }
  log "slurmd pid $(cat "$BASE/run/slurmd.pid")"
fi
node_ok() { sinfo -h -n "$NODE" -o %T | grep -Eq '^(idle|mixed|allocated|completing)'; }
if ! waitfor 60 node_ok; then
  scontrol update nodename="$NODE" state=resume || true
  waitfor 20 node_ok || { sinfo -R >&2; show_log "$BASE/log/slurmd.log"; die 1 "node $NODE is not usable"; }
fi
sinfo
log "slurm is up (base $BASE, WITH_DBD=$WITH_DBD)"
