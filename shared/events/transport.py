"""The POST of one delivery, to the address the URL was checked at (shared.events.addresses.Target).

http.client is pointed at that address and told the host name only for the Host header and TLS (server name
and certificate check), so the name is never resolved again between the check and the connection. Redirects
are not followed (an answer 3xx is a failed attempt): a redirect could point anywhere. The timeout bounds the whole
request once the address is known (connecting, the TLS handshake, the answer), not each read: an endpoint dripping
its answer a byte at a time is cut off when it is over, as one that never answers, so that it holds a worker's
thread no longer.
"""

import http.client
import socket
import ssl
import threading
from dataclasses import dataclass

from shared.events.addresses import Target

MAX_BODY_KEPT = 200  # characters of a failed answer kept in the delivery log


@dataclass(frozen=True)
class Answer:
    status: int
    body: str  # its first MAX_BODY_KEPT characters


class _Deadline:
    """Shuts a connection's socket when the time is up, whatever it waits for (the TLS handshake, the answer); a
    socket watched once the time is up is closed at once. `passed`: it cut the request off before `finish`."""

    def __init__(self, seconds: float):
        self.passed = self._finished = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._cut_off)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sock = sock
            if self.passed:
                sock.close()
                raise TimeoutError("the timeout passed while connecting")
        return sock

    def _cut_off(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.passed = True
            if self._sock is not None:
                try:  # the descriptor itself: an SSLSocket's own shutdown would unwrap it under a reading thread
                    socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
                except OSError:
                    pass

    def finish(self) -> None:
        with self._lock:
            self._finished = True
        self._timer.cancel()


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: Target, timeout: float, deadline: _Deadline):
        super().__init__(target.host, target.port, timeout=timeout, context=ssl.create_default_context())
        self._address, self._deadline = target.address, deadline

    def connect(self) -> None:
        sock = self._deadline.watch(socket.create_connection((self._address, self.port), self.timeout))
        self.sock = self._deadline.watch(self._context.wrap_socket(sock, server_hostname=self.host,
                                                                   do_handshake_on_connect=False))
        self.sock.do_handshake()


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: Target, timeout: float, deadline: _Deadline):
        super().__init__(target.host, target.port, timeout=timeout)
        self._address, self._deadline = target.address, deadline

    def connect(self) -> None:
        self.sock = self._deadline.watch(socket.create_connection((self._address, self.port), self.timeout))


def post(target: Target, body: str, headers: dict[str, str], *, timeout: float) -> Answer:
    """POST and read the answer, all of it within `timeout`; OSError (timeouts included) when there is none."""
    connection_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    deadline = _Deadline(timeout)
    connection = connection_class(target, timeout, deadline)
    try:
        connection.request("POST", target.path, body=body.encode(), headers={
            **headers, "Content-Type": "application/json", "User-Agent": "creditq-webhooks/1"})
        response = connection.getresponse()
        answer = Answer(response.status, response.read(64 * 1024).decode(errors="replace")[:MAX_BODY_KEPT])
    except (http.client.HTTPException, OSError) as error:
        if deadline.passed or isinstance(error, TimeoutError):  # cut off, or a read waited out the whole timeout
            raise TimeoutError(f"no whole answer within {timeout:g} s") from None
        if isinstance(error, OSError):
            raise
        raise OSError(f"bad HTTP answer: {error!r}") from None
    finally:
        deadline.finish()
        connection.close()
    if deadline.passed:  # cut off while the body came: its status may have been read, its answer was not whole
        raise TimeoutError(f"no whole answer within {timeout:g} s")
    return answer
