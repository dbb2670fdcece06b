"""The real creditq processes (web, worker, Twilio simulator, Stripe stand-in) on a fresh PostgreSQL database and a real Redis,
the jobs queued on that Redis or on a RabbitMQ node (`amqp_url`, CREDITQ_BROKER=rabbitmq).

Used by tests/e2e and bench/: each process is started as a user would (`python -m creditq ...`), in its
own process group, so it and its children can be killed -9 or stopped together. Without a PostgreSQL
server the stack runs on a SQLite file in its data dir, as `creditq dev` does. Every process writes its
output to `<name>.log` in the stack's directory (`log`, `logs`).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dramatiq
import requests

from shared.broker import broker_for
from shared.embedded_redis import EmbeddedRedis
from tests.support.ports import free_port

ADMIN_KEY = "e2e-operator-key-0123456789abcdef"
SECRET_KEY = "3Ixpz7tWvY2bqJw3GsWk0M9cB2f5pVh8lQeTjR1nXoA="  # CREDITQ_SECRET_KEY of the stacks and the test session
ROOT = Path(__file__).resolve().parents[2]


def libfaketime() -> Path:
    """Debian's libfaketime (package `libfaketime`, which `faketime` pulls in), wherever the architecture puts it."""
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    if not found:
        raise RuntimeError("libfaketime is not installed: apt-get install faketime")
    return found[0]


