"""A worker process drains once, however many times it is told to stop.

dramatiq's worker process stops on its first SIGTERM (or SIGHUP) and exits at once, its jobs cut off, on a second.
`creditq dev` signals each child's whole process group, and systemd its unit's whole control group (its default
KillMode), so each worker process is told by that signal and again by its parent passing its own on: the second cut
the drain short, the running sends with it. Here only the first reaches dramatiq's handler; a process that must stop
sooner is sent SIGKILL, as the web's processes are (intake.prefork).
"""

import signal

from dramatiq.middleware import Middleware

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class StopOnce(Middleware):
    def after_process_boot(self, broker) -> None:
        told: list[int] = []  # one for every stop signal: a SIGHUP after a SIGTERM is a second telling too

        def first_only(handler):
            def stop(signum, frame):
                if not told:
                    told.append(signum)
                    handler(signum, frame)

            return stop

        for signum in STOP_SIGNALS:
            signal.signal(signum, first_only(signal.getsignal(signum)))
