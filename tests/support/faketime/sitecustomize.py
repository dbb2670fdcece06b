"""Loaded first by every Python process the test stack starts under faketime (this directory leads its PYTHONPATH).

libfaketime 0.9.10 (Debian's) must leave the monotonic clock alone (FAKETIME_DONT_FAKE_MONOTONIC=1), or every
timed wait of a thread computes its deadline minutes off and hangs or spins; but then it refuses the monotonic
absolute-deadline clock_nanosleep that time.sleep makes (EINVAL). A thread's timed wait, which it handles, sleeps
instead: the process's wall clock alone is off, as on a machine whose clock drifted.
"""

import threading
import time


def _sleep(seconds: float) -> None:
    threading.Event().wait(seconds)


time.sleep = _sleep
