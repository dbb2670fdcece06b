"""The console's front door: `/` (to the signed-in key's home), sign-in, sign-out, and its own static files."""

from pathlib import Path

from aiohttp import web

from ..bodies import read_form
from ..errors import Problem
from ..policy import PUBLIC, action
from .render import page
from .session import SIGN_IN_PATH, sign_in, sign_out, signed_in

routes = web.RouteTableDef()
STATIC = Path(__file__).parent / "static"
_STATIC_TYPES = {"htmx.min.js": "text/javascript", "console.css": "text/css"}  # what is served, and nothing else


@routes.get("/")
@action(PUBLIC)  # the session decides where it leads
async def home(request: web.Request) -> web.Response:
    principal = await signed_in(request)
    if principal is None:
        raise web.HTTPSeeOther(SIGN_IN_PATH)
    raise web.HTTPSeeOther("/operator/accounts" if principal.is_operator else f"/accounts/{principal.account_id}")


@routes.get(SIGN_IN_PATH)
@action(PUBLIC)
async def sign_in_form(request: web.Request) -> web.Response:
    return page(request, "sign_in.html", {"error": None})


@routes.post(SIGN_IN_PATH)
@action(PUBLIC)  # the key in the form is what is checked
async def sign_in_submit(request: web.Request) -> web.Response:
    key = (await read_form(request)).get("key")
    if not isinstance(key, str) or not key.strip() or not key.strip().isascii():
        return page(request, "sign_in.html", {"error": "Type an API key."}, status=422)
    try:
        await sign_in(request, key.strip())
    except Problem as refused:
        if refused.status != 401:
            raise
        return page(request, "sign_in.html", {"error": "That key is not valid (unknown or revoked)."}, status=401)
    raise web.HTTPSeeOther("/")


@routes.post("/sign-out")
@action(PUBLIC)  # ending one's own session needs only the session's CSRF token
async def sign_out_submit(request: web.Request) -> web.Response:
    await sign_out(request)
    raise web.HTTPSeeOther(SIGN_IN_PATH)


@routes.get("/static/{name}")
@action(PUBLIC)
async def static_file(request: web.Request) -> web.Response:
    """The console's assets, served by creditq itself (nothing is fetched from elsewhere at run time)."""
    name = request.match_info["name"]
    if name not in _STATIC_TYPES:
        raise web.HTTPNotFound()
    return web.Response(body=(STATIC / name).read_bytes(), content_type=_STATIC_TYPES[name],
                        headers={"Cache-Control": "public, max-age=3600"})
