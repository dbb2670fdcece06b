"""Where an endpoint may point: outside development, https to public addresses only.

A tenant must not make creditq call its own network (SSRF): every address the host name resolves to must be
public — not loopback, private, link-local (169.254.169.254, the cloud metadata service, included), shared
(100.64/10), multicast, reserved or unspecified, in IPv4 or IPv6, an IPv4 address mapped into or embedded in an
IPv6 one (::ffff:127.0.0.1, 64:ff9b::a9fe:a9fe, 2002:7f00:1::) judged as that IPv4 address. The check runs when
the URL is saved and again before each delivery, and the delivery connects to the address that passed (the
transport never resolves the name a second time), so a DNS answer that changes in between (rebinding) gains
nothing. In development (`creditq dev`) any http(s) URL is taken, so a receiver on localhost works.
"""

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.errors import ValidationFailed

MAX_URL_LENGTH = 2000
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")

Resolver = Callable[[str, int], list[str]]  # (host, port) -> the addresses it resolves to


class UnsafeUrl(ValidationFailed):
    """The URL may not be called: what is wrong is in the message, for the 422 on `url`."""

    def __init__(self, reason: str):
        super().__init__(f"url {reason}", errors={"url": reason})


@dataclass(frozen=True)
class Target:
    """A URL checked for delivery: connect to `address`, speak to `host` (Host header, TLS server name)."""

    url: str
    scheme: str
    host: str
    port: int
    address: str
    path: str  # with the query string


def resolve(host: str, port: int) -> list[str]:
    """Every address of `host`, in the system's order of preference (the first is the one connected to)."""
    return list(dict.fromkeys(info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))


def check_url(url: str, *, development: bool, resolver: Resolver = resolve) -> Target:
    """The target to deliver to, or UnsafeUrl."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"must be a URL of at most {MAX_URL_LENGTH} characters")
    if any(character.isspace() or ord(character) < 0x20 or ord(character) == 0x7F for character in url):
        # urlsplit drops tabs and line breaks unseen, and the HTTP client then refuses every delivery for them
        raise UnsafeUrl("must not contain spaces or control characters (percent-encode them)")
    if not url.isascii():  # http.client cannot send it: every delivery would fail
        raise UnsafeUrl("must be ASCII: percent-encode the path and query, and write an international host in its "
                        "xn-- form")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("is not a valid URL") from None
    schemes = ("http", "https") if development else ("https",)
    if parts.scheme not in schemes:
        raise UnsafeUrl("must start with https://" if not development else "must start with http:// or https://")
    host = parts.hostname
    if not host:
        raise UnsafeUrl("has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("must not carry a user name or password")
    if parts.fragment:
        raise UnsafeUrl("must not have a #fragment")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = resolver(host, port)
    except (OSError, UnicodeError):
        raise UnsafeUrl(f"names a host that does not resolve ({host})") from None
    if not addresses:
        raise UnsafeUrl(f"names a host that does not resolve ({host})")
    if not development:
        for address in addresses:
            if not is_public(address):
                raise UnsafeUrl(f"resolves to {address}, which is not a public address")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(url=url, scheme=parts.scheme, host=host, port=port, address=addresses[0], path=path)


def is_public(address: str) -> bool:
    """Whether a delivery may connect to this address (see the module's docstring)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # a scope (fe80::1%eth0) is link-local anyway
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or (ip.sixtofour if ip in _SIX_TO_FOUR else None)
        if ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.teredo:
            return False
        if embedded is not None:
            return is_public(str(embedded))
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_loopback
                                 or ip.is_link_local or ip.is_private)
