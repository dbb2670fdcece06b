"""How every process logs: plain lines, or one JSON object a line (CREDITQ_LOG_FORMAT=json), each carrying the
ids of the work at hand — the job, the request, the message, the account.

The ids live in context variables: a dramatiq middleware binds them for the length of a job, an aiohttp middleware
for the length of a request, and `asyncio.to_thread` carries them into the threads a request's work runs in, so a
line logged anywhere below knows whose work it is without being told. Secrets are masked by
shared.log_redaction's filter before any line is formatted, JSON lines included.
"""

import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

FIELDS = ("job_id", "actor", "request_id", "message_id", "account_id")
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(context)s"

_context: dict[str, ContextVar[str | None]] = {name: ContextVar(name, default=None) for name in FIELDS}


class Occasionally:
    """`due()` is true at most once every `seconds`: for a warning each request would repeat while a dependency
    (Redis) is away."""

    def __init__(self, seconds: float):
        self._seconds, self._last = seconds, -math.inf

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last < self._seconds:
            return False
        self._last = now
        return True


def bind(**ids: str | None) -> list:
    """Bind ids (named in FIELDS; None unbinds one) for what runs next in this context; returns what `unbind` takes.

    `unbind` restores every id to what it was before, even one bound again since without keeping the tokens.
    """
    return [(_context[name], _context[name].set(value)) for name, value in ids.items()]


def unbind(tokens: list) -> None:
    for variable, token in reversed(tokens):
        variable.reset(token)


@contextmanager
def bound(**ids: str | None) -> Iterator[None]:
    tokens = bind(**ids)
    try:
        yield
    finally:
        unbind(tokens)


def current() -> dict[str, str]:
    """The ids bound here, without the unset ones."""
    return {name: value for name, variable in _context.items() if (value := variable.get()) is not None}


class ContextFilter(logging.Filter):
    """A handler filter: puts the bound ids on every record (`record.context`, and one attribute each)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = current()
        for name in FIELDS:
            setattr(record, name, ids.get(name))
        record.context = "".join(f" {name}={value}" for name, value in ids.items())
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the bound ids, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                "level": record.levelname, "logger": record.name, "message": record.getMessage(),
                "pid": record.process}
        line.update({name: value for name in FIELDS if (value := getattr(record, name, None)) is not None})
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False)


def handler(log_format: str) -> logging.Handler:
    """A stderr handler writing `log_format` lines with the bound ids."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"CREDITQ_LOG_FORMAT={log_format!r} must be one of: {', '.join(LOG_FORMATS)}")
    stream = logging.StreamHandler()
    stream.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    stream.addFilter(ContextFilter())
    return stream


def configure(log_format: str, *, level: int = logging.INFO) -> None:
    """Give the root logger its handler, as logging.basicConfig would (not when it has one already, as under a test
    runner); worker processes dramatiq forks inherit it. shared.log_redaction.install() then masks secrets on it."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(handler(log_format))
        root.setLevel(level)
    # APScheduler writes two INFO lines for each run of each job, every 15 s for the sweepers alone, which buried
    # what the jobs themselves say. Its warnings (a run missed) and errors (a job that raised) still show.
    logging.getLogger("apscheduler").setLevel(max(level, logging.WARNING))
