"""set_cpu_priority: background processes step back from the CPU and the web steps forward, session autogroup
included."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared import cpu_priority
from tests.support.priority import can_step_forward_to

HAS_AUTOGROUP = Path("/proc/self/autogroup").exists()
REPORT = ("import os, sys; from pathlib import Path; from shared.cpu_priority import set_cpu_priority; "
          "os.nice(int(sys.argv[2])); set_cpu_priority(int(sys.argv[1])); "
          "group = Path('/proc/self/autogroup'); "
          "print(os.getpriority(os.PRIO_PROCESS, 0), group.read_text().split()[-1] if group.exists() else '-')")


def run_in_process(nice: int, *, already: int = 0) -> tuple[int, str]:
    """(the process's nice, its autogroup's nice or '-') after set_cpu_priority(nice) in a fresh process that
    leads a session of its own, as every creditq process does, and that started at nice `already`."""
    result = subprocess.run([sys.executable, "-c", REPORT, str(nice), str(already)], capture_output=True, text=True,
                            start_new_session=True, cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert result.returncode == 0, result.stderr
    process_nice, group_nice = result.stdout.split()
    return int(process_nice), group_nice


def test_a_process_leading_its_session_runs_at_the_nice_and_so_does_its_autogroup():
    # When a process in a session of its own lowers its priority to 7
    process_nice, group_nice = run_in_process(7)
    # Then it runs at nice 7, and its session's autogroup too, where the kernel has them
    assert process_nice == 7
    assert group_nice == ("7" if HAS_AUTOGROUP else "-")


CAN_STEP_FORWARD = can_step_forward_to(-12)  # the furthest these tests go


@pytest.mark.skipif(not CAN_STEP_FORWARD, reason="stepping forward needs CAP_SYS_NICE or RLIMIT_NICE")
def test_a_process_with_the_right_to_steps_forward_and_so_does_its_autogroup():
    # When a process in a session of its own, allowed to (CAP_SYS_NICE), raises its priority to nice -5
    process_nice, group_nice = run_in_process(-5)
    # Then it runs at -5, and its session's autogroup too
    assert process_nice == -5
    assert group_nice == ("-5" if HAS_AUTOGROUP else "-")


@pytest.mark.parametrize(("nice", "already", "expected", "expected_group"), [
    (0, 0, 0, "0"),
    (5, 12, 12, "5"),
    pytest.param(-5, -12, -12, "-5", marks=pytest.mark.skipif(not CAN_STEP_FORWARD, reason="needs CAP_SYS_NICE")),
])
def test_zero_changes_nothing_and_a_process_already_further_stays_there(nice, already, expected, expected_group):
    # When a process at nice `already` moves its priority to `nice`
    process_nice, group_nice = run_in_process(nice, already=already)
    # Then it never runs nearer 0 than it did; the autogroup, which a plain nice leaves at 0, takes `nice`
    assert process_nice == expected
    assert group_nice == (expected_group if HAS_AUTOGROUP else "-")


def test_the_call_in_this_process_at_zero_does_nothing():
    before = os.getpriority(os.PRIO_PROCESS, 0)
    cpu_priority.set_cpu_priority(0)
    assert os.getpriority(os.PRIO_PROCESS, 0) == before


class RateLimitedAutogroup:
    """/proc/self/autogroup as the kernel answers a process without CAP_SYS_ADMIN when another session changed its
    autogroup less than 100 ms ago: EAGAIN, `busy` times, then the write goes through."""

    def __init__(self, busy: int):
        self.busy, self.written = busy, []

    def read_text(self) -> str:
        return "/autogroup-1 nice 0"

    def write_text(self, text: str) -> None:
        if self.busy:
            self.busy -= 1
            raise BlockingIOError(11, "Resource temporarily unavailable")
        self.written.append(text)


@pytest.fixture
def session_leader(monkeypatch):
    """This process as a session leader whose own nice is left alone: only the autogroup's writes are seen."""
    monkeypatch.setattr(cpu_priority.os, "getsid", lambda _pid: os.getpid())
    monkeypatch.setattr(cpu_priority.os, "setpriority", lambda *_args: None)


