"""Workers step back from the CPU when told to (CREDITQ_WORKER_NICE): a burst of sends slows the intake less.

A nice value orders threads only within one scheduler autogroup (Linux's `sched_autogroup`, on by default in
many kernels): processes of different sessions share the CPU session by session whatever their nice, and every
creditq process runs in a session of its own. So a process that leads its session lowers its autogroup's
priority as well. Under a cgroup CPU controller (systemd's CPUWeight=, a container's shares) those weights rule
instead; the nice then orders this process's threads against its own cgroup only.
"""

import logging
import os
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
        return  # the autogroup is the session's: a process that does not lead it leaves it to the session's leader
    try:
        group_nice = int(AUTOGROUP.read_text().split()[-1])  # "/autogroup-123 nice 0"
        if nice > group_nice:
            AUTOGROUP.write_text(str(nice))
    except (OSError, ValueError, IndexError) as error:  # no autogroups here: the nice is all there is
        log.debug("no scheduler autogroup to lower (%s)", error)
