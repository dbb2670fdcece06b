"""Build a worker process's resources at boot, not in its first jobs.

A fresh process's first jobs would otherwise pay for importing the database driver, building the engine,
opening a connection and importing the twilio package's REST resources (over a second of CPU), while
other jobs wait behind them.
"""

import importlib

from dramatiq.middleware import Middleware

from shared.garbage_collection import freeze_startup_heap

from . import resources

# what the twilio package's Client imports on first use of `client.api`
TWILIO_RESOURCES = "twilio.rest.api.v2010.account"


class WarmUp(Middleware):
    def after_process_boot(self, broker) -> None:
        importlib.import_module(TWILIO_RESOURCES)  # creditq worker imports them before the fork
        with resources.current().database.engine.connect():
            pass
        freeze_startup_heap()
