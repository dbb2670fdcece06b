"""The servers' commands as the README shows them: flags without `--`, and a taken port as one line naming it."""

import json
import os
import socket
import stat
import subprocess
import sys
import time
import urllib.request

import pytest

from creditq.cli import build_parser, main
from tests.support.ports import free_port


def _env(tmp_path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, CREDITQ_DATA_DIR=str(tmp_path / "data"), DATABASE_URL=f"sqlite:///{tmp_path / 'c.db'}",
               CREDITQ_ADMIN_KEY="test-operator-key-0123456789", **extra)
    env.pop("REDIS_URL", None)
    return env


@pytest.fixture
def taken_port():
    """A port some other process listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.mark.parametrize(("command", "knob", "setting"), [
    ("twilio-sim", ["--rate-429", "0.5"], {"rate_429": 0.5}),
    ("stripe-sim", ["--event-duplicates", "2"], {"event_duplicates": 2}),
])
def test_a_simulator_takes_its_port_and_knobs_without_a_double_dash(tmp_path, command, knob, setting):
    # given a free port
    port = free_port()

    # when the simulator starts with --port and a knob as plain flags
    process = subprocess.Popen([sys.executable, "-m", "creditq", command, "--port", str(port), *knob],
                               env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # then it serves on that port, with the knob set
        assert setting.items() <= _config_served(process, port).items()
    finally:
        process.terminate()
        process.wait(30)


def test_the_stripe_stand_ins_database_is_private(tmp_path):
    # given the loosest umask a host may have, and a free port
    port = free_port()

    # when the stand-in starts with its state in the data dir
    process = subprocess.Popen([sys.executable, "-m", "creditq", "stripe-sim", "--port", str(port)],
                               env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               umask=0)
    try:
        _config_served(process, port)

        # then its SQLite file and the write-ahead files beside it are the owner's alone
        data_dir = tmp_path / "data"
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        for name in ("stripe-sim.db", "stripe-sim.db-wal", "stripe-sim.db-shm"):
            assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
    finally:
        process.terminate()
        process.wait(30)


def _config_served(process: subprocess.Popen, port: int) -> dict:
    """The simulator's /_sim/config once it answers on `port` (the test fails if the process ends first)."""
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/config", timeout=1) as response:
                return json.load(response)
        except OSError:
            assert process.poll() is None, process.stderr.read()
            time.sleep(0.1)
    pytest.fail(f"the simulator never answered on port {port}")


@pytest.mark.parametrize(("command", "port_env", "setting"), [
    (["web"], "PORT", "PORT"),
    (["twilio-sim"], "CREDITQ_SIMULATOR_PORT", "CREDITQ_SIMULATOR_PORT"),
    (["stripe-sim"], "CREDITQ_STRIPE_SIM_PORT", "CREDITQ_STRIPE_SIM_PORT"),
    (["dev"], "PORT", "PORT"),
    (["dev"], "CREDITQ_SIMULATOR_PORT", "CREDITQ_SIMULATOR_PORT"),
    (["worker"], "CREDITQ_WORKER_METRICS_PORT", "CREDITQ_WORKER_METRICS_PORT"),
    (["dev"], "CREDITQ_WORKER_METRICS_PORT", "CREDITQ_WORKER_METRICS_PORT"),
])
def test_a_port_already_in_use_is_one_line_naming_it(tmp_path, taken_port, command, port_env, setting):
    # given another process listening on the port the command would use
    ports = {**free_ports(), port_env: str(taken_port)}

    # when the command starts
    result = subprocess.run([sys.executable, "-m", "creditq", *command], env=_env(tmp_path, **ports),
                            capture_output=True, text=True, timeout=120)

    # then it exits non-zero with one line naming the port and the setting that moves it, no traceback
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert lines[-1].startswith(f"creditq: port {taken_port} on 127.0.0.1 is already in use")
    assert setting in lines[-1] and "Traceback" not in result.stderr


def free_ports() -> dict[str, str]:
    return {setting: str(free_port()) for setting in ("PORT", "CREDITQ_SIMULATOR_PORT", "CREDITQ_STRIPE_SIM_PORT",
                                                      "CREDITQ_WORKER_METRICS_PORT", "CREDITQ_SCHEDULER_METRICS_PORT")}


def test_dev_names_every_port_in_use_in_its_one_line(tmp_path, taken_port):
    # given another process listening on two of the ports `creditq dev` would use
    with socket.socket() as second:
        second.bind(("127.0.0.1", 0))
        second.listen()
        other_port = second.getsockname()[1]
        ports = {**free_ports(), "CREDITQ_SIMULATOR_PORT": str(taken_port),
                 "CREDITQ_SCHEDULER_METRICS_PORT": str(other_port)}

        # when it starts
        result = subprocess.run([sys.executable, "-m", "creditq", "dev"], env=_env(tmp_path, **ports),
                                capture_output=True, text=True, timeout=120)

    # then one line names both, each with the setting that moves it, so one restart is enough
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert f"port {taken_port} on 127.0.0.1 is already in use" in lines[-1] and "CREDITQ_SIMULATOR_PORT" in lines[-1]
    assert f"port {other_port} on 127.0.0.1 is already in use" in lines[-1]
    assert "CREDITQ_SCHEDULER_METRICS_PORT" in lines[-1] and "Traceback" not in result.stderr


