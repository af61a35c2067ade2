#!/usr/bin/env bash
# A real single-node SLURM cluster on localhost, with accounting (slurmdbd + MariaDB, so sacct works),
# for development and tests. No systemd: daemons are started and stopped by pidfile.
#   bash slurm/local-cluster.sh up       install what is missing, configure, start (idempotent)
#   bash slurm/local-cluster.sh stop     cancel all jobs, stop every daemon (idempotent)
#   bash slurm/local-cluster.sh status   exit 0 when the node is up, 3 otherwise
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
CONF=/etc/slurm
LOGS=/var/log/slurm
DB_PASS=pdiff-local
PIDFILES=(/run/slurmd.pid /run/slurmctld.pid /run/slurmdbd.pid /run/mysqld/mysqld.pid /run/munge/munged.pid)

say() { printf '[local-cluster] %s\n' "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }

alive() {  # alive PIDFILE: the pid in it is a running, non-zombie process
  local pid
  [[ -s $1 ]] || return 1
  pid=$(<"$1")
  [[ -d /proc/$pid ]] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null
}

wait_for() {  # wait_for SECONDS DESCRIPTION LOG COMMAND...: poll until COMMAND succeeds
  local seconds=$1 what=$2 log=$3; shift 3
  for ((i = 0; i < seconds * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  [[ -f $log ]] && tail -n 20 "$log" >&2
  die "$what did not come up within ${seconds}s (log: $log)"
}

install_packages() {
  local missing=()
  for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
  done
  ((${#missing[@]} == 0)) && return 0
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
}

write_config() {
  mkdir -p "$CONF" "$LOGS" /var/spool/slurmctld /var/spool/slurmd
  chown slurm:slurm "$LOGS" /var/spool/slurmctld
  # The node line is slurmd's own view of the hardware (a partial line makes slurmctld complain).
  local node
  node=$(slurmd -C | head -n 1 | sed -E 's/^NodeName=[^ ]+/NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost/')
  cat >"$CONF/slurm.conf" <<EOF
ClusterName=pdiff
SlurmctldHost=localhost
SlurmUser=slurm
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
AuthType=auth/munge
# Credentials expire fast so a requeued job restarts in seconds, not minutes.
AuthInfo=cred_expire=5
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without it a job that asks for no memory takes the whole node.
DefMemPerCPU=1024
# Start array tasks at once and schedule every 2 s (defaults: 3 s steps, passes every 60 s).
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=5
# submitit ignores SIGTERM; do not wait 30 s before SIGKILL.
KillWait=10
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
MaxArraySize=1001
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
$node
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$CONF/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=slurm
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
PidFile=/run/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
EOF
  chown slurm:slurm "$CONF/slurmdbd.conf"
  chmod 600 "$CONF/slurmdbd.conf"
}

start_munge() {
  alive /run/munge/munged.pid && return 0
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
  [[ -s /etc/munge/munge.key ]] || { mungekey --create >/dev/null 2>&1 || create-munge-key -f >/dev/null; }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged
  wait_for 15 munged /var/log/munge/munged.log munge -n
}

start_mariadb() {
  if ! alive /run/mysqld/mysqld.pid; then
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql >/dev/null 2>&1
    rm -f /run/mysqld/mysqld.pid
    setsid mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file=/run/mysqld/mysqld.pid \
      >>"$LOGS/mariadb.log" 2>&1 </dev/null &
    wait_for 30 MariaDB "$LOGS/mariadb.log" mariadb-admin ping
  fi
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

port_open() { (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }
node_ready() { sinfo -h -n localhost -o %t | grep -qE '^(idle|mix|alloc)'; }

start_slurm() {
  if ! alive /run/slurmdbd.pid; then
    rm -f /run/slurmdbd.pid
    /usr/sbin/slurmdbd
    wait_for 30 slurmdbd "$LOGS/slurmdbd.log" port_open 6819
  fi
  if ! alive /run/slurmctld.pid; then
    rm -f /run/slurmctld.pid
    /usr/sbin/slurmctld
    wait_for 30 slurmctld "$LOGS/slurmctld.log" bash -c 'scontrol ping | grep -q UP'
  fi
  if ! alive /run/slurmd.pid; then
    rm -f /run/slurmd.pid
    /usr/sbin/slurmd -N localhost
  fi
  # A node left DOWN or DRAINED by an earlier, unclean stop is put back in service.
  sleep 0.5
  if sinfo -h -n localhost -o %t | grep -qE 'down|drain'; then
    scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true
  fi
  wait_for 60 "node localhost" "$LOGS/slurmd.log" node_ready
}

up() {
  local started=$SECONDS
  if status >/dev/null 2>&1; then
    say "already up"
    return 0
  fi
  install_packages
  write_config
  start_munge
  start_mariadb
  start_slurm
  say "up in $((SECONDS - started))s: partition debug, $(sinfo -h -o %c) CPUs, MaxArraySize 1001"
}

stop_pidfile() {  # stop_pidfile PIDFILE: SIGTERM, wait (zombies linger ~2 s), SIGKILL if needed
  local pidfile=$1 pid
  if alive "$pidfile"; then
    pid=$(<"$pidfile")
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 75; i++)); do alive "$pidfile" || break; sleep 0.2; done
    alive "$pidfile" && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"  # a stale /run/slurmctld.pid breaks a later apt purge
}

stop() {
  if alive /run/slurmctld.pid; then
    # Job processes outlive the daemons otherwise.
    scancel --full --quiet $(squeue -h -o %i 2>/dev/null) 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do [[ -z $(squeue -h 2>/dev/null) ]] && break; sleep 0.2; done
  fi
  for pidfile in "${PIDFILES[@]}"; do stop_pidfile "$pidfile"; done
  say "stopped"
}

status() {
  local ok=0 names=(slurmd slurmctld slurmdbd mariadb munged)
  for i in "${!PIDFILES[@]}"; do
    if alive "${PIDFILES[$i]}"; then
      printf '%-10s running (pid %s)\n' "${names[$i]}" "$(<"${PIDFILES[$i]}")"
    else
      printf '%-10s stopped\n' "${names[$i]}"
      ok=3
    fi
  done
  if ((ok == 0)); then
    sinfo || ok=3
    node_ready || ok=3
  fi
  return $ok
}

case "${1:-}" in
  up) up ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: bash slurm/local-cluster.sh up|stop|status" >&2; exit 2 ;;
esac
