"""The gateway's HTTP client reads the environment's proxies once, for the host it calls."""

import base64
import http.server
import threading

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


def test_requests_reach_the_path_they_name_on_its_own_host_and_on_any_other(monkeypatch):
    # given two local HTTP servers that answer with the path they were asked for, and no proxy
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)

    class EchoPath(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keeps the connection open between requests

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            answer = f"{self.server.server_port} {self.path} {body.decode()} {self.client_address[1]}".encode()
            self.send_response(201)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_args):
            pass

    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), EchoPath) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    home, other = (f"http://127.0.0.1:{server.server_port}" for server in servers)
    client = PooledHttpClient(api_base=home)
    try:
        # when it posts to its own host (twice, on one kept-alive connection) and to the other one
        answers = [client.request("POST", f"{home}/2010-04-01/Messages.json", params={"a": "1"}, data={"To": "+1"}),
                   client.request("POST", f"{home}/v1/x", data={"To": "+2"}),
                   client.request("POST", f"{other}/v2/y", data={"To": "+3"})]
        # and, once closed, to its own host again
        client.close()
        answers.append(client.request("POST", f"{home}/v1/z", data={"To": "+4"}))
    finally:
        client.close()
        for server in servers:
            server.shutdown()
            server.server_close()

    # then each reached the host and path it named, with its query and its form; the first two on one connection,
    # the last on a new one
    ports = [answer.text.rsplit(" ", 1)[1] for answer in answers]
    assert ports[0] == ports[1] and ports[3] != ports[0]
    assert [(answer.status_code, answer.text.rsplit(" ", 1)[0]) for answer in answers] == [
        (201, f"{home.rsplit(':', 1)[1]} /2010-04-01/Messages.json?a=1 To=%2B1"),
        (201, f"{home.rsplit(':', 1)[1]} /v1/x To=%2B2"),
        (201, f"{other.rsplit(':', 1)[1]} /v2/y To=%2B3"),
        (201, f"{home.rsplit(':', 1)[1]} /v1/z To=%2B4")]
