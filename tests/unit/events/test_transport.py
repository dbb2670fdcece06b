"""A delivery's POST is over when its timeout is, however the endpoint drips its answer."""

import socket
import threading
import time

import pytest

from shared.events.addresses import Target
from shared.events.transport import post

DRIPPED_FOR = 30.0  # seconds the endpoint would take to finish its answer


def dripping_endpoint(answer: bytes, *, at_once: int) -> tuple[Target, threading.Event]:
    """An endpoint on this host that reads the request, sends `at_once` bytes of `answer`, then drips the rest
    over DRIPPED_FOR seconds (each byte well inside any per-read timeout)."""
    server = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve():
        connection, _ = server.accept()
        with connection, server:
            connection.recv(65536)
            connection.sendall(answer[:at_once])
            pause = DRIPPED_FOR / max(len(answer) - at_once, 1)
            try:
                for byte in answer[at_once:]:
                    if done.wait(pause):
                        return
                    connection.sendall(bytes([byte]))
            except OSError:
                return  # cut off

    threading.Thread(target=serve, daemon=True).start()
    port = server.getsockname()[1]
    return Target(f"http://127.0.0.1:{port}/hooks", "http", "127.0.0.1", port, "127.0.0.1", "/hooks"), done


ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Padding: " + b"x" * 100 + b"\r\n\r\nok"


@pytest.mark.parametrize(("what", "at_once"), [("its headers", 0), ("its body", len(ANSWER) - 2)])
def test_an_endpoint_dripping_its_answer_is_cut_off_when_the_timeout_is_over(what, at_once):
    # given an endpoint that drips `what` a byte at a time, each sooner than the timeout, for 30 s in all
    target, done = dripping_endpoint(ANSWER, at_once=at_once)

    # when a delivery with a timeout of half a second is posted to it
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="no whole answer within 0.5 s"):
        post(target, "{}", {}, timeout=0.5)
    done.set()

    # then it gave up once the timeout was over, not after the whole drip (generously bounded: a loaded machine)
    assert time.monotonic() - started < DRIPPED_FOR / 3


def test_an_endpoint_answering_at_once_is_answered():
    target, _ = dripping_endpoint(ANSWER, at_once=len(ANSWER))
    answer = post(target, "{}", {}, timeout=5)
    assert (answer.status, answer.body) == (200, "ok")


def test_an_https_endpoint_that_never_finishes_its_handshake_is_cut_off_when_the_timeout_is_over():
    # given an endpoint that takes the connection and says nothing, so the TLS handshake never ends
    server = socket.create_server(("127.0.0.1", 0))
    taken = []
    threading.Thread(target=lambda: taken.append(server.accept()), daemon=True).start()
    port = server.getsockname()[1]
    target = Target(f"https://hooks.example.com:{port}/hooks", "https", "hooks.example.com", port, "127.0.0.1",
                    "/hooks")

    # when a delivery with a timeout of half a second is posted to it, then it gives up once that is over
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="no whole answer within 0.5 s"):
        post(target, "{}", {}, timeout=0.5)
    assert time.monotonic() - started < DRIPPED_FOR / 3
    server.close()
