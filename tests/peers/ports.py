"""Free loopback ports for test peers.

Peers are started on random ports so that parallel runs (a developer and CI on one machine, or
several peers in one test) never collide.  Asking the kernel for an ephemeral port and closing the
socket leaves a small race; remembering what we handed out avoids at least collisions between
peers of the same process, and the process managers retry the health check, so a stolen port shows
up as a clear start-up error rather than a hang.
"""

from __future__ import annotations

import socket
import threading

LOOPBACK = "127.0.0.1"

_lock = threading.Lock()
_handed_out: set[int] = set()


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on `host` that is currently free and not yet handed out by us."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        with _lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError(f"could not find a free port on {host}")


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return `count` distinct free ports."""
    return [free_port(host) for _ in range(count)]


def port_is_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
