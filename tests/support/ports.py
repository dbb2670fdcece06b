"""Free loopback ports for servers started by tests and benchmarks.

A port is picked at random below the kernel's ephemeral range and probed. A port the kernel hands out for a bind to
0 comes from that range, which every outgoing connection draws from too: between the probe and the server's own
bind, a client's connection (to PostgreSQL, Redis, another test's server) could take it, and the server would fail
with "already in use". Below that range only another test's server could, and it draws at random as well.
"""

import random
import socket

LOWEST = 20_000  # above the well-known ports and the stack's defaults (8080-8082, 9191-9192)


def free_port() -> int:
    ceiling = _ephemeral_floor()
    for _ in range(100):
        port = random.randrange(LOWEST, ceiling)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port between {LOWEST} and {ceiling} after 100 tries")


def _ephemeral_floor() -> int:
    """The first port of the kernel's ephemeral range (Linux's default 32768 where it cannot be read)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            return max(int(ports.read().split()[0]), LOWEST + 1_000)
    except (OSError, ValueError, IndexError):
        return 32_768