def test_the_stripe_stand_ins_usage_names_the_creditq_command(capsys):
    # when its help is asked for
    with pytest.raises(SystemExit):
        build_parser().parse_args(["stripe-sim", "--help"])

    # then the usage line is the command one types, with its flags
    usage = capsys.readouterr().out
    assert usage.startswith("usage: creditq stripe-sim ") and "--event-duplicates" in usage


@pytest.mark.parametrize(("flags", "reason"), [
    (["--event-failure-rate", "5"], "event_failure_rate: must be between 0 and 1"),
    (["--", "--event-loss-rate", "-0.5"], "event_loss_rate: must be between 0 and 1"),
    (["--event-duplicates", "-1"], "event_duplicates: must be >= 0"),
])
def test_a_stripe_stand_in_knob_out_of_range_says_what_it_takes(tmp_path, flags, reason):
    # when the stand-in is started with a knob it cannot use
    result = subprocess.run([sys.executable, "-m", "creditq", "stripe-sim", "--port", str(free_port()), *flags],
                            env=_env(tmp_path), capture_output=True, text=True, timeout=120)

    # then it exits 2 saying what the knob takes
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(reason)


@pytest.mark.parametrize("command", ["web", "twilio-sim", "stripe-sim"])
@pytest.mark.parametrize(("flags", "reason", "flag"), [
    (["--port", "99999"], "port 99999 is out of the port range 0-65535", "--port"),
    (["--host", "999.1.1.1"], "cannot listen on host '999.1.1.1'", "--host"),
    (["--host", "nosuchhost.invalid"], "cannot listen on host 'nosuchhost.invalid'", "--host"),
])
def test_an_address_it_cannot_listen_on_is_one_line_naming_the_flag(tmp_path, command, flags, reason, flag):
    # given a port or a host no server can listen on
    other_ports = {"PORT": str(free_port()), "CREDITQ_SIMULATOR_PORT": str(free_port()),
                   "CREDITQ_STRIPE_SIM_PORT": str(free_port())}

    # when the server is started on it
    result = subprocess.run([sys.executable, "-m", "creditq", command, *flags], env=_env(tmp_path, **other_ports),
                            capture_output=True, text=True, timeout=120)

    # then it exits 2 with one line saying why and naming the flag that chooses another, no traceback
    last_line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2, result.stderr
    assert last_line.startswith(f"creditq: {reason}") and flag in last_line and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["worker", "dev"])
def test_a_metrics_host_that_does_not_resolve_is_one_line_naming_its_setting(tmp_path, command):
    result = subprocess.run([sys.executable, "-m", "creditq", command], capture_output=True, text=True, timeout=120,
                            env=_env(tmp_path, CREDITQ_METRICS_HOST="nosuchhost.invalid", PORT=str(free_port()),
                                     CREDITQ_SIMULATOR_PORT=str(free_port())))

    last_line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2, result.stderr
    assert last_line.startswith("creditq: cannot listen on host 'nosuchhost.invalid'")
    assert "CREDITQ_METRICS_HOST" in last_line and "Traceback" not in result.stderr


NO_SUCH_POSTGRES = "postgresql+psycopg://creditq@127.0.0.1:1/creditq"  # never reached: the checks come first


