"""The web console: server-rendered pages (Jinja2 through aiohttp-jinja2, a little htmx served from static/) in the
intake's own app, for owners, admins, users and the operator.

It owns no data and no rules: every figure and every change goes through the same domain calls as the API (the
ledger's balance and transactions, allocations, the estimate, the accept batches, campaign steering, purchases,
month-end), and every page declares its intake.policy action like a route of the API. What it adds is the session
(intake.console.session: an encrypted cookie, CSRF tokens) and the HTML.
"""

from aiohttp import web

from ..policy import mark_pages
from . import activity, billing, compose, dashboard, entry, operator, users
from .render import setup_templates
from .session import console_middleware, console_session_middleware

PAGE_MODULES = (entry, dashboard, compose, users, activity, billing, operator)

__all__ = ["add_console", "console_middleware", "console_session_middleware"]


def add_console(app: web.Application) -> None:
    """Mount the console's pages and templates on the intake app (at /, beside /v1)."""
    setup_templates(app)
    for module in PAGE_MODULES:
        app.add_routes(mark_pages(module.routes))
