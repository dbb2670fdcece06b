"""Build a worker process's resources at boot, not in its first job.

The first job of a fresh process would otherwise pay for importing the database driver, building the
engine and opening a connection (about a second of CPU), while other jobs wait behind it.
"""

from dramatiq.middleware import Middleware

from . import resources


class WarmUp(Middleware):
    def after_process_boot(self, broker) -> None:
        with resources.current().database.engine.connect():
            pass
