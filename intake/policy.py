"""Who may do what, declared once: every route names its action (`@action(SEND)` right under its
`@routes.<method>(...)`), and ACTIONS says which roles may take each one (ROLES_TABLE, served in the OpenAPI
document and copied in the README). The auth middleware checks it before any handler runs.

The operator may do everything. An account key acts as the account's owner; a user key with its user's role.
A key naming another account's `{account_id}` gets 404 whatever the action, so it learns nothing.

What a role sees *inside* an action it may take is the handler's, from the Principal: `own_only` (a user reads its
own messages, calls, campaigns and transactions), `acting_user` (whom a send is charged to), `may_manage_user` and
`may_manage_key`. An app with a route that declares no action does not start (`check_declared`), and
tests/unit/intake/test_policy.py walks every route of the app's router with every role against ACTIONS.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from .errors import Problem
from .principal import ADMIN, OWNER, USER, Principal, with_article


@dataclass(frozen=True)
class Action:
    name: str
    roles: frozenset[str]  # besides the operator, who may do everything
    what: str  # for the refusal and the documents
    denied: int = 403  # the answer to a role outside `roles`: 404 hides the route itself
    public: bool = False  # no key at all (health, metrics, the document, signed webhooks)


PUBLIC = Action("public", frozenset(), "anyone, without a key", public=True)
SEND = Action("send", frozenset({OWNER, ADMIN, USER}),
              "send messages, campaigns and calls and estimate them (a user's sends are charged to its own credits)")
READ_ACTIVITY = Action("read_activity", frozenset({OWNER, ADMIN, USER}),
                       "read messages, calls, campaigns and transactions (a user reads its own only)")
READ_ACCOUNT = Action("read_account", frozenset({OWNER, ADMIN, USER}), "read the account and its balance")
MANAGE_USERS = Action("manage_users", frozenset({OWNER, ADMIN}), "manage users and their credits (admins: not owners)")
MANAGE_KEYS = Action("manage_keys", frozenset({OWNER, ADMIN, USER}),
                     "manage API keys (owners: any; admins: admins' and users'; users: their own)")
CONFIGURE = Action("configure", frozenset({OWNER, ADMIN}),
                   "configure webhook endpoints, Twilio credentials, dunning, numbers and opt-out lists")
BILLING = Action("billing", frozenset({OWNER}), "manage purchases, the card, auto-recharge, the threshold and settings")
OPERATE = Action("operate", frozenset(), "manage accounts, plans, overdraft, flags, grants and month-end")
ACCOUNT_LIFE = Action("account_life", frozenset(), "cancel, reactivate or mark an account as spam", denied=404)
ACTIONS = (PUBLIC, SEND, READ_ACTIVITY, READ_ACCOUNT, MANAGE_USERS, MANAGE_KEYS, CONFIGURE, BILLING, OPERATE,
           ACCOUNT_LIFE)

_ACTION_ATTRIBUTE = "creditq_action"
_PAGE_ATTRIBUTE = "creditq_console_page"


def _roles_table() -> str:
    rows = ["| action | what | owner | admin | user |", "|---|---|---|---|---|"]
    for declared in ACTIONS:
        if not declared.public:
            marks = " | ".join("✓" if role in declared.roles else "–" for role in (OWNER, ADMIN, USER))
            rows.append(f"| {declared.name} | {declared.what} | {marks} |")
    return ("Roles: the operator key may do everything; an account key acts as the account's owner; a user key "
            "(created with a user_id) acts as its user, with its role, and its sends are charged to that user's "
            "own credits. A role outside an action's gets 403 (404 for account life).\n\n" + "\n".join(rows))


ROLES_TABLE = _roles_table()


def action(declared: Action) -> Callable:
    """Declare the route's action: put it right under the route's `@routes.<method>(...)`."""
    def declare(handler: Callable) -> Callable:
        setattr(handler, _ACTION_ATTRIBUTE, declared)
        return handler
    return declare


def mark_pages(routes: web.RouteTableDef) -> web.RouteTableDef:
    """Make these routes console pages: signed in by the console's session cookie (intake.console.session), not
    by an Authorization header; their declared actions are authorized all the same."""
    for route in routes:
        setattr(route.handler, _PAGE_ATTRIBUTE, True)
    return routes


def is_page(request: web.Request) -> bool:
    return is_page_handler(request.match_info.handler)


def is_page_handler(handler: Callable) -> bool:
    return getattr(handler, _PAGE_ATTRIBUTE, False)


def action_of(request: web.Request) -> Action | None:
    """The matched route's action; None when no route matched (aiohttp then answers 404 or 405)."""
    return getattr(request.match_info.handler, _ACTION_ATTRIBUTE, None)


def check_declared(app: web.Application) -> None:
    """Refuse to build an app with a route that declares no action: it would be open to every key."""
    missing = [f"{route.method} {route.resource.canonical}" for route in app.router.routes()
               if getattr(route.handler, _ACTION_ATTRIBUTE, None) is None]
    if missing:
        raise RuntimeError(f"routes without a declared action (intake.policy): {', '.join(missing)}")


def action_for_path(app: web.Application) -> Callable[[str, str], Action | None]:
    """For the served document: the action of the route a documented (path, method) reaches."""
    def find(path: str, method: str) -> Action | None:
        sample = re.sub(r"\{[^}]+\}", "x", path)
        for route in app.router.routes():
            info = route.resource.get_info()
            matches = info["pattern"].fullmatch(sample) if "pattern" in info else info.get("path") == sample
            if route.method == method.upper() and matches:
                return getattr(route.handler, _ACTION_ATTRIBUTE, None)
        return None
    return find


def authorize(principal: Principal, declared: Action, account_id: str | None) -> None:
    """Raise the Problem the table gives this principal for this action on `account_id` (the path's, if any)."""
    if account_id is not None and not principal.can_access(account_id):
        raise Problem(404, "Not found", f"No account {account_id}.")
    if principal.is_operator or principal.role in declared.roles:
        return
    if declared.denied == 404:
        raise Problem(404, "Not found", "No such route for this key.")
    who = "only the operator" if not declared.roles else ", ".join(sorted(declared.roles)) + " keys"
    raise Problem(403, "Forbidden", f"{with_article(principal.role).capitalize()} key may not {declared.what}: "
                                    f"{who} may.")


def acting_user(principal: Principal, asked: object) -> object:
    """The user a send is made as, and charged to: the one asked for, else the key's own user. A role-`user` key
    sends only as itself."""
    if asked is None:
        return principal.user_id
    if principal.role == USER and asked != principal.user_id:
        raise Problem(403, "Forbidden", "A user key sends only as its own user: leave user_id out.")
    return asked


def may_manage_user(principal: Principal, role: str) -> None:
    """Admins manage admins and users, never owners (nor make one)."""
    if role == OWNER and principal.role == ADMIN:
        raise Problem(403, "Forbidden", "An admin key may not create, change or delete an owner.")


def may_manage_key(principal: Principal, user_id: str | None, role: str | None) -> bool:
    """Whether this caller may see, create or revoke a key of `user_id` (role `role`; both None: an account key)."""
    if principal.is_operator or principal.role == OWNER:
        return True
    if principal.role == ADMIN:
        return role in (ADMIN, USER)
    return user_id is not None and user_id == principal.user_id
