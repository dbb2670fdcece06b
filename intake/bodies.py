"""Reading request bodies into plain dicts, with problem+json for anything malformed."""

import json

from aiohttp import web

from .errors import Problem


async def read_json(request: web.Request) -> dict:
    raw = await request.read()
    if not raw:
        raise Problem(400, "Bad Request", "The request needs a JSON object body.")
    try:
        body = json.loads(raw)
        _check_text(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise Problem(400, "Bad Request", f"The body is not valid JSON: {error}") from None
    except RecursionError:
        raise Problem(400, "Bad Request", "The body is nested too deeply.") from None
    if not isinstance(body, dict):
        raise Problem(400, "Bad Request", "The body must be a JSON object.")
    return body


def _check_text(value) -> None:
    """Text the database can store: no NUL character, no unpaired UTF-16 surrogate (a lone \\ud800)."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)
    elif isinstance(value, list):
        for item in value:
            _check_text(item)
    elif isinstance(value, str):
        if "\x00" in value:
            raise Problem(400, "Bad Request", "The body contains a NUL character (\\u0000).")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Problem(400, "Bad Request", "The body contains an unpaired surrogate (\\ud800-\\udfff alone).") from None


def json_response(data, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/json")


def query_limit(request: web.Request, default: int = 50, maximum: int = 500) -> int:
    raw = request.query.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise Problem(422, "Validation failed", f"limit must be a whole number from 1 to {maximum}.",
                      errors={"limit": f"must be 1..{maximum}"})
    return int(raw)
