"""The creditq processes a bench starts as a user would (`python -m creditq ...`), each in its own session, and
the machine's load while they run (every figure is printed beside it)."""

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent


def spawn(env: dict, directory: str, *command: str) -> subprocess.Popen:
    """`creditq <command>` with its output in <directory>/<command>.log; its own session, so it can be killed whole."""
    log = open(Path(directory) / f"{command[0]}.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "creditq", *command], env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def wait_for(url: str, timeout: float = 30.0) -> None:
    """Until `url` answers 200; RuntimeError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def percentile(values: list[float], share: float) -> float:
    """The value `share` (0.5, 0.99) of the way through `values` sorted (nearest rank); nan when there are none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


class LoadAverage(threading.Thread):
    """The highest 1-minute load average seen while running (sampled twice a second); stop with `running = False`."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = os.getloadavg()[0]
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, os.getloadavg()[0])
            time.sleep(0.5)


def own_cpu_seconds() -> float:
    """This process's CPU alone, all its threads (cpu_seconds of its pid would count the PostgreSQL it started too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_seconds(pid: int) -> float:
    """CPU a process and its whole tree have used so far: the living ones, and children already reaped."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in tree:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def profile(pid: int, output: Path) -> subprocess.Popen:
    """py-spy sampling a process and its children (only threads holding the GIL) until SIGINT; collapsed
    stacks to `output`."""
    py_spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(py_spy), "record", "--gil", "--format", "raw", "--rate", "200", "--nonblocking",
                             "--subprocesses", "--output", str(output), "--pid", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiling(profilers: list[subprocess.Popen]) -> None:
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    for profiler in profilers:
        profiler.wait()
