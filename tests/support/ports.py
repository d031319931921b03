"""Free TCP ports on loopback, for the servers tests start and the ones they expect to be absent."""

from __future__ import annotations

import socket
from contextlib import ExitStack


def free_ports(count: int) -> list[int]:
    """``count`` different ports nothing listens on now.

    Every probe stays bound until all are chosen, so the ports differ. Another process can still
    take one before the test binds it; callers that must not flake retry on a busy port.
    """
    with ExitStack() as probes:
        sockets = [probes.enter_context(socket.socket()) for _ in range(count)]
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in sockets]


def free_port() -> int:
    """A port nothing listens on now (see :func:`free_ports`)."""
    (port,) = free_ports(1)
    return port
