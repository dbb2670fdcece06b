"""Where a webhook may point: outside development, https to public addresses only, whatever the name resolves to."""

import pytest

from shared.events.addresses import UnsafeUrl, check_url, is_public

HOSTILE = [
    "127.0.0.1", "127.1.2.3",  # loopback
    "10.0.0.1", "172.16.5.4", "192.168.1.1",  # private
    "169.254.169.254", "169.254.1.1",  # link-local: the cloud metadata service
    "100.64.0.1",  # shared address space (carrier NAT)
    "0.0.0.0", "255.255.255.255", "224.0.0.1", "240.0.0.1",  # unspecified, broadcast, multicast, reserved
    "192.0.2.10", "198.18.0.1",  # documentation, benchmarking
    "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1", "ff02::1", "2001:db8::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",  # IPv4 mapped into IPv6
    "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1",  # NAT64 of the metadata service and of loopback
    "2002:7f00:1::1", "2002:a9fe:a9fe::1",  # 6to4 of loopback and of the metadata service
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
]


def resolving_to(*addresses):
    return lambda host, port: list(addresses)


@pytest.mark.parametrize("address", HOSTILE)
def test_a_host_resolving_to_a_hostile_address_is_refused_outside_development(address):
    # given a name whose DNS answer is that address, among public ones
    resolver = resolving_to("93.184.215.14", address)
    # when an endpoint is saved (or a delivery made) with it, then it is refused, naming the address
    with pytest.raises(UnsafeUrl) as refused:
        check_url("https://hooks.example.com/creditq", development=False, resolver=resolver)
    assert refused.value.errors == {"url": f"resolves to {address}, which is not a public address"}
    assert not is_public(address)


@pytest.mark.parametrize("literal", ["https://127.0.0.1/hook", "https://[::1]/hook", "https://169.254.169.254/latest",
                                     "https://2130706433/hook", "https://0x7f.0.0.1/hook", "https://localhost/hook",
                                     "https://[::ffff:7f00:1]/hook"])
def test_addresses_written_into_the_url_are_refused_through_the_real_resolver(literal):
    with pytest.raises(UnsafeUrl):
        check_url(literal, development=False)


@pytest.mark.parametrize("url, reason", [
    ("http://hooks.example.com/creditq", "must start with https://"),
    ("ftp://hooks.example.com/creditq", "must start with https://"),
    ("https://user:pw@hooks.example.com/creditq", "must not carry a user name or password"),
    ("https:///creditq", "has no host"),
    ("https://hooks.example.com:99999/creditq", "is not a valid URL"),
    ("https://hooks.example.com/creditq#x", "must not have a #fragment"),
    ("https://hooks.example.com/x\r\nX: y", "must not contain spaces or control characters (percent-encode them)"),
    ("https://hooks.example.com/a\tb", "must not contain spaces or control characters (percent-encode them)"),
    ("https://hooks.example.com/a b", "must not contain spaces or control characters (percent-encode them)"),
    ("https://hooks.example.com/\x00", "must not contain spaces or control characters (percent-encode them)"),
    ("https://hooks.example.com/café", "must be ASCII: percent-encode the path and query, and write an international "
                                      "host in its xn-- form"),
    ("https://bücher.example/hook", "must be ASCII: percent-encode the path and query, and write an international "
                                   "host in its xn-- form"),
])
def test_malformed_or_plain_http_urls_are_refused_outside_development(url, reason):
    with pytest.raises(UnsafeUrl) as refused:
        check_url(url, development=False, resolver=resolving_to("93.184.215.14"))
    assert refused.value.errors == {"url": reason}


def test_a_host_that_does_not_resolve_is_refused():
    def nowhere(host, port):
        raise OSError("Name or service not known")

    with pytest.raises(UnsafeUrl) as refused:
        check_url("https://nowhere.example/creditq", development=False, resolver=nowhere)
    assert refused.value.errors == {"url": "names a host that does not resolve (nowhere.example)"}


def test_a_public_https_url_gives_the_checked_address_to_connect_to():
    target = check_url("https://hooks.example.com:8443/in?tenant=7", development=False,
                       resolver=resolving_to("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"))
    assert (target.scheme, target.host, target.port, target.path) == ("https", "hooks.example.com", 8443, "/in?tenant=7")
    assert target.address == "93.184.215.14"  # the resolver's first answer


def test_in_development_a_receiver_on_this_machine_over_http_is_taken():
    target = check_url("http://127.0.0.1:9000/hook", development=True)
    assert (target.scheme, target.address, target.port, target.path) == ("http", "127.0.0.1", 9000, "/hook")