@pytest.mark.parametrize(("flags", "database_url", "reason"), [
    (["--processes", "0"], NO_SUCH_POSTGRES, "--processes (CREDITQ_WEB_PROCESSES) must be between 1 and 256, got 0"),
    (["--processes", "10000"], NO_SUCH_POSTGRES, "--processes (CREDITQ_WEB_PROCESSES) must be between 1 and 256"),
    (["--processes", "2"], None, "--processes (CREDITQ_WEB_PROCESSES) above 1 needs PostgreSQL"),
    (["--processes", "2"], NO_SUCH_POSTGRES, "port {port} on 127.0.0.1 is already in use"),
])
def test_web_processes_it_cannot_run_are_one_line_saying_why(tmp_path, taken_port, flags, database_url, reason):
    # given the port another process listens on, and a database URL (None: the default SQLite file)
    env = _env(tmp_path, PORT=str(taken_port))
    if database_url is not None:
        env["DATABASE_URL"] = database_url

    # when the web is started as that many processes
    result = subprocess.run([sys.executable, "-m", "creditq", "web", *flags], env=env, capture_output=True, text=True,
                            timeout=120)

    # then it exits 2 with one line saying why, before any process is forked
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"creditq: {reason.format(port=taken_port)}")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("flags", "env", "reason"), [
    (["--processes", "100000"], {}, "--processes (CREDITQ_WORKER_PROCESSES) must be between 1 and 256, got 100000"),
    (["--processes", "0"], {}, "--processes (CREDITQ_WORKER_PROCESSES) must be between 1 and 256, got 0"),
    (["--processes", "-3"], {}, "--processes (CREDITQ_WORKER_PROCESSES) must be between 1 and 256, got -3"),
    (["--threads", "100000"], {}, "--threads (CREDITQ_WORKER_THREADS) must be between 1 and 256, got 100000"),
    (["--threads", "0"], {}, "--threads (CREDITQ_WORKER_THREADS) must be between 1 and 256, got 0"),
    ([], {"CREDITQ_WORKER_PROCESSES": "5000"}, "--processes (CREDITQ_WORKER_PROCESSES) must be between 1 and 256"),
])
def test_worker_processes_or_threads_it_cannot_run_are_one_line_saying_why(tmp_path, flags, env, reason):
    # when the worker is started with that many processes or threads
    result = subprocess.run([sys.executable, "-m", "creditq", "worker", *flags], env=_env(tmp_path, **env),
                            capture_output=True, text=True, timeout=120)

    # then it exits 2 with one line saying why, before any process is forked or Redis started
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"creditq: {reason}")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "redis").exists()


# dramatiq's process supervisor stood in for: what the worker processes it forks would inherit
_HANDED_OVER = """
import gc, json, sys
import dramatiq.cli
def handed_over(args):
    imported = [module for module in (args.broker, "twilio.rest.api.v2010.account") if module in sys.modules]
    print(json.dumps({"broker": args.broker, "imported": imported, "frozen": gc.get_freeze_count()}))
    return 0
dramatiq.cli.main = handed_over
from creditq.cli import main
sys.exit(main(["worker", "--processes", "2", "--threads", "1"]))
"""


def test_the_worker_processes_are_forked_with_the_actors_imported_and_out_of_the_collectors_reach(tmp_path):
    # given a worker whose Redis and metrics port are its own
    env = _env(tmp_path, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
               CREDITQ_WORKER_METRICS_PORT=str(free_port()))

    # when it hands over to dramatiq, which forks the worker processes
    result = subprocess.run([sys.executable, "-c", _HANDED_OVER], env=env, capture_output=True, text=True,
                            timeout=120)

    # then the broker module with every actor, and the twilio resources a send uses, are imported already, so the
    # processes share their pages, and their objects are frozen, so no collection in a process writes to (and
    # copies) them
    assert result.returncode == 0, result.stderr
    handed = json.loads(result.stdout.strip().splitlines()[-1])
    assert handed["imported"] == ["workers.process", "twilio.rest.api.v2010.account"]
    assert handed["frozen"] > 10_000


_FORKING_WEB = """
import gc, json, sys
from intake.prefork import Prefork
def forking(self):
    print(json.dumps({"processes": self.count, "imported": "intake.app" in sys.modules,
                      "frozen": gc.get_freeze_count()}))
    return 0
Prefork.run = forking
from creditq.cli import main
sys.exit(main(["web", "--processes", "2"]))
"""


def test_the_web_processes_are_forked_with_the_app_imported_and_out_of_the_collectors_reach(tmp_path):
    # given a web of two processes on a free port, with PostgreSQL's URL (nothing connects before the fork)
    env = {**_env(tmp_path, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", PORT=str(free_port())),
           "DATABASE_URL": NO_SUCH_POSTGRES}

    # when it hands over to the supervisor that forks them
    result = subprocess.run([sys.executable, "-c", _FORKING_WEB], env=env, capture_output=True, text=True, timeout=120)

    # then the app's modules are imported already, and frozen
    assert result.returncode == 0, result.stderr
    forking = json.loads(result.stdout.strip().splitlines()[-1])
    assert forking["processes"] == 2 and forking["imported"] and forking["frozen"] > 10_000


@pytest.mark.parametrize(("argv", "usage"), [
    (["report", "expiring", "--bogus"], "usage: creditq report expiring "),
    (["account", "mark-spam", "acct_1", "--bogus"], "usage: creditq account mark-spam "),
])
def test_a_flag_a_command_does_not_take_is_refused_with_that_commands_usage(capsys, argv, usage):
    # when a command is given a flag it does not take
    with pytest.raises(SystemExit) as exited:
        main(argv)

    # then it exits 2 with the command's own usage and a one-line reason naming the flag
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.startswith(usage)
    assert err.strip().splitlines()[-1].endswith("error: unrecognized arguments: --bogus")
