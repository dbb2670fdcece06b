"""Twilio's REST error responses: ``{code, message, more_info, status}`` with Twilio's HTTP status."""

from __future__ import annotations

import json

from aiohttp import web
from aiohttp.typedefs import Handler


class TwilioError(Exception):
    """Raised anywhere in a Twilio API handler; ``error_middleware`` renders it as Twilio does."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = headers or {}

    def as_response(self) -> web.Response:
        body: dict[str, object] = {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }
        if self.detail is not None:
            body["detail"] = self.detail
        return web.Response(
            status=self.status,
            text=json.dumps(body),
            content_type="application/json",
            headers=self.headers,
        )


def bad_credentials() -> TwilioError:
    return TwilioError(
        401,
        20003,
        "Authenticate",
        detail="Your AccountSid or AuthToken was incorrect.",
        headers={"WWW-Authenticate": 'Basic realm="Twilio API"'},
    )


def not_found(path: str) -> TwilioError:
    return TwilioError(404, 20404, f"The requested resource {path} was not found")


def too_many_requests(retry_after_s: int) -> TwilioError:
    return TwilioError(
        429, 20429, "Too Many Requests", headers={"Retry-After": str(retry_after_s)}
    )


def internal_error() -> TwilioError:
    return TwilioError(500, 20500, "An internal server error has occurred")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except TwilioError as error:
        return error.as_response()
