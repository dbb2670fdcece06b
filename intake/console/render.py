"""The console's templates (Jinja2 through aiohttp-jinja2, autoescaped) and what every page shows: who is signed
in, the navigation their role may use (the same intake.policy actions the pages declare), the CSRF token."""

import unicodedata
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from shared.money import format_credits

from ..appkeys import PRINCIPAL
from ..policy import BILLING, MANAGE_USERS, OPERATE, READ_ACCOUNT, READ_ACTIVITY, SEND, Action
from ..principal import Principal

TEMPLATES = Path(__file__).parent / "templates"
CSRF_TOKEN = web.RequestKey("console_csrf_token", str)


@dataclass(frozen=True)
class NavItem:
    label: str
    path: str  # under /accounts/{account_id}, or absolute when it starts with /operator
    needs: Action


ACCOUNT_NAV = (
    NavItem("Dashboard", "", READ_ACCOUNT), NavItem("Compose", "/compose", SEND), NavItem("Users", "/users", MANAGE_USERS),
    NavItem("Transactions", "/transactions", READ_ACTIVITY), NavItem("Messages", "/messages", READ_ACTIVITY),
    NavItem("Campaigns", "/campaigns", READ_ACTIVITY), NavItem("Billing", "/billing", BILLING),
    NavItem("Expiring", "/expiring", READ_ACCOUNT),
)
OPERATOR_NAV = (NavItem("Accounts", "/operator/accounts", OPERATE), NavItem("Month-end", "/operator/month-end", OPERATE),
                NavItem("Dunning", "/operator/dunning", OPERATE))


def setup_templates(app: web.Application) -> None:
    environment = aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                       undefined=jinja2.StrictUndefined)
    environment.filters["credits"] = format_credits
    environment.filters["character_name"] = character_name
    environment.filters["local"] = local_time


def local_time(instant: datetime | None, tz: tzinfo) -> str:
    """An instant as the account's local wall time, to the minute."""
    return instant.astimezone(tz).strftime("%Y-%m-%d %H:%M") if instant else ""


def character_name(character: str) -> str:
    """How the compose box's "why" names a character: 'U+1F600 GRINNING FACE'."""
    return " ".join(f"U+{ord(c):04X} {unicodedata.name(c, '')}".strip() for c in character)


def may(principal: Principal | None, declared: Action) -> bool:
    """Whether the signed-in principal may take this action: what shows a page's link or a button."""
    return principal is not None and (principal.is_operator or principal.role in declared.roles)


def page(request: web.Request, template: str, context: dict, *, status: int = 200) -> web.Response:
    principal = request.get(PRINCIPAL)
    account_id = request.match_info.get("account_id") or (principal.account_id if principal else None)
    nav = []
    if principal is not None:
        if account_id is not None:
            nav += [(item.label, f"/accounts/{account_id}{item.path}") for item in ACCOUNT_NAV
                    if may(principal, item.needs)]
        nav += [(item.label, item.path) for item in OPERATOR_NAV if may(principal, item.needs)]
    base = {"principal": principal, "account_id": account_id, "nav": nav, "path": request.path,
            "csrf_token": request.get(CSRF_TOKEN, ""), "may": lambda declared: may(principal, declared),
            "BILLING": BILLING, "MANAGE_USERS": MANAGE_USERS, "SEND": SEND, "OPERATE": OPERATE}
    return aiohttp_jinja2.render_template(template, request, {**base, **context}, status=status)
