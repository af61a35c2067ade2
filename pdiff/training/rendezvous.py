"""Checks, in seconds, that the ranks of a multi-host job can meet, before gloo would wait for
minutes.

gloo binds each rank to the address its hostname resolves to and falls back to 127.0.0.1 when it
does not resolve; the other hosts then time out after the process group's timeout with a message
that names neither the host nor the cause. Each check here names the host, the address and the
setting to change.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import time

from pdiff.errors import RendezvousError

REACH_TIMEOUT_S = 30.0  # how long a rank retries a rendezvous address that answers "unreachable"
CONNECT_TIMEOUT_S = 3.0


def resolve(host: str) -> list[str]:
    """The IPv4 addresses `host` resolves to here (empty when it does not resolve)."""
    try:
        return sorted(
            {
                info[4][0]
                for info in socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
            }
        )
    except (socket.gaierror, UnicodeError):
        return []


def is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


def host_address() -> str:
    """This host's name and the address gloo binds to, e.g. 'node1 (10.0.0.11)'."""
    host = socket.gethostname()
    interface = os.environ.get("GLOO_SOCKET_IFNAME")
    addresses = resolve(host)
    where = f"interface {interface}" if interface else (addresses[0] if addresses else "unresolved")
    return f"{host} ({where})"


def check(
    rank: int, master_addr: str, master_port: int, source: str, nodes: int, bind_port: bool
) -> None:
    """Raise RendezvousError when this rank cannot take part in a rendezvous at
    master_addr:master_port.

    `source` says where the address came from (the setting to change); `nodes` is how many hosts the
    ranks run on; `bind_port` (rank 0 under SLURM, where pdiff picks the port) also checks that the
    port is free here.
    """
    host = socket.gethostname()
    targets = resolve(master_addr)
    if not targets:
        raise RendezvousError(
            f"rank {rank} on host {host}: the rendezvous host {master_addr!r} ({source}) does not "
            "resolve here: add it to /etc/hosts or DNS on every node, or set MASTER_ADDR to its "
            "IP address"
        )
    if all(is_loopback(address) for address in targets):
        if nodes > 1:
            raise RendezvousError(
                f"rank {rank} on host {host}: the rendezvous address {master_addr!r} ({source}) "
                f"is this host's loopback, but the job runs on {nodes} hosts: set MASTER_ADDR to "
                "rank 0's host (or unset it: pdiff then uses the allocation's first node)"
            )
    else:
        _check_own_address(rank, host)
    if rank == 0:
        _check_bindable(host, targets[0], master_port, source, bind_port)
    else:
        _check_reachable(rank, host, master_addr, targets[0], master_port, source)


def _check_own_address(rank: int, host: str) -> None:
    """gloo needs this host's name to resolve to an address the other hosts reach (or
    GLOO_SOCKET_IFNAME)."""
    if os.environ.get("GLOO_SOCKET_IFNAME"):
        return
    own = resolve(host)
    if not own or all(is_loopback(address) for address in own):
        found = ", ".join(own) if own else "nothing"
        raise RendezvousError(
            f"rank {rank}: this host's name {host!r} resolves to {found}, so gloo would listen on "
            "127.0.0.1 where no other host can reach it: add the host's network address for "
            f"{host!r} to /etc/hosts or DNS, or set GLOO_SOCKET_IFNAME to the interface of the "
            "nodes' network (e.g. GLOO_SOCKET_IFNAME=eth0)"
        )


def _check_bindable(host: str, address: str, port: int, source: str, bind_port: bool) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
        )  # as the store's own socket: TIME_WAIT is free
        try:
            sock.bind((address, port if bind_port else 0))
        except OSError as error:
            if error.errno == errno.EADDRNOTAVAIL:
                raise RendezvousError(
                    f"rank 0 runs on host {host}, but the rendezvous address {address} ({source}) "
                    "is not one of this host's addresses: set MASTER_ADDR to rank 0's host"
                ) from None
            if error.errno == errno.EADDRINUSE:
                raise RendezvousError(
                    f"the rendezvous port {port} is already in use on host {host}: set "
                    "MASTER_PORT to a free port"
                ) from None
            raise


def _check_reachable(
    rank: int, host: str, master_addr: str, address: str, port: int, source: str
) -> None:
    """Connect until rank 0's host answers (a refused connection is an answer: it is up, rank 0 not
    yet)."""
    deadline, last = time.monotonic() + REACH_TIMEOUT_S, "no answer"
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(CONNECT_TIMEOUT_S)
            try:
                sock.connect((address, port))
                return
            except ConnectionRefusedError:
                return
            except OSError as error:
                last = os.strerror(error.errno) if error.errno else "no answer"
        if time.monotonic() >= deadline:
            raise RendezvousError(
                f"rank {rank} on host {host} cannot reach the rendezvous address {master_addr} "
                f"({address}:{port}, {source}) after {REACH_TIMEOUT_S:.0f} s: {last}; set "
                "MASTER_ADDR to an address of rank 0's host that the other nodes can reach"
            )
        time.sleep(0.5)
