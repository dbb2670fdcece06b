"""The gateway's HTTP client reads the environment's proxies once, for the host it calls."""

import base64

import urllib3

from shared.twilio.gateway import PooledHttpClient


def test_a_proxy_the_environment_names_is_used_for_twilio(monkeypatch):
    # given an HTTPS proxy in the environment
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)

    # when the client for Twilio itself is made
    client = PooledHttpClient(api_base="https://api.twilio.com")

    # then its requests go through that proxy, read from the environment once
    assert client.proxy == {"https": "http://proxy.internal:3128"}
    assert isinstance(client.pool, urllib3.ProxyManager) and (client.pool.proxy.host, client.pool.proxy.port) == (
        "proxy.internal", 3128)


def test_a_host_the_environment_exempts_is_called_directly(monkeypatch):
    # given a proxy for everything but the local simulator
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")

    # when the client for the simulator is made, its requests use no proxy
    client = PooledHttpClient(api_base="http://127.0.0.1:8081")
    assert client.proxy == {} and not isinstance(client.pool, urllib3.ProxyManager)


def test_a_proxy_that_asks_for_a_login_gets_the_one_its_url_names(monkeypatch):
    # given a proxy URL with a user and a percent-encoded password, and one given as host:port alone
    monkeypatch.setenv("HTTPS_PROXY", "http://billing:p%40ss%3Aword@proxy.internal:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    signed_in = PooledHttpClient(api_base="https://api.twilio.com")
    monkeypatch.setenv("HTTPS_PROXY", "proxy.internal:3128")
    bare = PooledHttpClient(api_base="https://api.twilio.com")

    # then the first signs in to the proxy as requests would, and the second is taken as an http:// proxy
    assert signed_in.pool.proxy_headers == {"proxy-authorization": "Basic " + base64.b64encode(
        b"billing:p@ss:word").decode()}
    assert (bare.pool.proxy.scheme, bare.pool.proxy.host, bare.pool.proxy.port) == ("http", "proxy.internal", 3128)
