"""Free loopback ports for servers started by tests and benchmarks.

A port is picked at random below the kernel's ephemeral range and probed. A port the kernel hands out for a bind to
0 comes from that range, which every outgoing connection draws from too: between the probe and the server's own
bind, a client's connection (to PostgreSQL, Redis, another test's server) could take it, and the server would fail
with "already in use". Below that range only another test's server could, so no port is handed out twice in a
process (a stack draws five at once, none bound until its processes start), and each pytest-xdist worker draws from
a slice of the range of its own, so two workers' stacks never draw the same port either.
"""

import os
import random
import socket
import threading

LOWEST = 20_000  # above the well-known ports and the stack's defaults (8080-8082, 9191-9192)

_handed_out: set[int] = set()
_lock = threading.Lock()


def free_port() -> int:
    low, high = port_range()
    with _lock:
        for _ in range(100):
            port = random.randrange(low, high)
            if port in _handed_out:
                continue
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free loopback port between {low} and {high} after 100 tries")


def port_range() -> tuple[int, int]:
    """[low, high) for this process: below the ephemeral range, this pytest-xdist worker's slice of it (gw0 the
    first of PYTEST_XDIST_WORKER_COUNT), all of it outside xdist."""
    low, high = LOWEST, _ephemeral_floor()
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 1:
        width = (high - low) // int(count)
        low += width * (int(worker[2:]) % int(count))
        high = low + width
    return low, high


def _ephemeral_floor() -> int:
    """The first port of the kernel's ephemeral range (Linux's default 32768 where it cannot be read)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            return max(int(ports.read().split()[0]), LOWEST + 1_000)
    except (OSError, ValueError, IndexError):
        return 32_768
