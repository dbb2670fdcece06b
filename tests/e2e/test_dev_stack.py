"""`creditq dev` as a user runs it: the stack comes up on embedded defaults and Ctrl-C leaves nothing behind."""

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import urllib.request
from contextlib import closing

import psutil
import pytest

from tests.support.ports import free_port

pytestmark = pytest.mark.e2e


def _read_until(process: subprocess.Popen, marker: str, timeout: float) -> str:
    """What the process printed up to and including the line with `marker`."""
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if marker in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    assert found.wait(timeout), f"no {marker!r} within {timeout}s:\n{''.join(lines)}"
    return "".join(lines)


def _answers_200(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status == 200


def test_dev_starts_every_process_and_ctrl_c_stops_them_all(tmp_path):
    # given a fresh directory and free ports
    web_port, simulator_port, stripe_port = free_port(), free_port(), free_port()
    env = dict(os.environ, CREDITQ_DATA_DIR=str(tmp_path / ".creditq"), PORT=str(web_port),
               CREDITQ_SIMULATOR_PORT=str(simulator_port), CREDITQ_STRIPE_SIM_PORT=str(stripe_port))
    for name in ("DATABASE_URL", "REDIS_URL", "TWILIO_API_BASE", "CREDITQ_ADMIN_KEY", "CREDITQ_SECRET_KEY",
                 "PAYMENT_GATEWAY", "STRIPE_API_BASE"):
        env.pop(name, None)

    # when `creditq dev` runs
    # (under the usual umask 022, which alone would leave what it creates readable by everyone)
    dev = subprocess.Popen([sys.executable, "-m", "creditq", "dev"], cwd=tmp_path, env=env, umask=0o022,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = _read_until(dev, "Ctrl-C stops everything.", timeout=60)
        assert _answers_200(f"http://127.0.0.1:{web_port}/healthz")
        assert _answers_200(f"http://127.0.0.1:{simulator_port}/_sim/config")
        assert _answers_200(f"http://127.0.0.1:{stripe_port}/_sim/config")
        assert f"console      http://127.0.0.1:{web_port}/ " in banner
        assert _answers_200(f"http://127.0.0.1:{web_port}/")  # the console's sign-in form
        descendants = psutil.Process(dev.pid).children(recursive=True)
        names = " ".join(" ".join(child.cmdline()) for child in descendants)

        # then web, worker, scheduler, the Twilio simulator, the Stripe stand-in and Redis all run
        for part in ("creditq web", "creditq worker", "creditq scheduler", "creditq twilio-sim", "creditq stripe-sim",
                     "redis-server"):
            assert part in names
        # and what it keeps is its owner's alone: the data dir 0700, the database and the generated keys 0600
        data = tmp_path / ".creditq"
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for name in ("creditq.db", "admin_key", "secret_key"):
            assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
        # and the rate card and price list files are loaded as versions, as `creditq db upgrade` loads them
        with closing(sqlite3.connect(data / "creditq.db")) as database:
            assert sorted(database.execute("SELECT kind, version FROM price_versions")) == [
                ("price_list", 1), ("rate_card", 1)]

        # and Ctrl-C stops every one of them
        dev.send_signal(signal.SIGINT)
        output, _ = dev.communicate(timeout=60)
    finally:
        if dev.poll() is None:  # a failed test must not leave the stack behind: its children have their own groups
            for child in psutil.Process(dev.pid).children(recursive=True):
                child.kill()
            dev.kill()
    assert dev.returncode == 0, output
    gone, alive = psutil.wait_procs(descendants, timeout=10)
    assert alive == []
    assert "operator key" in banner and "curl" in banner
    assert not (tmp_path / ".creditq" / "redis" / "redis.sock").exists()


def test_closing_the_terminal_stops_every_process_of_dev(tmp_path):
    # given `creditq dev` running
    web_port, simulator_port = free_port(), free_port()
    env = dict(os.environ, CREDITQ_DATA_DIR=str(tmp_path / ".creditq"), PORT=str(web_port),
               CREDITQ_SIMULATOR_PORT=str(simulator_port), CREDITQ_STRIPE_SIM_PORT=str(free_port()))
    for name in ("DATABASE_URL", "REDIS_URL", "TWILIO_API_BASE", "CREDITQ_ADMIN_KEY", "CREDITQ_SECRET_KEY"):
        env.pop(name, None)
    dev = subprocess.Popen([sys.executable, "-m", "creditq", "dev"], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _read_until(dev, "Ctrl-C stops everything.", timeout=60)
        descendants = psutil.Process(dev.pid).children(recursive=True)

        # when its terminal goes away (SIGHUP)
        dev.send_signal(signal.SIGHUP)
        dev.communicate(timeout=60)
    finally:
        if dev.poll() is None:
            for child in psutil.Process(dev.pid).children(recursive=True):
                child.kill()
            dev.kill()

    # then nothing of the stack is left running
    gone, alive = psutil.wait_procs(descendants, timeout=10)
    assert alive == []
