"""Ports for the processes and servers that tests and benches start.

The kernel's own pick (a bind to port 0) comes out of the ephemeral range, the range that
outgoing connections draw their local ports from too. Between the pick and the child's
bind, a connection to Postgres, Redis or RabbitMQ could take the port, and the child
failed with "address already in use" (an API-contract stack lost its inbox relay so). The
ports given here lie below that range, where no outgoing connection is ever placed, and
none is given twice by one process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10_000
_given: set[int] = set()


def _range() -> tuple[int, int]:
    """[_LOWEST, the first ephemeral port), or the kernel's pick where that is too narrow."""
    try:
        first = int(_EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32_768  # Linux's default
    return _LOWEST, first


def _kernel_pick() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_port() -> int:
    """A port nobody listens on now, outside the ephemeral range; random, so that parallel
    sessions seldom try the same one (and a bind check catches a port already taken)."""
    low, high = _range()
    if high - low < 1_000:
        return _kernel_pick()
    for _ in range(200):
        port = random.randrange(low, high)
        if port in _given:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    return _kernel_pick()
