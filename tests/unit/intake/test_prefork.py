"""The web's process supervisor: children that fail at start stop it, SIGTERM stops every child, and no child
outlives a parent killed -9. Each case runs the supervisor in a process of its own, as `creditq web` does."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

SUPERVISOR = textwrap.dedent("""
    import logging, os, signal, sys, time
    from intake.prefork import Prefork

    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def serve():
        os.write(1, f"{os.getpid()}\\n".encode())  # one write: the two children share the pipe
        if sys.argv[1] == "fail":
            raise RuntimeError("no database")
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))  # as the web drains, then returns
        while not stopping:
            time.sleep(0.05)

    sys.exit(Prefork(2, serve).run())
""")


@pytest.fixture
def start():
    """Starts a supervisor (`mode`: "serve" or "fail"; `wrapper`: a command to run it under); whatever of it is left
    after the test is killed."""
    started: list[subprocess.Popen] = []

    def supervisor(mode: str, wrapper: tuple[str, ...] = ()) -> subprocess.Popen:
        process = subprocess.Popen([*wrapper, sys.executable, "-c", SUPERVISOR, mode], cwd=ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
        started.append(process)
        return process

    yield supervisor
    for process in started:
        with contextlib.suppress(psutil.NoSuchProcess):
            for left in [*psutil.Process(process.pid).children(recursive=True), psutil.Process(process.pid)]:
                left.kill()
        process.communicate(timeout=30)


def children_of(parent: subprocess.Popen) -> list[int]:
    return [int(parent.stdout.readline()) for _ in range(2)]


def gone(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_children_failing_at_start_stop_the_supervisor_with_status_1(start):
    # when every child fails as it starts (a database it cannot reach)
    supervisor = start("fail")
    _, errors = supervisor.communicate(timeout=60)

    # then the supervisor stops the others and exits 1, saying which child failed and when, instead of forking
    # replacements forever
    assert supervisor.returncode == 1
    assert "exited with status 1" in errors and "after it started; stopping the others" in errors
    assert "starting another" not in errors


def test_sigterm_stops_every_child_and_the_supervisor_exits_0(start):
    # given a supervisor with two children serving
    supervisor = start("serve")
    children = children_of(supervisor)

    # when it is told to stop
    supervisor.send_signal(signal.SIGTERM)

    # then each child is told too, and the supervisor exits 0 once both have
    assert supervisor.wait(timeout=30) == 0
    assert all(gone(pid) for pid in children)


def test_a_child_killed_is_replaced(start):
    # given a supervisor with two children serving
    supervisor = start("serve")
    first, second = children_of(supervisor)

    # when one is killed -9
    os.kill(first, signal.SIGKILL)

    # then a third takes its place, and the other serves on
    third = int(supervisor.stdout.readline())
    assert third not in (first, second) and not gone(second, timeout=0.5)
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=30) == 0


def test_no_child_outlives_a_supervisor_killed_9(start):
    # given a supervisor with two children serving
    supervisor = start("serve")
    children = children_of(supervisor)

    # when the supervisor itself is killed -9
    supervisor.kill()
    supervisor.wait(timeout=30)

    # then both children are told to stop by the kernel, and do
    assert all(gone(pid) for pid in children)


NEW_PID_NAMESPACE = ("unshare", "--pid", "--fork", "--mount-proc")  # the supervisor is its pid 1, as in a container


@pytest.mark.skipif(subprocess.run([*NEW_PID_NAMESPACE, "true"], capture_output=True).returncode != 0,
                    reason="no new pid namespace here (unshare needs root or user namespaces)")
def test_a_supervisor_that_is_pid_1_keeps_its_children_serving(start):
    # given a supervisor run as pid 1, as a container's entrypoint is, whose children's parent is therefore pid 1
    wrapped = start("serve", NEW_PID_NAMESPACE)
    children_of(wrapped)
    supervisor = psutil.Process(wrapped.pid).children()[0]

    # then both children go on serving (a parent of pid 1 is not a parent gone)
    time.sleep(1)
    assert len(supervisor.children()) == 2 and wrapped.poll() is None

    # and a SIGTERM stops them all, cleanly
    supervisor.send_signal(signal.SIGTERM)
    assert wrapped.wait(timeout=30) == 0
