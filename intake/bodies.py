"""Reading request bodies (JSON, forms, CSV) and query parameters, with problem+json for anything malformed."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy

from .errors import Problem
from .fields import whole_number
from .text import check_json_text, check_text

log = logging.getLogger(__name__)

PARSE_IN_THREAD_BYTES = 256 * 1024  # larger JSON bodies are parsed off the event loop, which serves everyone
BODY_WAIT_SECONDS = 300  # the longest a body may take to arrive: a 20 MiB campaign CSV at 0.6 Mbit/s


@asynccontextmanager
async def arriving(request: web.Request) -> AsyncIterator[None]:
    """Around reading the request's body. A body that has not all come within BODY_WAIT_SECONDS is a 408: a client
    stalled, or a chunk aiohttp could not parse, after which it waits for the rest for ever. A client that hung up
    mid-body, or a body that does not decompress as its Content-Encoding says, is a 400: the client's doing, not a
    server error."""
    try:
        async with asyncio.timeout(BODY_WAIT_SECONDS):
            yield
    except TimeoutError:
        raise Problem(408, "Request Timeout", f"The body did not arrive within {BODY_WAIT_SECONDS} s.",
                      headers={"Connection": "close"}) from None
    except ConnectionResetError:
        if request.content.exception() is None:  # not this request's body: let it be the 500 it is
            raise
        log.info("the client of %s %s went away before its body was complete", request.method, request.path)
        raise Problem(400, "Bad Request", "The connection was lost before the body was complete.") from None
    except web.RequestPayloadError as error:  # a body that does not decompress as its Content-Encoding says
        log.info("the body of %s %s could not be read: %s", request.method, request.path, error)
        raise Problem(400, "Bad Request", "The body cannot be read: it does not decode as its Content-Encoding "
                                          f"({request.headers.get('Content-Encoding', '')}) says.") from None


async def read_body(request: web.Request) -> bytes:
    """The whole body, once it has arrived (see `arriving`); read once, then kept by aiohttp."""
    async with arriving(request):
        return await request.read()


async def read_json(request: web.Request) -> dict:
    raw = await read_body(request)
    if not raw:
        raise Problem(400, "Bad Request", "The request needs a JSON object body.")
    body = await asyncio.to_thread(_parse_json, raw) if len(raw) > PARSE_IN_THREAD_BYTES else _parse_json(raw)
    if not isinstance(body, dict):
        raise Problem(400, "Bad Request", "The body must be a JSON object.")
    return body


def _parse_json(raw: bytes):
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise Problem(400, "Bad Request", f"The body is not valid JSON: {error}") from None
    except RecursionError:
        raise Problem(400, "Bad Request", "The body is nested too deeply.") from None
    check_json_text(body)
    return body


async def read_form(request: web.Request) -> MultiDictProxy:
    """A urlencoded or multipart form; a multipart body without a boundary (or broken) is a 400."""
    try:
        async with arriving(request):
            form = await request.post()
    except (ValueError, HttpProcessingError) as error:  # "boundary missed for Content-Type", a bad part header...
        raise Problem(400, "Bad Request", f"The form cannot be read: {str(error).strip()}") from None
    for name, value in form.items():
        check_text(name, "The form")
        if isinstance(value, str):
            check_text(value, "The form")
    return form


async def read_csv(request: web.Request) -> str:
    """The CSV as text: the whole body (text/csv) or the `file` part of a multipart form; UTF-8, no NUL."""
    if request.content_type in ("text/csv", "text/plain"):
        raw = await read_body(request)
    elif request.content_type == "multipart/form-data":
        upload = (await read_form(request)).get("file")
        if upload is None:
            raise Problem(422, "Validation failed", "The multipart form needs a 'file' part holding the CSV.",
                          errors={"file": "is required"})
        raw = upload.file.read() if isinstance(upload, web.FileField) else upload.encode()
    else:
        raise Problem(415, "Unsupported Media Type",
                      "Send the CSV as text/csv or as the 'file' part of multipart/form-data.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:  # also what an unpaired surrogate is in bytes (ED A0 80)
        line = raw[:error.start].count(b"\n") + 1
        raise Problem(422, "Validation failed", f"The CSV must be UTF-8 text: line {line} is not.",
                      errors={"csv": f"line {line} is not UTF-8"}) from None
    nul = text.find("\x00")
    if nul >= 0:
        raise Problem(400, "Bad Request", f"The CSV contains a NUL character (\\u0000) on line "
                                          f"{text.count(chr(10), 0, nul) + 1}.")
    return text


def json_response(data, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/json")


def query_limit(request: web.Request, default: int = 50, maximum: int = 500) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    limit = whole_number(raw, maximum=maximum)
    if limit is None or limit < 1:
        raise Problem(422, "Validation failed", f"limit must be a whole number from 1 to {maximum}.",
                      errors={"limit": f"must be 1..{maximum}"})
    return limit
