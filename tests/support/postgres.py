"""A throw-away PostgreSQL cluster for tests and benchmarks, from the server binaries on this machine."""

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from tests.support.ports import free_port

# settings= for a server whose statements a bench reads back (pg_stat_statements): functions' inner statements too
STATEMENT_STATISTICS = {"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "all"}


def find_bin_dir() -> Path:
    """initdb and pg_ctl: CREDITQ_POSTGRES_BIN, PATH, Debian's directories, else the pgserver wheel's own build."""
    if os.environ.get("CREDITQ_POSTGRES_BIN"):
        return Path(os.environ["CREDITQ_POSTGRES_BIN"])
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    try:
        import pgserver
    except ImportError:
        raise RuntimeError("no PostgreSQL server binaries: pip install pgserver, or apt-get install postgresql") from None
    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def _server_user() -> pwd.struct_passwd:
    """PostgreSQL refuses to run as root: use the `postgres` account, or make a system user for it."""
    for name in ("postgres", "creditq-pg"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "creditq-pg"],
                   check=True, capture_output=True)
    return pwd.getpwnam("creditq-pg")


class TemporaryPostgres:
    """initdb + pg_ctl in a temp dir; as root the server runs as the `postgres` system user."""

    def __init__(self, *, max_connections: int = 300, settings: dict[str, str] | None = None):
        self.bin_dir = find_bin_dir()
        self.max_connections = max_connections
        self.settings = settings or {}  # more server settings, e.g. pg_stat_statements for a bench
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="creditq-pg-"))
        self.data = self.directory / "data"
        self._run_as = None
        if os.geteuid() == 0:
            self._run_as = _server_user()
            os.chown(self.directory, self._run_as.pw_uid, self._run_as.pw_gid)

    def _command(self, *args: str) -> list[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self._run_as is not None:
            return ["runuser", "-u", self._run_as.pw_name, "--", *command]
        return command

    @property
    def postmaster_pid(self) -> int:
        """The running server's postmaster (its backends are its children)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> "TemporaryPostgres":
        subprocess.run(self._command("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                                     "--no-sync", "-E", "UTF8"), check=True, capture_output=True)
        return self.start_server()

    def start_server(self) -> "TemporaryPostgres":
        """pg_ctl start on the cluster's data dir and port, once it takes connections."""
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{self.directory}'"
                   f" -c max_connections={self.max_connections} -c fsync=off -c synchronous_commit=off"
                   f" -c full_page_writes=off -c shared_buffers=256MB"
                   + "".join(f" -c {name}={value}" for name, value in self.settings.items()))
        subprocess.run(self._command("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                                     str(self.directory / "server.log"), "-w", "start"),
                       check=True, capture_output=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres").close()
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def create_database(self, name: str) -> str:
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def dump(self, name: str, *, archive: bool = False) -> bytes:
        """pg_dump of one database (data and schema), as SQL or (`archive`) in pg_dump's custom format, which
        pg_restore reads."""
        return subprocess.run([self._client("pg_dump"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                               *(["--format=custom"] if archive else []), name],
                              check=True, capture_output=True).stdout

    def restore(self, name: str, archive: bytes) -> None:
        """pg_restore a custom-format dump into the existing database `name`; any error fails it."""
        subprocess.run([self._client("pg_restore"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                        "--no-owner", "--exit-on-error", "-d", name], input=archive, check=True, capture_output=True)

    def _client(self, program: str) -> str:
        """A client program beside the server binaries, else on PATH."""
        beside = self.bin_dir / program
        command = str(beside) if beside.exists() else shutil.which(program)
        if command is None:
            raise RuntimeError(f"no {program} beside {self.bin_dir} or on PATH")
        return command

    def stop_server(self) -> None:
        """A restart's first half, keeping the data: pg_ctl's fast stop, which ends every session (their transactions
        roll back) and writes out what was committed, as an operator's restart does."""
        subprocess.run(self._command("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop"), check=True,
                       capture_output=True)

    def stop(self) -> None:
        subprocess.run(self._command("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop"),
                       capture_output=True)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "TemporaryPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
