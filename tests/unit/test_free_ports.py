"""free_port: the servers a test starts never draw a port another server of the suite was given."""

import socket

import pytest

from tests.support import ports


def test_a_process_is_never_handed_the_same_port_twice(monkeypatch):
    # given one worker's range, where 2,000 draws at random would meet a repeat all but surely
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.setattr(ports, "_handed_out", set())
    # when a suite's worth of stacks draw their ports, none of them binding yet
    drawn = [ports.free_port() for _ in range(2_000)]
    # then every port is another
    assert len(set(drawn)) == len(drawn)


def test_each_xdist_worker_draws_from_a_slice_of_its_own(monkeypatch):
    # given two workers of four
    monkeypatch.setattr(ports, "_handed_out", set())
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
    slices = {}
    for worker in ("gw0", "gw3"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        slices[worker] = ports.port_range()
        # when each draws a port, then it lies in that worker's slice
        low, high = slices[worker]
        assert low <= ports.free_port() < high
    # and the slices are a quarter each of the range below the ephemeral ports, apart
    (low0, high0), (low3, high3) = slices["gw0"], slices["gw3"]
    assert low0 == ports.LOWEST and high0 <= low3 and high3 <= ports._ephemeral_floor()
    assert high0 - low0 == high3 - low3 == (ports._ephemeral_floor() - ports.LOWEST) // 4


def test_a_port_in_use_is_passed_over(monkeypatch):
    # given every port of the range but one taken by a listening server
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.setattr(ports, "_handed_out", set())
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        taken = server.getsockname()[1]
        server.listen()
        monkeypatch.setattr(ports, "port_range", lambda: (taken, taken + 1))
        # when a port is asked for, then none is given rather than the one in use
        with pytest.raises(RuntimeError, match=f"between {taken} and {taken + 1} "):
            ports.free_port()
