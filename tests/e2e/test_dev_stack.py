"""`creditq dev` as a user runs it: the stack comes up on embedded defaults and Ctrl-C leaves nothing behind."""

import os
import signal
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from tests.support.ports import free_port

pytestmark = pytest.mark.e2e


def _wait_for(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise AssertionError(f"{url} did not answer 200 within {timeout}s")


def test_dev_starts_every_process_and_ctrl_c_stops_them_all(tmp_path):
    # given a fresh directory and free ports
    web_port, simulator_port = free_port(), free_port()
    env = dict(os.environ, CREDITQ_DATA_DIR=str(tmp_path / ".creditq"), PORT=str(web_port),
               CREDITQ_SIMULATOR_PORT=str(simulator_port))
    for name in ("DATABASE_URL", "REDIS_URL", "TWILIO_API_BASE", "CREDITQ_ADMIN_KEY"):
        env.pop(name, None)

    # when `creditq dev` runs
    dev = subprocess.Popen([sys.executable, "-m", "creditq", "dev"], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(f"http://127.0.0.1:{web_port}/healthz", dev, timeout=60)
        _wait_for(f"http://127.0.0.1:{simulator_port}/_sim/config", dev, timeout=30)
        descendants = psutil.Process(dev.pid).children(recursive=True)
        names = " ".join(" ".join(child.cmdline()) for child in descendants)

        # then web, worker, scheduler, the simulator and Redis all run
        for part in ("creditq web", "creditq worker", "creditq scheduler", "creditq twilio-sim", "redis-server"):
            assert part in names
        assert (tmp_path / ".creditq" / "creditq.db").exists()

        # and Ctrl-C stops every one of them
        dev.send_signal(signal.SIGINT)
        output, _ = dev.communicate(timeout=60)
    finally:
        if dev.poll() is None:
            dev.kill()
    assert dev.returncode == 0, output
    gone, alive = psutil.wait_procs(descendants, timeout=10)
    assert alive == []
    assert "operator key" in output and "curl" in output
    assert not (tmp_path / ".creditq" / "redis" / "redis.sock").exists()
