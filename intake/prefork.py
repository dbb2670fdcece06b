"""Several web processes on one port: one process's Python is at most one core's worth.

Each child binds the port with SO_REUSEPORT, so the kernel spreads new connections over them evenly (a socket
shared by all would go to whichever woke first, and asyncio accepts everything waiting at once), and builds its own
app (pools, Redis clients, accept batchers) after the fork: they share nothing. The parent only supervises:

- a child killed, or gone after its first seconds, is replaced (after a pause when it was killed young: memory
  short, say); one that fails within its first seconds stops them all (the next would fail too: a setting, the
  database at start), and the parent exits 1;
- SIGTERM or SIGINT is passed to every child as SIGTERM, and each drains as a single `creditq web` does;
- a child outlives no parent: it is sent SIGTERM when the parent dies, even by kill -9.
"""

import ctypes
import logging
import os
import signal
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

EARLY_EXIT_SECONDS = 10.0  # a child failing sooner than this after its fork stops the rest
RESTART_PAUSE_SECONDS = 1.0  # before replacing a child killed within EARLY_EXIT_SECONDS
_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Prefork:
    def __init__(self, count: int, serve: Callable[[], None], *, on_exit: Callable[[int], None] = lambda pid: None):
        self.count = count
        self.serve = serve  # runs in each child until it is told to stop
        self.on_exit = on_exit  # called in the parent with the pid of each child gone
        self.children: dict[int, float] = {}  # pid: when it was forked (monotonic)
        self.stopping = False

    def run(self) -> int:
        """Fork the children and supervise them until all are gone; 0 after a stop asked for, else 1. Should the
        supervision itself fail (a fork refused), the children are stopped and waited for before it raises."""
        for signum in _STOP_SIGNALS:
            signal.signal(signum, self._stop)
        try:
            return self._supervise()
        except BaseException:
            self._stop()
            while self.children:
                self.children.pop(os.wait()[0], None)
            raise

    def _supervise(self) -> int:
        failed = False
        for _ in range(self.count):
            if not self.stopping:
                self._fork()
        while self.children:
            pid, wait_status = os.wait()  # retried after a signal's handler (PEP 475)
            code = os.waitstatus_to_exitcode(wait_status)
            forked = self.children.pop(pid, None)
            if forked is None:  # the embedded Redis this process started, say
                log.warning("process %d, not a web process, %s", pid, _ended(code))
                continue
            self.on_exit(pid)
            lived = time.monotonic() - forked
            if self.stopping:  # a child still starting when told to stop dies of the SIGTERM itself
                if code not in (0, -signal.SIGTERM):
                    log.error("web process %d %s while stopping", pid, _ended(code))
                    failed = True
            elif code > 0 and lived < EARLY_EXIT_SECONDS:
                log.error("web process %d %s %.1f s after it started; stopping the others", pid, _ended(code), lived)
                failed = True
                self._stop()
            else:
                log.warning("web process %d %s; starting another", pid, _ended(code))
                if lived < EARLY_EXIT_SECONDS:
                    time.sleep(RESTART_PAUSE_SECONDS)  # one killed as it starts (out of memory) is not forked flat out
                if not self.stopping:
                    self._fork()
        return 1 if failed else 0

    def _fork(self) -> None:
        """A stop signal waits out the fork, so the stop reaches the child just forked too."""
        parent = os.getpid()
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            raise
        if pid:
            self.children[pid] = time.monotonic()
            if self.stopping:  # told to stop after deciding to fork
                os.kill(pid, signal.SIGTERM)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            return
        code = 1
        try:
            for signum in _STOP_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)  # the app's own handlers drain it
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:  # the parent died before the line above (it may itself be pid 1)
                log.warning("web process %d: its parent is gone; not serving", os.getpid())
                return
            self.serve()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException:  # noqa: BLE001 - a child never returns into the parent's code
            log.exception("web process %d failed", os.getpid())
        finally:
            try:
                logging.shutdown()
            finally:
                os._exit(code)

    def _stop(self, *_) -> None:
        self.stopping = True
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def _ended(code: int) -> str:
    return f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
