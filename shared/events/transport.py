"""The POST of one delivery, to the address the URL was checked at (shared.events.addresses.Target).

http.client is pointed at that address and told the host name only for the Host header and TLS (server name
and certificate check), so the name is never resolved again between the check and the connection. Redirects
are not followed (an answer 3xx is a failed attempt): a redirect could point anywhere.
"""

import http.client
import socket
import ssl
from dataclasses import dataclass

from shared.events.addresses import Target

MAX_BODY_KEPT = 200  # characters of a failed answer kept in the delivery log


@dataclass(frozen=True)
class Answer:
    status: int
    body: str  # its first MAX_BODY_KEPT characters


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout, context=ssl.create_default_context())
        self._address = target.address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def post(target: Target, body: str, headers: dict[str, str], *, timeout: float) -> Answer:
    """POST and read the answer; OSError (timeouts included) when there is none."""
    connection_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(target, timeout)
    try:
        connection.request("POST", target.path, body=body.encode(), headers={
            **headers, "Content-Type": "application/json", "User-Agent": "creditq-webhooks/1"})
        response = connection.getresponse()
        return Answer(response.status, response.read(64 * 1024).decode(errors="replace")[:MAX_BODY_KEPT])
    except http.client.HTTPException as error:
        raise OSError(f"bad HTTP answer: {error!r}") from None
    finally:
        connection.close()
