"""A throw-away RabbitMQ node for tests, from Debian's rabbitmq-server (`apt-get install rabbitmq-server`).

Each node runs as a child process with everything in its own temp dir (database, logs, plugins file, Erlang cookie
under HOME) on free ports and a unique node name, so every pytest-xdist worker can start its own beside the others.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pika
import pika.exceptions

from tests.support.ports import free_port

# Debian's /usr/sbin/rabbitmq-server switches to the `rabbitmq` user and its /var/lib directory; this is the script
# it runs, which takes its directories from the environment.
DEBIAN_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def find_server() -> Path:
    if DEBIAN_SERVER.exists():
        return DEBIAN_SERVER
    on_path = shutil.which("rabbitmq-server")
    if on_path is None:
        raise RuntimeError("no RabbitMQ server: apt-get install rabbitmq-server")
    return Path(on_path)


class TemporaryRabbitmq:
    """`with TemporaryRabbitmq() as server:` a node accepting AMQP on `server.url` (guest on 127.0.0.1)."""

    def __init__(self, *, start_timeout: float = 120.0):
        self.server = find_server()
        self.port, self.dist_port = free_port(), free_port()
        self.node_name = f"creditq-{uuid.uuid4().hex[:12]}@localhost"
        self.directory = Path(tempfile.mkdtemp(prefix="creditq-rabbitmq-"))
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def __enter__(self) -> "TemporaryRabbitmq":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        home = self.directory / "home"  # the Erlang cookie is made here
        home.mkdir()
        (self.directory / "enabled_plugins").write_text("[].\n")
        (self.directory / "rabbitmq.conf").write_text("")  # never the machine's /etc/rabbitmq/rabbitmq.conf
        env = {
            **os.environ,
            "HOME": str(home),
            "RABBITMQ_NODENAME": self.node_name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.directory / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.directory / "rabbitmq-env.conf"),  # absent: not the machine's
        }
        with open(self.directory / "server.log", "ab") as log:
            self.process = subprocess.Popen([str(self.server)], env=env, cwd=self.directory, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_until_accepting()

    def _wait_until_accepting(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        parameters = pika.URLParameters(self.url)
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                pika.BlockingConnection(parameters).close()
                return
            except pika.exceptions.AMQPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"rabbitmq-server did not accept AMQP within {self.start_timeout:.0f}s:\n"
                                   f"{self.log()[-3000:]}")
            time.sleep(0.5)

    def log(self) -> str:
        return (self.directory / "server.log").read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM: the script stops the node; SIGKILL to its process group if it has not within 30 s."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)
