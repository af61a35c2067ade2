#!/usr/bin/env bash
# A real single-node SLURM cluster on localhost, with accounting (slurmdbd + MariaDB, so sacct works),
# for development and tests. No systemd here: daemons are started by hand and stopped by pidfile.
#   bash slurm/local-cluster.sh up       install what is missing, configure, start (idempotent)
#   bash slurm/local-cluster.sh stop     cancel all jobs, stop every daemon (idempotent)
#   bash slurm/local-cluster.sh status   print daemon states and sinfo; exit 0 when fully up, 3 otherwise
set -eEuo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common-settings.sh"

PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
CONF=/etc/slurm
LOGS=/var/log/slurm
APT_LOG=/var/log/pdiff-local-cluster-apt.log
DB_PASS=pdiff-local
# Daemons in start order: name (as in /proc/PID/comm) and pidfile.
NAMES=(munged mariadbd slurmdbd slurmctld slurmd)
declare -A PIDFILE=(
  [munged]=/run/munge/munged.pid
  [mariadbd]=/run/mysqld/mysqld.pid
  [slurmdbd]=/run/slurmdbd.pid
  [slurmctld]=/run/slurmctld.pid
  [slurmd]=/run/slurmd.pid
)
# Who owns each log: a daemon that drops privileges must still be able to write (and reopen) it,
# and munged refuses a log file that is not its own ("Logfile is insecure").
declare -A LOG_OWNER=([munged]=munge [mariadbd]=root [slurmdbd]=slurm [slurmctld]=slurm [slurmd]=root)
declare -A PORT=([mariadbd]=3306 [slurmdbd]=6819 [slurmctld]=6817 [slurmd]=6818)
declare -A LOG=(
  [munged]=/var/log/munge/munged.log
  [mariadbd]=$LOGS/mariadb.log
  [slurmdbd]=$LOGS/slurmdbd.log
  [slurmctld]=$LOGS/slurmctld.log
  [slurmd]=$LOGS/slurmd.log
)

