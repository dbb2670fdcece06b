"""A request aiohttp cannot parse (a header line past 8 KiB, 100 headers and more, a broken request line) is
answered 400 by aiohttp itself, before any handler runs, and logged by it at ERROR with a traceback: anyone could
fill the log at the cost of a connection each. This filter turns each such record into one WARNING line naming the
client and the kind of fault, never the bytes it sent (a header's first bytes can be a key).

A body that does not decompress as its Content-Encoding says is answered 400 by the handler that read it (and
logged there); aiohttp then tries to drain the rest of it, meets the same fault and logs it at ERROR with a
traceback. That record says nothing new and is dropped."""

import logging

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import RequestPayloadError

SERVER_LOGGER = "aiohttp.server"
PARSE_ERROR_MESSAGE = "Error handling request from %s"  # what aiohttp's RequestHandler.handle_error logs
DRAIN_ERROR_MESSAGE = "Unhandled exception"  # what its RequestHandler.start logs when draining a body fails


class MalformedRequestFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if record.msg == DRAIN_ERROR_MESSAGE and isinstance(error, RequestPayloadError):
            return False
        if record.msg == PARSE_ERROR_MESSAGE and isinstance(error, HttpProcessingError) and 400 <= error.code < 500:
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args = "refused a malformed request from %s (%s, %d)", (
                remote, type(error).__name__, error.code)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


def quiet_malformed_requests() -> None:
    """Install the filter on aiohttp's server logger, once a process."""
    logger = logging.getLogger(SERVER_LOGGER)
    if not any(isinstance(existing, MalformedRequestFilter) for existing in logger.filters):
        logger.addFilter(MalformedRequestFilter())
