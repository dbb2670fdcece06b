"""Whether this machine lets a process step forward for the CPU, as the web does by default."""

import subprocess
import sys


def can_step_forward_to(nice: int) -> bool:
    """Whether a fresh process may run at `nice` below 0: CAP_SYS_NICE or an RLIMIT_NICE that allows it (root in a
    container often has neither)."""
    probe = subprocess.run([sys.executable, "-c", f"import os; os.setpriority(os.PRIO_PROCESS, 0, {nice})"],
                           capture_output=True, timeout=60)
    return probe.returncode == 0
