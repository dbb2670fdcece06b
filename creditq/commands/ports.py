"""An address a server cannot listen on stops it with one line naming the setting that chooses another, not a
traceback: a port out of range, a host that does not resolve, a port another process already listens on."""

import errno
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from shared.config import ConfigError

PORT_RANGE = range(0, 65536)


@contextmanager
def listening_on(host: str, port: int, port_setting: str, host_setting: str) -> Iterator[None]:
    """Around the call that binds: what makes it fail on the address given becomes a ConfigError naming the
    setting (`port_setting` or `host_setting`) that chooses another."""
    if port not in PORT_RANGE:
        raise ConfigError(f"port {port} is out of the port range 0-65535; choose another with {port_setting}")
    try:
        yield
    except socket.gaierror as error:
        raise ConfigError(f"cannot listen on host {host!r} ({error.strerror}); choose another with {host_setting}"
                          ) from None
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        raise ConfigError(in_use(host, port, port_setting)) from None


def refuse_if_taken(host: str, port: int, setting: str, host_setting: str = "HOST") -> None:
    """Before starting children that will listen on `port`: one line now rather than a child's exit later."""
    refuse_any_taken([(host, port, setting, host_setting)])


def refuse_any_taken(addresses: list[tuple[str, int, str, str]]) -> None:
    """`refuse_if_taken` for each (host, port, setting, host setting), every port in use named in the one line, so
    that a second stack on the same machine learns at once all the settings it must change."""
    taken = []
    for host, port, setting, host_setting in addresses:
        with listening_on(host, port, setting, host_setting):  # a port out of range or a host unknown: at once
            try:
                with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
                    probe.bind((host, port))
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    raise
                taken.append(in_use(host, port, setting))
    if taken:
        raise ConfigError("; and ".join(taken))


def in_use(host: str, port: int, setting: str) -> str:
    return f"port {port} on {host} is already in use; stop what listens there or choose another port with {setting}"
