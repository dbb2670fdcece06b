"""Users: Credits per Month and Total Credits ("Shared" for owners and admins), add, edit credits, delete.

The same ledger calls as /v1/accounts/{id}/users (shared.ledger.allocations), so a cap is refused with the very
sentence the API's 422 `detail` carries, naming the maximum.
"""

import asyncio
from datetime import UTC, datetime

from aiohttp import web

from shared import api_keys
from shared.errors import DomainError
from shared.ledger import allocations, book
from shared.ledger.accounts import get_account
from shared.money import InvalidAmount, parse_credits

from ..appkeys import DATABASE, KEY_CACHE, PRINCIPAL
from ..bodies import read_form
from ..errors import Problem, status_of
from ..policy import MANAGE_USERS, action, may_manage_user
from ..routes.users import SHARED, user_json
from .render import page

routes = web.RouteTableDef()


@routes.get("/accounts/{account_id}/users")
@action(MANAGE_USERS)
async def users_page(request: web.Request) -> web.Response:
    return await _render(request, notice=None, error=None)


@routes.post("/accounts/{account_id}/users")
@action(MANAGE_USERS)
async def add_user(request: web.Request) -> web.Response:
    account_id, principal = request.match_info["account_id"], request[PRINCIPAL]
    form = await read_form(request)
    role = form.get("role", "user")
    monthly = form.get("monthly_credits", "").strip()

    def create(database):
        may_manage_user(principal, role)
        with database.unit_of_work() as session:
            return allocations.create_user(
                session, account_id, name=form.get("name", "").strip(), email=form.get("email", "").strip(),
                phone=None, role=role, now=datetime.now(UTC),
                monthly_credits=None if role != "user" or monthly in ("", SHARED) else parse_credits(monthly))

    return await _change(request, create, lambda user: f"Added {user.name}.")


@routes.post("/accounts/{account_id}/users/{user_id}")
@action(MANAGE_USERS)
async def edit_credits(request: web.Request) -> web.Response:
    account_id, user_id, principal = request.match_info["account_id"], request.match_info["user_id"], request[
        PRINCIPAL]
    form = await read_form(request)

    def update(database):
        monthly = form.get("monthly_credits", "").strip()
        total = form.get("total_credits", "").strip()
        with database.unit_of_work() as session:
            user = allocations.get_user(session, account_id, user_id)
            may_manage_user(principal, user.role)
            return allocations.update_user(session, account_id, user_id, now=datetime.now(UTC),
                                           monthly_credits=parse_credits(monthly) if monthly else None,
                                           total_credits=parse_credits(total) if total else None)

    return await _change(request, update, lambda user: f"Saved the credits of {user.name}.")


@routes.post("/accounts/{account_id}/users/{user_id}/delete")
@action(MANAGE_USERS)
async def delete_user(request: web.Request) -> web.Response:
    account_id, user_id, principal = request.match_info["account_id"], request.match_info["user_id"], request[
        PRINCIPAL]

    def delete(database):
        now = datetime.now(UTC)
        with database.unit_of_work() as session:
            user = allocations.get_user(session, account_id, user_id)
            may_manage_user(principal, user.role)
            allocations.delete_user(session, account_id, user_id, now=now)
            return user, api_keys.revoke_account_keys(session, account_id, now=now, user_id=user_id)

    def deleted(done) -> str:
        user, key_ids = done
        for key_id in key_ids:
            request.app[KEY_CACHE].forget_key(key_id)  # this process at once; the others within the cache's TTL
        return f"Deleted {user.name}; its credits went back to the pool."

    return await _change(request, delete, deleted)


async def _change(request: web.Request, change, notice) -> web.Response:
    """Run a change; its refusal (a cap, a bad amount, a forbidden role) is shown on the page, as the API says it."""
    try:
        done = await asyncio.to_thread(change, request.app[DATABASE])
    except (DomainError, InvalidAmount) as refused:  # with the API's status: a user that is not there is a 404
        return await _render(request, notice=None, error=str(refused), status=status_of(refused))
    except Problem as refused:
        return await _render(request, notice=None, error=refused.detail, status=refused.status)
    return await _render(request, notice=notice(done), error=None)


async def _render(request: web.Request, *, notice: str | None, error: str | None, status: int = 200) -> web.Response:
    account_id = request.match_info["account_id"]

    def read(database):
        now = datetime.now(UTC)
        with database.read_only() as session:
            account = get_account(session, account_id)
            view = book.balance(session, account_id, now=now)
            expired = book.lapsed(session, account_id, now=now)
            users = [user_json(user, expired=expired.get(user.id, 0))
                     for user in allocations.list_users(session, account_id)]
        return account, view, users

    account, view, users = await asyncio.to_thread(read, request.app[DATABASE])
    return page(request, "users.html", {"account": account, "company_credits": max(0, view.pool_available),
                                        "users": users, "notice": notice, "error": error}, status=status)
