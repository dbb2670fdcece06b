"""Every failure leaves as application/problem+json; never a stack trace, never a 500 for bad input."""

import json
import logging

from aiohttp import web
from sqlalchemy import exc as sql_errors

from shared import errors
from shared.money import InvalidAmount, format_credits

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
# The database is away (restarting, failing over, out of connections) or gave up on the transaction (a deadlock,
# a serialization failure): nothing was committed, so the same request may simply be made again.
DATABASE_AWAY = (sql_errors.OperationalError, sql_errors.InterfaceError, sql_errors.TimeoutError)
DATABASE_RETRY_AFTER_SECONDS = 2

_STATUS_BY_ERROR: list[tuple[type[Exception], int]] = [
    (errors.NotFound, 404),
    (errors.ValidationFailed, 422),
    (InvalidAmount, 422),
    (errors.OptedOut, 409),
    (errors.Conflict, 409),
    (errors.InsufficientCredits, 402),
    (errors.AccountLocked, 423),
    (errors.SendLimitReached, 429),
    (errors.CallbackRejected, 403),
]


class Problem(Exception):
    """Raised by handlers to answer with a specific problem document (and headers, such as Retry-After)."""

    def __init__(self, status: int, title: str, detail: str = "", *, headers: dict[str, str] | None = None,
                 **extra):
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def problem_response(status: int, title: str, detail: str = "", *, headers: dict[str, str] | None = None,
                     **extra) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail or title, **extra}
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM_CONTENT_TYPE, headers=headers)


def status_of(error: Exception) -> int:
    """The HTTP status a domain error (or an InvalidAmount) is answered with."""
    return next(code for cls, code in _STATUS_BY_ERROR if isinstance(error, cls))


def _from_domain_error(error: Exception) -> web.Response:
    status = status_of(error)
    extra: dict = {}
    headers = {}
    if isinstance(error, errors.ValidationFailed) and error.errors:
        extra["errors"] = error.errors
    if isinstance(error, errors.InsufficientCredits):
        extra["available"] = format_credits(error.available)
        extra["required"] = format_credits(error.required)
        if error.stops_at is not None:
            extra["stops_at"] = error.stops_at
    if isinstance(error, errors.SendLimitReached):
        extra["limit"] = error.limit
        extra["resets_at"] = error.resets_at.isoformat()
        headers["Retry-After"] = str(error.retry_after_seconds)
    title = getattr(error, "title", "Invalid amount")
    return problem_response(status, title, str(error), headers=headers, **extra)


_DOMAIN_ERRORS = tuple(cls for cls, _ in _STATUS_BY_ERROR)


def is_domain_error(error: Exception) -> bool:
    return isinstance(error, _DOMAIN_ERRORS)


def render_error(error: Exception) -> web.Response:
    """The response an expected failure becomes (a Problem or a domain error)."""
    if isinstance(error, Problem):
        return problem_response(error.status, error.title, error.detail, headers=error.headers, **error.extra)
    return _from_domain_error(error)


@web.middleware
async def problem_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except (Problem, *_DOMAIN_ERRORS) as error:
        return render_error(error)
    except web.HTTPException as http_error:
        if http_error.status < 400:
            raise
        headers = {k: v for k, v in http_error.headers.items() if k.lower() in ("allow", "retry-after")}
        response = problem_response(http_error.status, http_error.reason, http_error.text or http_error.reason)
        response.headers.update(headers)
        return response
    except DATABASE_AWAY as error:
        log.warning("database unavailable on %s %s: %s", request.method, request.path,
                    getattr(error, "orig", None) or error)
        return problem_response(503, "Service Unavailable", "The database is not answering; nothing was changed. "
                                f"Try again in {DATABASE_RETRY_AFTER_SECONDS} s.",
                                headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem_response(500, "Internal Server Error", "The server failed to handle the request; it was logged.")