def test_a_worker_started_with_others_waits_for_the_kernels_turn_to_lower_its_autogroup(session_leader, monkeypatch,
                                                                                         caplog):
    # Given an autogroup that refuses twice (another worker's session changed its own a moment ago)
    autogroup = RateLimitedAutogroup(busy=2)
    monkeypatch.setattr(cpu_priority, "AUTOGROUP", autogroup)
    # When the worker lowers its priority
    cpu_priority.set_cpu_priority(10)
    # Then it tried again until the kernel took it, and said nothing alarming
    assert autogroup.written == ["10"]
    assert not [record for record in caplog.records if record.levelname == "WARNING"]


def test_an_autogroup_the_kernel_keeps_refusing_is_reported(session_leader, monkeypatch, caplog):
    autogroup = RateLimitedAutogroup(busy=100)
    monkeypatch.setattr(cpu_priority, "AUTOGROUP", autogroup)
    monkeypatch.setattr(cpu_priority.time, "sleep", lambda _seconds: None)
    cpu_priority.set_cpu_priority(10)
    assert autogroup.written == []
    assert any("could not set the scheduler autogroup to nice 10" in record.getMessage()
               for record in caplog.records if record.levelname == "WARNING")


def test_a_process_that_does_not_lead_its_session_leaves_the_sessions_autogroup_alone(monkeypatch):
    # Given a process in a session another process leads
    monkeypatch.setattr(cpu_priority.os, "getsid", lambda _pid: os.getpid() + 1)
    monkeypatch.setattr(cpu_priority.os, "setpriority", lambda *args: niced.append(args[2]))
    niced, autogroup = [], RateLimitedAutogroup(busy=0)
    monkeypatch.setattr(cpu_priority, "AUTOGROUP", autogroup)
    # When it lowers its priority
    cpu_priority.set_cpu_priority(7)
    # Then it runs at 7 itself and leaves the session's autogroup (its leader's to set) alone
    assert niced == [7]
    assert autogroup.written == []


def test_a_process_without_the_right_to_step_forward_keeps_its_priority_and_says_so(monkeypatch, caplog):
    # Given a process at nice 0 without CAP_SYS_NICE (as in most containers), leading its session
    def refuse(*_args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cpu_priority.os, "getpriority", lambda *_args: 0)
    monkeypatch.setattr(cpu_priority.os, "getsid", lambda _pid: os.getpid())
    monkeypatch.setattr(cpu_priority.os, "setpriority", refuse)
    autogroup = RateLimitedAutogroup(busy=0)
    monkeypatch.setattr(cpu_priority, "AUTOGROUP", autogroup)
    caplog.set_level("INFO", logger=cpu_priority.__name__)
    # When it tries to step forward to nice -10
    cpu_priority.set_cpu_priority(-10)
    # Then it goes on at its priority, leaves the autogroup alone, and one line, nothing alarming, says why
    assert autogroup.written == []
    assert [(record.levelname, record.getMessage()) for record in caplog.records] == [
        ("INFO", "could not step forward to nice -10 (Permission denied: it needs CAP_SYS_NICE or an RLIMIT_NICE "
                 "that allows it): this process runs at nice 0")]


class RefusingAutogroup(RateLimitedAutogroup):
    """/proc/self/autogroup as the kernel answers a process that may not raise it: EPERM."""

    def write_text(self, text: str) -> None:
        raise PermissionError(1, "Operation not permitted")


def test_an_autogroup_the_process_may_not_raise_is_said_in_one_line_not_a_warning(session_leader, monkeypatch,
                                                                                  caplog):
    # Given a process already at nice -10 (its service manager's doing) that may not raise its autogroup
    monkeypatch.setattr(cpu_priority.os, "getpriority", lambda *_args: -10)
    monkeypatch.setattr(cpu_priority, "AUTOGROUP", RefusingAutogroup(busy=0))
    caplog.set_level("INFO", logger=cpu_priority.__name__)
    # When it steps forward to -10
    cpu_priority.set_cpu_priority(-10)
    # Then one INFO line says the autogroup stays, and why
    assert [(record.levelname, "could not set the scheduler autogroup to nice -10" in record.getMessage())
            for record in caplog.records] == [("INFO", True)]
