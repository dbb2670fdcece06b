"""A port another process already listens on stops a server with one line naming it, not a traceback."""

import errno
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from shared.config import ConfigError


@contextmanager
def listening_on(host: str, port: int, setting: str) -> Iterator[None]:
    """Around the call that binds: EADDRINUSE becomes a ConfigError naming the port and how to choose another."""
    try:
        yield
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        raise ConfigError(in_use(host, port, setting)) from None


def refuse_if_taken(host: str, port: int, setting: str) -> None:
    """Before starting children that will listen on `port`: one line now rather than a child's exit later."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is no owner
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            raise ConfigError(in_use(host, port, setting)) from None


def in_use(host: str, port: int, setting: str) -> str:
    return f"port {port} on {host} is already in use; stop what listens there or choose another port with {setting}"
