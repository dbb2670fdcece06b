"""Workers step back from the CPU (CREDITQ_WORKER_NICE, 19 unless told otherwise): a burst of sends slows the
intake less. On a host of their own it changes nothing; on one they share with the web, the web answers first and
the workers send with what is left.

A nice value orders threads only within one scheduler autogroup (Linux's `sched_autogroup`, on by default in
many kernels): processes of different sessions share the CPU session by session whatever their nice, and every
creditq process runs in a session of its own. So a process that leads its session lowers its autogroup's
priority as well. Under a cgroup CPU controller (systemd's CPUWeight=, a container's shares) those weights rule
instead; the nice then orders this process's threads against its own cgroup only.
"""

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

AUTOGROUP = Path("/proc/self/autogroup")


def lower_cpu_priority(nice: int) -> None:
    """Run this process (and the threads and processes it starts from now on) at `nice`, never higher than
    it already runs; 0 leaves it as it is."""
    if nice <= 0:
        return
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > current:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    if os.getsid(0) != os.getpid():
        log.info("running at nice %d; this process does not lead its session, so its autogroup is left to the "
                 "session's leader", nice)
        return
    try:
        group_nice = int(AUTOGROUP.read_text().split()[-1])  # "/autogroup-123 nice 0"
    except (OSError, ValueError, IndexError) as error:  # no autogroups here: the nice is all there is
        log.debug("no scheduler autogroup to lower (%s)", error)
        return
    if nice > group_nice:
        _write_autogroup(nice)


def _write_autogroup(nice: int, attempts: int = 10) -> None:
    """The kernel takes one autogroup change a machine every 100 ms from a process without CAP_SYS_ADMIN (EAGAIN
    for the others), so workers started together wait their turn."""
    for _ in range(attempts):
        try:
            AUTOGROUP.write_text(str(nice))
            return
        except BlockingIOError:
            time.sleep(0.11)
        except OSError as error:
            log.warning("could not lower the scheduler autogroup to nice %d (%s): the worker shares the CPU with "
                        "other sessions as if at 0", nice, error)
            return
    log.warning("could not lower the scheduler autogroup to nice %d after %d tries (the kernel's rate limit): the "
                "worker shares the CPU with other sessions as if at 0", nice, attempts)
