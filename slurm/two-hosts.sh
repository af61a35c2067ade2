#!/usr/bin/env bash
# A real two-host SLURM cluster on this one machine, for tests of what only several hosts can show (a rendezvous
# across hosts, files only one host can see, a host that fails). Each host is a network namespace with its own
# hostname, address, hosts file, /tmp and /dev/shm; the controller runs in the root namespace on a bridge.
#   bash slurm/two-hosts.sh up       start it (after slurm/local-cluster.sh up: packages, munge, slurmdbd)
#   bash slurm/two-hosts.sh stop     cancel its jobs, stop its daemons, remove the hosts and their network
#   bash slurm/two-hosts.sh status   daemon states and sinfo; exit 0 when both hosts are up, 3 otherwise
#   bash slurm/two-hosts.sh crash pdiff-node2   the host fails: off the network, then everything on it killed
#                                    (no goodbye reaches the other host); `up` brings it back as a reboot would
# Clients talk to it with SLURM_CONF=/etc/pdiff-two-hosts/slurm.conf (partition `two`, nodes pdiff-node[1-2]).
# The checkout this script lives in is seen by every host at its own path, as a cluster's shared file system would
# show it, wherever it was cloned (/tmp included: the hosts' own /tmp is private); `up` from a second checkout
# adds it (restarting an idle host's slurmd), and `status` fails while a host cannot see the caller's checkout.
# The hosts' subnet exists only on this machine: an `unreachable` route for it stays in the root namespace from
# the first `up` on, so no packet to a test address can ever leave the machine, teardown included.
set -eEuo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common-settings.sh"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)

CLUSTER=pdiff-two-hosts
SUBNET=10.77.27
PREFIX=24
BRIDGE=pdiff-br0
CONTROLLER_ADDR=$SUBNET.1
NODES=(pdiff-node1 pdiff-node2)
declare -A ADDR=([pdiff-node1]=$SUBNET.11 [pdiff-node2]=$SUBNET.12)
declare -A VETH=([pdiff-node1]=pdiff-veth1 [pdiff-node2]=pdiff-veth2)
CONF_DIR=/etc/$CLUSTER
CONF=$CONF_DIR/slurm.conf
STATE=/var/lib/$CLUSTER  # hosts file, spool folders, each host's private /tmp
SHARED_LIST=$STATE/shared-checkouts  # one path a line: the checkouts every host sees at their own paths
LOGS=/var/log/slurm
CTLD_PORT=6827  # apart from the single-node cluster's 6817/6818
SLURMD_PORT=6828
CTLD_PIDFILE=/run/$CLUSTER-slurmctld.pid
slurmd_pidfile() { echo "/run/$CLUSTER-slurmd-$1.pid"; }

