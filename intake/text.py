"""Text the database can store, checked wherever text enters: the path, the query string, JSON bodies, CSVs.

PostgreSQL refuses a NUL character in text and SQLite's driver refuses an unpaired UTF-16 surrogate
(what a lone \\ud800 in JSON, or bytes that are not UTF-8 in a header, decode to): either would
surface as a 500 from deep inside a unit of work. Refusing them at the door is a 400 that names where.
"""

from aiohttp import web

from .errors import Problem


def check_text(value: str, where: str) -> None:
    """400 when `value` holds a NUL character or an unpaired surrogate."""
    if "\x00" in value:
        raise Problem(400, "Bad Request", f"{where} contains a NUL character (\\u0000).")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Problem(400, "Bad Request", f"{where} contains an unpaired surrogate or bytes that are not UTF-8.") \
            from None


def check_json_text(value, where: str = "The body") -> None:
    """Every string of a parsed JSON document, keys included."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_text(key, where)
            check_json_text(item, where)
    elif isinstance(value, list):
        for item in value:
            check_json_text(item, where)
    elif isinstance(value, str):
        check_text(value, where)


@web.middleware
async def text_middleware(request: web.Request, handler):
    """The path and every query parameter, before any handler reads them."""
    check_text(request.path, "The path")
    for name, value in request.query.items():
        check_text(name, "The query string")
        check_text(value, f"The query parameter {name!r}" if name.isprintable() else "The query string")
    return await handler(request)
