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
_TWILIO_RESOURCES = "twilio.rest.api.v2010.account"


def import_twilio_resources() -> None:
    """Before the first send needs them; `creditq worker` calls it before forking, so its processes share them."""
    importlib.import_module(_TWILIO_RESOURCES)


class WarmUp(Middleware):
    def after_process_boot(self, broker) -> None:
        import_twilio_resources()
        with resources.current().database.engine.connect():
            pass
        freeze_startup_heap()
