#!/usr/bin/env bash
# One host of slurm/two-hosts.sh, booted inside the UTS and mount namespaces of its own that start_slurmd gives it:
# its hosts file and hostname, a private /tmp and /dev/shm, and every shared checkout at its own path (a cluster's
# shared file system: a checkout under /tmp is hidden by the private /tmp otherwise); then its slurmd.
#   bash slurm/host-boot.sh NODE STATE CONF [CHECKOUT...]      (two-hosts.sh runs it; not meant to be run by hand)
set -euo pipefail
node=$1 state=$2 conf=$3
shift 3

# Each checkout is held at a staging point before the private mounts can hide it, then bound back at its own path.
stage=$state/$node/staged
checkouts=()
for checkout in "$@"; do
  [[ -d $checkout ]] || continue  # removed since it was shared
  mkdir -p "$stage/${#checkouts[@]}"
  mount --rbind "$checkout" "$stage/${#checkouts[@]}"
  checkouts+=("$checkout")
done
mount --bind "$state/hosts" /etc/hosts
mount --bind "$state/$node/tmp" /tmp
mount -t tmpfs -o size=2g tmpfs /dev/shm
for index in "${!checkouts[@]}"; do
  mkdir -p "${checkouts[$index]}"
  mount --rbind "$stage/$index" "${checkouts[$index]}"
done
hostname "$node"
exec /usr/sbin/slurmd -f "$conf" -N "$node"