say() { printf '[local-cluster] %s\n' "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }
# Any other failure is one line too: the command, its status and the logs to read (set -E: inside functions too).
trap 'die "\`$BASH_COMMAND\` failed (exit $?, line $LINENO); logs: $LOGS/*.log, /var/log/munge/munged.log"' ERR

alive() {  # alive NAME: its pidfile names a live (not zombie) process that really is NAME
  local file=${PIDFILE[$1]} pid
  [[ -s $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ && -d /proc/$pid ]] || return 1
  # After a restart the pid may belong to something else; stopped daemons linger as zombies ~2 s.
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] || return 1
  ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

wait_for() {  # wait_for SECONDS NAME COMMAND...: poll until COMMAND succeeds, else die with NAME's log tail
  local seconds=$1 name=$2 i; shift 2
  for ((i = 0; i < seconds * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  say "last lines of ${LOG[$name]}:" >&2
  tail -n 20 "${LOG[$name]}" >&2 2>/dev/null || true
  die "$name did not come up within ${seconds}s"
}

launch() {  # launch NAME COMMAND...: start a daemon detached from the caller
  local name=$1 log=${LOG[$1]}; shift
  # A leftover daemon whose pidfile is gone or wrong still holds the port: a second one would load
  # the same state and die on "address in use". We never kill by name, so say so and stop.
  if in_use "$name"; then
    die "$name has no live pidfile (${PIDFILE[$name]}), yet something answers on its" \
      "${PORT[$name]:+port }${PORT[$name]:-socket} (a leftover $name?): stop it by its pid, then rerun up"
  fi
  rm -f "${PIDFILE[$name]}"  # stale after a crash or a machine restart
  touch "$log" && chown "${LOG_OWNER[$name]}:" "$log" && chmod 640 "$log"
  # Own session and no inherited stdio: the daemon outlives make/CI shells, and a caller that
  # captures our output (subprocess, $(...)) is not kept waiting on a pipe the daemon holds open.
  # What a daemon prints before it opens its own log (config errors) lands in that log too.
  # 9>&-: the daemon must not inherit (and so hold forever) the lock taken by `serialized`.
  setsid "$@" </dev/null >>"$log" 2>&1 9>&- &
}

install_packages() {
  local missing=() package
  for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
  done
  ((${#missing[@]} == 0)) && return 0
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Try the existing package lists first; refresh them only if that fails (fresh machine).
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$APT_LOG" 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >>"$APT_LOG" 2>&1 ||
    die "apt-get could not install ${missing[*]} (log: $APT_LOG)"
}

HEADER="# Written by slurm/local-cluster.sh; edits here are overwritten by the next \`up\`."

put_file() {  # put_file PATH < CONTENT: replace PATH only when the content differs; 0 if it changed
  local new
  new=$(cat)
  [[ -f $1 && $(<"$1") == "$new" ]] && return 1
  # A configuration this script did not write (a real cluster's) is never overwritten. (An earlier version wrote
  # slurmdbd.conf without the header; its password line is this script's own.)
  if [[ -f $1 ]] && ! grep -qxF -e "$HEADER" -e "StoragePass=$DB_PASS" "$1"; then
    die "$1 was not written by slurm/local-cluster.sh (this machine's own SLURM?): it is left as it is; move it" \
      "aside to run the local test cluster here, or run pdiff against your cluster without \`up\`"
  fi
  printf '%s\n' "$new" >"$1"
}

write_config() {
  mkdir -p "$CONF" "$LOGS" /var/spool/slurmctld /var/spool/slurmd /var/log/munge
  chown slurm:slurm "$LOGS" /var/spool/slurmctld
  chown munge:munge /var/log/munge
  # The node line is slurmd's own view of the hardware (a partial line makes slurmctld complain
  # about socket/core boundaries); the machine's hostname is not localhost, hence NodeHostname.
  local node
  node=$(slurmd -C 2>/dev/null | grep -m1 '^NodeName=' |
    sed -E 's/^NodeName=[^ ]+/NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost/')
  [[ -n $node ]] || die "slurmd -C printed no node line"
  if put_file "$CONF/slurm.conf" <<EOF
$HEADER
ClusterName=pdiff
SlurmctldHost=localhost
SlurmUser=slurm
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=${PIDFILE[slurmctld]}
SlurmdPidFile=${PIDFILE[slurmd]}
SlurmctldLogFile=${LOG[slurmctld]}
SlurmdLogFile=${LOG[slurmd]}
$(common_settings)
MaxArraySize=1001
$node
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  then
    # Picked up by a controller that is already running; a stopped one reads it at start.
    alive slurmctld && { scontrol reconfigure >/dev/null 2>&1 || true; }
  fi
  put_file "$CONF/slurmdbd.conf" <<EOF || true
$HEADER
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=slurm
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
PidFile=${PIDFILE[slurmdbd]}
LogFile=${LOG[slurmdbd]}
EOF
  # slurmdbd refuses a config that others can read (it holds the DB password).
  chown slurm:slurm "$CONF/slurmdbd.conf"
  chmod 600 "$CONF/slurmdbd.conf"
}

# started NAME CHECK...: our own instance is alive and answers. A leftover daemon without a
# (valid) pidfile would answer CHECK while ours died on "address in use": that must fail loudly.
started() { alive "$1" && "${@:2}"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
in_use() { if [[ $1 == munged ]]; then munge -n >/dev/null 2>&1; else port_open "${PORT[$1]}"; fi; }
ctld_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
# Node usable: idle, or busy with jobs (a second `up` while tests run is a no-op). A trailing
# '*' (not responding), '~', '#', '!', '%' or '@' does not count.
node_state() { sinfo -h -n localhost -o %t 2>/dev/null; }
node_ready() { node_state | grep -qxE 'idle|mix|alloc|comp'; }

start_munge() {
  alive munged && return 0
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
  # Debian's postinst makes the key; make one if it is missing.
  [[ -s /etc/munge/munge.key ]] || mungekey --create >/dev/null
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  launch munged runuser -u munge -- /usr/sbin/munged
  wait_for 15 munged started munged munge -n
}

start_mariadb() {
  if ! alive mariadbd; then
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql >/dev/null 2>&1
    launch mariadbd mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file="${PIDFILE[mariadbd]}"
    wait_for 30 mariadbd started mariadbd mariadb-admin ping
  fi
  # Idempotent; as root over the unix socket.
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

start_slurm() {
  if ! alive slurmdbd; then
    launch slurmdbd /usr/sbin/slurmdbd
    wait_for 30 slurmdbd started slurmdbd port_open 6819
  fi
  if ! alive slurmctld; then
    launch slurmctld /usr/sbin/slurmctld
    wait_for 30 slurmctld started slurmctld ctld_up
  fi
  if ! alive slurmd; then
    # Registers as "localhost", the name in slurm.conf, not the machine's hostname.
    launch slurmd /usr/sbin/slurmd -N localhost
  fi
  # A node left DOWN or DRAINED by an earlier unclean stop is put back in service.
  local i
  for ((i = 0; i < 25; i++)); do
    node_ready && break
    if node_state | grep -qE 'down|drain|fail'; then
      scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true
    fi
    sleep 0.2
  done
  wait_for 60 slurmd started slurmd node_ready
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
  say "up in $((SECONDS - started))s: partition debug, node localhost $(node_state), $(sinfo -h -o %c) CPUs"
}

stop_daemon() {  # stop_daemon NAME: SIGTERM by pidfile, wait for it to exit, SIGKILL if it hangs
  local name=$1 pid i
  if alive "$name"; then
    pid=$(<"${PIDFILE[$name]}")
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 75; i++)); do alive "$name" || break; sleep 0.2; done
    if alive "$name"; then
      say "$name (pid $pid) ignored SIGTERM for 15s; killing it"
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "${PIDFILE[$name]}"  # a stale /run/slurmctld.pid breaks a later apt purge
}

stop() {
  if alive slurmctld; then
    # Jobs first: slurmstepd and job processes outlive the daemons otherwise.
    local jobs i
    mapfile -t jobs < <(squeue -h -o %i 2>/dev/null || true)
    if ((${#jobs[@]})); then
      say "cancelling jobs: ${jobs[*]}"
      scancel "${jobs[@]}" 2>/dev/null || true
      # KillWait=10: a job that ignores SIGTERM is SIGKILLed after 10 s.
      for ((i = 0; i < 100; i++)); do [[ -z $(squeue -h 2>/dev/null) ]] && break; sleep 0.2; done
    fi
  fi
  local n
  for ((n = ${#NAMES[@]} - 1; n >= 0; n--)); do stop_daemon "${NAMES[$n]}"; done
  say "stopped"
}

status() {
  local rc=0 name
  for name in "${NAMES[@]}"; do
    if alive "$name"; then
      printf '%-10s running (pid %s)\n' "$name" "$(<"${PIDFILE[$name]}")"
    else
      printf '%-10s stopped\n' "$name"
      rc=3
    fi
  done
  if alive slurmctld && command -v sinfo >/dev/null; then
    sinfo || rc=3
    node_ready || rc=3
  else
    echo "sinfo: no controller"
  fi
  return $rc
}

serialized() {  # serialized COMMAND: one up/stop at a time (make test and a shell may overlap)
  exec 9>/run/lock/pdiff-local-cluster.lock
  flock -w 300 9 || die "another up/stop still holds /run/lock/pdiff-local-cluster.lock after 300s"
  "$@"
}

case "${1:-}" in
  up) serialized up ;;
  stop) serialized stop ;;
  status) status || exit $? ;;
  *) echo "usage: bash slurm/local-cluster.sh up|stop|status" >&2; exit 2 ;;
esac
