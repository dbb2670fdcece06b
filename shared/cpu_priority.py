"""On a host they share, the web steps forward and the workers step back from the CPU (CREDITQ_WEB_NICE, -20 unless
told otherwise; CREDITQ_WORKER_NICE, 19): a burst of sends slows the intake less. On a host of its own a process's
nice changes nothing; on a shared one the web answers first and the workers send with what is left.

A nice value orders threads only within one scheduler autogroup (Linux's `sched_autogroup`, on by default in
many kernels): processes of different sessions share the CPU session by session whatever their nice, and every
creditq process runs in a session of its own. So a process that leads its session moves its autogroup's
priority as well. Under a cgroup CPU controller (systemd's CPUWeight=, a container's shares) those weights rule
instead; the nice then orders this process's threads against its own cgroup only.

Stepping back is always allowed. Stepping forward (a negative nice) needs CAP_SYS_NICE (root outside a container;
`--cap-add SYS_NICE` in one) or an RLIMIT_NICE that allows it (systemd's `LimitNICE=`, limits.conf's `nice`):
without it the process runs at the priority it started with, and says so in one line.
"""

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

AUTOGROUP = Path("/proc/self/autogroup")


def set_cpu_priority(nice: int) -> None:
    """Run at `nice`, never nearer 0 than already: this thread and the threads and processes it starts from now on
    (Linux keeps a nice for each thread, so call it before starting any), and the session's autogroup when this
    process leads its session. 0 leaves both as they are."""
    if nice == 0:
        return
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if _further(nice, current):
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except PermissionError as error:
            log.info("could not step forward to nice %d (%s: it needs CAP_SYS_NICE or an RLIMIT_NICE that allows "
                     "it): this process runs at nice %d", nice, error.strerror, current)
            return
        except OSError as error:
            log.warning("could not set this process's nice to %d (%s): it runs at nice %d", nice, error, current)
            return
    if os.getsid(0) != os.getpid():
        log.info("running at nice %d; this process does not lead its session, so its autogroup is left to the "
                 "session's leader", os.getpriority(os.PRIO_PROCESS, 0))
        return
    try:
        group_nice = int(AUTOGROUP.read_text().split()[-1])  # "/autogroup-123 nice 0"
    except (OSError, ValueError, IndexError) as error:  # no autogroups here: the nice is all there is
        log.debug("no scheduler autogroup to set (%s)", error)
        return
    if _further(nice, group_nice):
        _write_autogroup(nice)


def _further(nice: int, current: int) -> bool:
    """Whether `nice` moves further from 0 than `current`, on its side of it."""
    return nice > current if nice > 0 else nice < current


def _write_autogroup(nice: int, attempts: int = 10) -> None:
    """The kernel takes one autogroup change a machine every 100 ms from a process without CAP_SYS_ADMIN (EAGAIN
    for the others), so processes started together wait their turn."""
    for _ in range(attempts):
        try:
            AUTOGROUP.write_text(str(nice))
            return
        except BlockingIOError:
            time.sleep(0.11)
        except PermissionError as error:  # e.g. a nice below 0 the service manager gave, without the right to it
            log.info("could not set the scheduler autogroup to nice %d (%s; below 0 it needs CAP_SYS_NICE or an "
                     "RLIMIT_NICE that allows it): this process shares the CPU with other sessions as if at 0", nice,
                     error.strerror)
            return
        except OSError as error:
            log.warning("could not set the scheduler autogroup to nice %d (%s): this process shares the CPU with "
                        "other sessions as if at 0", nice, error)
            return
    log.warning("could not set the scheduler autogroup to nice %d after %d tries (the kernel's rate limit): this "
                "process shares the CPU with other sessions as if at 0", nice, attempts)
