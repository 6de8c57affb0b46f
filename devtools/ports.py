"""A free TCP port, for the servers tests, benchmarks and ``gateway dev`` start."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it; another process could
    still take it before the caller binds)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