say() { printf '[two-hosts] %s\n' "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }
# Any other failure is one line too: the command, its status and the logs to read (set -E: inside functions too).
trap 'die "\`$BASH_COMMAND\` failed (exit $?, line $LINENO); logs: $LOGS/$CLUSTER-*.log"' ERR

alive() {  # alive PIDFILE COMM: the pidfile names a live (not zombie) process called COMM
  local pid
  [[ -s $1 ]] || return 1
  pid=$(<"$1")
  [[ $pid =~ ^[0-9]+$ && -d /proc/$pid && $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] || return 1
  ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

wait_for() {  # wait_for SECONDS WHAT LOG COMMAND...: poll until COMMAND succeeds, else die with LOG's tail
  local seconds=$1 what=$2 log=$3 i; shift 3
  for ((i = 0; i < seconds * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  tail -n 20 "$log" >&2 2>/dev/null || true
  die "$what did not come up within ${seconds}s (log: $log)"
}

client() { SLURM_CONF=$CONF "$@"; }  # a SLURM command aimed at this cluster, not the single-node one
ctld_up() { client scontrol ping 2>/dev/null | grep -q 'is UP'; }
nodes_ready() {  # every host of the partition idle or busy (no '*' not responding, no down or drain)
  local states
  states=$(client sinfo -h -p two -N -o %t 2>/dev/null) || return 1
  [[ $(grep -cxE 'idle|mix|alloc|comp' <<<"$states") -eq ${#NODES[@]} ]]
}

guard_subnet() {
  # The fallback for every address of the subnet: with the hosts gone, a packet to one is refused here.
  ip route show type unreachable | grep -q "^unreachable $SUBNET.0/$PREFIX " ||
    ip route add unreachable "$SUBNET.0/$PREFIX" metric 4242
}

make_network() {
  guard_subnet
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$CONTROLLER_ADDR/$PREFIX" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
  local node
  for node in "${NODES[@]}"; do
    [[ -e /run/netns/$node ]] || ip netns add "$node"
    if ! ip link show "${VETH[$node]}" >/dev/null 2>&1; then
      ip link add "${VETH[$node]}" type veth peer name eth0 netns "$node"
      ip link set "${VETH[$node]}" master "$BRIDGE" up
      ip -n "$node" addr add "${ADDR[$node]}/$PREFIX" dev eth0
    fi
    # No default route inside a host: it reaches its subnet and nothing else.
    ip -n "$node" link set lo up
    ip -n "$node" link set eth0 up
  done
}

write_files() {
  mkdir -p "$CONF_DIR" "$LOGS" "$STATE/ctld"
  chown slurm:slurm "$STATE/ctld"
  local node line
  {
    printf '127.0.0.1 localhost\n%s pdiff-controller\n' "$CONTROLLER_ADDR"
    for node in "${NODES[@]}"; do printf '%s %s\n' "${ADDR[$node]}" "$node"; done
  } >"$STATE/hosts"
  for node in "${NODES[@]}"; do mkdir -p "$STATE/$node/tmp" "$STATE/$node/spool" && chmod 1777 "$STATE/$node/tmp"; done
  # Each host offers the machine's cores (they share them) and a third of its memory.
  line=$(slurmd -C 2>/dev/null | grep -m1 '^NodeName=' | sed -E 's/^NodeName=[^ ]+ //; s/RealMemory=[0-9]+//')
  [[ -n $line ]] || die "slurmd -C printed no node line"
  local memory=$(($(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) / 3))
  cat >"$CONF.new" <<EOF
# Written by slurm/two-hosts.sh; edits here are overwritten by the next \`up\`.
ClusterName=pdiff2
SlurmctldHost=$(hostname -s)($CONTROLLER_ADDR)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=slurm
SlurmdUser=root
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/%n/spool
SlurmctldPidFile=$CTLD_PIDFILE
SlurmdPidFile=/run/$CLUSTER-slurmd-%n.pid
SlurmctldLogFile=$LOGS/$CLUSTER-slurmctld.log
SlurmdLogFile=$LOGS/$CLUSTER-slurmd-%n.log
$(common_settings)
# A host that stops answering is DOWN after 10 s (default 300 s), and its jobs are requeued (--requeue).
SlurmdTimeout=10
EOF
  for node in "${NODES[@]}"; do
    echo "NodeName=$node NodeAddr=${ADDR[$node]} NodeHostname=$node $line RealMemory=$memory" >>"$CONF.new"
  done
  echo "PartitionName=two Nodes=$(IFS=,; echo "${NODES[*]}") Default=YES MaxTime=INFINITE State=UP" >>"$CONF.new"
  if cmp -s "$CONF.new" "$CONF"; then
    rm "$CONF.new"
    return 0
  fi
  mv "$CONF.new" "$CONF"
  # Picked up by a controller that is already running; a stopped one reads it at start (a first run).
  if alive "$CTLD_PIDFILE" slurmctld; then client scontrol reconfigure >/dev/null 2>&1 || true; fi
}

share_checkout() {  # the caller's checkout joins the list that every host binds at its own path
  local kept=() line
  [[ $REPO != *$'\n'* ]] || die "the checkout's path holds a newline, which the hosts' list cannot: clone elsewhere"
  if [[ -f $SHARED_LIST ]]; then
    while IFS= read -r line; do
      if [[ -d $line && $line != "$REPO" ]]; then kept+=("$line"); fi  # checkouts removed since are dropped
    done <"$SHARED_LIST"
  fi
  printf '%s\n' "${kept[@]}" "$REPO" | grep -v '^$' >"$SHARED_LIST.new"
  mv "$SHARED_LIST.new" "$SHARED_LIST"
}

sees_checkout() {  # sees_checkout NODE: NODE's slurmd (so its jobs too) sees this checkout at its own path
  local pid
  pid=$(<"$(slurmd_pidfile "$1")") || return 1
  [[ -e /proc/$pid/root$REPO/slurm/two-hosts.sh ]]
}

node_jobs() { client squeue -h -w "$1" -o %i 2>/dev/null || true; }

start_daemons() {
  if ! alive "$CTLD_PIDFILE" slurmctld; then
    rm -f "$CTLD_PIDFILE"
    setsid /usr/sbin/slurmctld -f "$CONF" </dev/null >>"$LOGS/$CLUSTER-slurmctld.log" 2>&1 9>&- &
    wait_for 30 slurmctld "$LOGS/$CLUSTER-slurmctld.log" ctld_up
  fi
  local node
  for node in "${NODES[@]}"; do
    if alive "$(slurmd_pidfile "$node")" slurmd; then
      sees_checkout "$node" && continue
      # A host started from another checkout: only a new mount namespace can show it this one as well.
      [[ -z $(node_jobs "$node") ]] ||
        die "$node cannot see $REPO and runs jobs; rerun \`bash slurm/two-hosts.sh up\` once they end"
      say "$node: restarting its slurmd so that it sees $REPO"
      stop_pidfile "$(slurmd_pidfile "$node")" slurmd
    fi
    start_slurmd "$node"
  done
  wait_for 60 "both hosts" "$LOGS/$CLUSTER-slurmd-${NODES[1]}.log" nodes_ready
}

start_slurmd() {  # start_slurmd NODE: slurmd inside NODE's namespaces (slurm/host-boot.sh sets the host up)
  local node=$1 checkouts=()
  rm -f "$(slurmd_pidfile "$node")"
  mapfile -t checkouts <"$SHARED_LIST"
  # `ip netns exec` would remount /sys and slurmd fails on cgroups there: enter the network namespace alone.
  # Job steps inherit all of it: gethostname() is the node's name and resolves to the node's address.
  setsid nsenter --net="/run/netns/$node" unshare --uts --mount --propagation private \
    bash "$REPO/slurm/host-boot.sh" "$node" "$STATE" "$CONF" "${checkouts[@]}" \
    </dev/null >>"$LOGS/$CLUSTER-slurmd-$node.log" 2>&1 9>&- &
}

up() {
  local started=$SECONDS
  command -v slurmctld >/dev/null && [[ -S /run/munge/munge.socket.2 ]] ||
    die "munge or SLURM is missing: run \`bash slurm/local-cluster.sh up\` first"
  make_network
  write_files
  share_checkout
  start_daemons
  say "up in $((SECONDS - started))s: partition two, $(client sinfo -h -p two -N -o '%N %t' | paste -sd, -)" \
    "(SLURM_CONF=$CONF)"
}

stop_pidfile() {  # stop_pidfile PIDFILE COMM: SIGTERM, wait, SIGKILL if it hangs; remove the pidfile
  local pid i
  if alive "$1" "$2"; then
    pid=$(<"$1")
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 75; i++)); do alive "$1" "$2" || break; sleep 0.2; done
    alive "$1" "$2" && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

stop() {
  guard_subnet  # before anything goes, so that no packet to the subnet leaves while it does
  if alive "$CTLD_PIDFILE" slurmctld; then
    local jobs i
    mapfile -t jobs < <(client squeue -h -o %i 2>/dev/null || true)
    if ((${#jobs[@]})); then
      say "cancelling jobs: ${jobs[*]}"
      client scancel "${jobs[@]}" 2>/dev/null || true
      for ((i = 0; i < 100; i++)); do [[ -z $(client squeue -h 2>/dev/null) ]] && break; sleep 0.2; done
    fi
  fi
  local node pid
  for node in "${NODES[@]}"; do stop_pidfile "$(slurmd_pidfile "$node")" slurmd; done
  stop_pidfile "$CTLD_PIDFILE" slurmctld
  # Whatever still runs on a host (a job step that outlived its slurmd) goes with the host.
  for node in "${NODES[@]}"; do
    if [[ -e /run/netns/$node ]]; then
      for pid in $(ip netns pids "$node" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
      ip netns del "$node" 2>/dev/null || true
    fi
    ip link del "${VETH[$node]}" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  say "stopped (the unreachable route for $SUBNET.0/$PREFIX stays)"
}

crash() {  # crash NODE: what a host failure looks like from the others
  local node=${1:-} pid
  [[ -n $node && -n ${ADDR[$node]:-} ]] || die "crash needs one of: ${NODES[*]} (got '${node}')"
  [[ -e /run/netns/$node ]] || die "$node is not up"
  ip -n "$node" link set eth0 down  # first, so that no reset or FIN from the dying processes gets out
  for pid in $(ip netns pids "$node" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  rm -f "$(slurmd_pidfile "$node")"
  say "$node crashed (network down, every process killed); \`bash slurm/two-hosts.sh up\` restarts it"
}

status() {
  local rc=0 node
  if alive "$CTLD_PIDFILE" slurmctld; then echo "slurmctld  running"; else echo "slurmctld  stopped"; rc=3; fi
  for node in "${NODES[@]}"; do
    if ! alive "$(slurmd_pidfile "$node")" slurmd; then
      echo "$node stopped"
      rc=3
    elif ! sees_checkout "$node"; then
      echo "$node running, but it cannot see $REPO: run \`bash slurm/two-hosts.sh up\` from this checkout"
      rc=3
    else
      echo "$node running"
    fi
  done
  if ((rc == 0)); then
    client sinfo -p two -N || rc=3
    nodes_ready || rc=3
  fi
  return $rc
}

serialized() {
  exec 9>/run/lock/$CLUSTER.lock
  flock -w 300 9 || die "another up/stop still holds /run/lock/$CLUSTER.lock after 300s"
  "$@"
}

case "${1:-}" in
  up) serialized up ;;
  stop) serialized stop ;;
  status) status || exit $? ;;
  crash) serialized crash "${2:-}" ;;
  *) echo "usage: bash slurm/two-hosts.sh up|stop|status|crash NODE" >&2; exit 2 ;;
esac