class Stack:
    """`with Stack(postgres_server, tmp_dir) as stack:` — everything torn down on exit; None: on SQLite."""

    def __init__(self, postgres_server, directory: Path, *, database_name: str = "e2e", worker_processes: int = 2,
                 worker_threads: int = 8, env: dict[str, str] | None = None, amqp_url: str | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.postgres_server = postgres_server
        self.database_name = database_name
        self.worker_processes = worker_processes
        self.worker_threads = worker_threads
        self.web_port, self.simulator_port, self.stripe_port = free_port(), free_port(), free_port()
        self.worker_metrics_port = free_port()
        self.redis = EmbeddedRedis(self.directory / "redis")
        self.extra_env = env or {}
        self.broker_env = ({"CREDITQ_BROKER": "rabbitmq", "AMQP_URL": amqp_url} if amqp_url
                           else {"CREDITQ_BROKER": "redis"})
        self.processes: dict[str, subprocess.Popen] = {}
        self.env: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def simulator_url(self) -> str:
        return f"http://127.0.0.1:{self.simulator_port}"

    @property
    def stripe_url(self) -> str:
        return f"http://127.0.0.1:{self.stripe_port}"

    def __enter__(self) -> "Stack":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.redis.start()
        if self.postgres_server is not None:
            self.database_url = self.postgres_server.create_database(self.database_name)
        else:
            self.database_url = f"sqlite:///{self.sqlite_path}"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis.url,
            "TWILIO_API_BASE": self.simulator_url,
            "PUBLIC_BASE_URL": self.url,
            "PORT": str(self.web_port),
            "CREDITQ_SIMULATOR_PORT": str(self.simulator_port),
            "CREDITQ_STRIPE_SIM_PORT": str(self.stripe_port),
            "PAYMENT_GATEWAY": "stripe",
            "CREDITQ_ENV": "development",  # the stand-ins' well-known secrets, receivers on this machine
            "CREDITQ_ADMIN_KEY": ADMIN_KEY,
            "CREDITQ_SECRET_KEY": SECRET_KEY,
            "CREDITQ_DATA_DIR": str(self.directory / "data"),
            **self.broker_env,
            "CREDITQ_WORKER_METRICS_PORT": str(self.worker_metrics_port),
            "CREDITQ_SCHEDULER_METRICS_PORT": str(free_port()),
            **self.extra_env,
        }
        with open(self.directory / "db-upgrade.log", "ab") as log:
            subprocess.run([sys.executable, "-m", "creditq", "db", "upgrade"], env=self.env, cwd=ROOT, check=True,
                           stdout=log, stderr=subprocess.STDOUT)
        self._spawn("twilio-sim", "twilio-sim")
        self.start_stripe_sim()
        self._spawn("web", "web")
        self.start_worker()
        self._wait_for(f"{self.url}/healthz", "web")
        self._wait_for(f"{self.simulator_url}/_sim/messages", "twilio-sim")
        self._wait_for(f"{self.stripe_url}/_sim/config", "stripe-sim")

    def start_web(self, name: str, *, clock: str | None = None) -> str:
        """Another `creditq web` on the same database and Redis, on a port of its own; its URL. `clock`: its clock
        set off the machine's by Debian's libfaketime (`"+2m"`, `"-2m"`)."""
        port = free_port()
        self._spawn(name, "web", env={"PORT": str(port)}, clock=clock)
        url = f"http://127.0.0.1:{port}"
        self._wait_for(f"{url}/healthz", name)
        return url

    def start_scheduler(self, name: str = "scheduler", *, clock: str | None = None) -> str:
        """A `creditq scheduler` (its sweeps every 15 s and the billing calendar; the stack runs none until asked),
        once its metrics server answers; that server's URL. `clock` as for start_web."""
        port = free_port()
        self._spawn(name, "scheduler", env={"CREDITQ_SCHEDULER_METRICS_PORT": str(port)}, clock=clock)
        url = f"http://127.0.0.1:{port}/metrics"
        self._wait_for(url, name)
        return url

    def start_worker(self, name: str = "worker", *, clock: str | None = None, env: dict[str, str] | None = None) -> None:
        """A `creditq worker`; one named other than "worker" serves its metrics on a port of its own. `clock` as for
        start_web; `env` is added to the stack's for it alone."""
        own = {} if name == "worker" else {"CREDITQ_WORKER_METRICS_PORT": str(free_port())}
        self._spawn(name, "worker", "--processes", str(self.worker_processes), "--threads", str(self.worker_threads),
                    env={**own, **(env or {})}, clock=clock)

    def start_stripe_sim(self) -> None:
        """The Stripe stand-in; its state (a SQLite file in the data dir) outlives a kill."""
        self._spawn("stripe-sim", "stripe-sim")

    def kill_stripe_sim(self) -> None:
        """kill -9 the Stripe stand-in, mid-request or not."""
        self.kill("stripe-sim")

    def restart_stripe_sim(self) -> None:
        self.start_stripe_sim()
        self._wait_for(f"{self.stripe_url}/_sim/config", "stripe-sim")

    def kill_worker(self) -> None:
        """kill -9 the worker's whole process group: the parent and every forked worker process."""
        self.kill("worker")

    def kill(self, name: str) -> None:
        """kill -9 the named process's whole group, mid-whatever it was doing."""
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop_scheduler(self, name: str = "scheduler") -> None:
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)

    def stop_redis(self) -> None:
        """Stop the stack's Redis (no persistence): its queued jobs, the scheduler lease, throttles and rate limits
        go with it; the processes keep running."""
        self.redis.stop()

    def start_redis(self) -> None:
        """A fresh, empty Redis on the same socket, as after a restart without persistence."""
        self.redis.start()

    def broker(self) -> dramatiq.Broker:
        """A client-side broker like the processes', to enqueue by actor name without importing the actors."""
        return broker_for(self.env, install=False)

    def enqueue(self, broker: dramatiq.Broker, actor_name: str, *args, queue_name: str = "default") -> None:
        broker.enqueue(dramatiq.Message(queue_name=queue_name, actor_name=actor_name, args=args, kwargs={},
                                        options={}))

    def stop(self) -> None:
        for name, process in reversed(list(self.processes.items())):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in self.processes.values():
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()
        self.redis.stop()

    @property
    def sqlite_path(self) -> Path:
        return self.directory / "data" / "creditq.db"

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")

    def logs(self) -> dict[str, str]:
        """Everything every process of the stack has written so far, by process name (and `redis`)."""
        paths = sorted(self.directory.glob("*.log")) + sorted(self.directory.glob("redis/*.log"))
        return {path.stem if path.parent == self.directory else path.parent.name: path.read_text(errors="replace")
                for path in paths}

    def dump(self) -> bytes:
        """What someone who copies the database gets: pg_dump's SQL, or the SQLite file with its WAL and shm."""
        if self.postgres_server is not None:
            return self.postgres_server.dump(self.database_name)
        parts = [self.sqlite_path.with_name(self.sqlite_path.name + suffix) for suffix in ("", "-wal", "-shm")]
        return b"".join(part.read_bytes() for part in parts if part.exists())

    def _spawn(self, name: str, *command: str, env: dict[str, str] | None = None, cwd: Path = ROOT,
               clock: str | None = None) -> None:
        """Start `creditq <command>`; with `clock`, under libfaketime (its forked children too), only the wall clock
        off (tests/support/faketime/sitecustomize.py says why the monotonic clock stays the machine's).

        The library is preloaded directly, not through the `faketime` wrapper: the wrapper makes a semaphore and a
        shared-memory segment named by its pid, which a kill -9 leaves in /dev/shm, and a later wrapper given the same
        pid then refuses to start ("sem_open: File exists")."""
        log = open(self.directory / f"{name}.log", "ab")
        clock_env = {"LD_PRELOAD": str(libfaketime()), "FAKETIME": clock, "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                     "PYTHONPATH": f"{ROOT / 'tests' / 'support' / 'faketime'}:{self.env['PYTHONPATH']}"} if clock else {}
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "creditq", *command], env={**self.env, **clock_env, **(env or {})}, cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()

    def _wait_for(self, url: str, name: str, timeout: float = 90.0) -> None:
        """Until `url` answers 200. The bound is for a process that never will, not a speed check: on a machine busy
        with the other test workers' stacks a start has taken over 30 s, and one slow answer is waited for."""
        deadline = time.monotonic() + timeout
        last = "nothing yet"
        while True:
            if self.processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited with {self.processes[name].returncode}:\n{self._log_ends(name)}")
            try:
                response = requests.get(url, timeout=10)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except requests.RequestException as error:
                last = repr(error)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer {url} within {timeout:.0f}s (last: {last}):\n"
                                   f"{self._log_ends(name)}")
            time.sleep(0.1)

    def _log_ends(self, name: str) -> str:
        """The start of a process's log (what it said while starting) and its end."""
        text = self.log(name)
        return text if len(text) <= 5000 else f"{text[:2000]}\n[...]\n{text[-3000:]}"
