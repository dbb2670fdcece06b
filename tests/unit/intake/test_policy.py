"""The role policy (intake.policy) on every route of the app's router, with every role; and the keys each role may make.

The walk enumerates `app.router`, so a route added later is walked with no change here, and a route that declares
no action stops the app from being built at all.
"""

import html
import itertools
import re

import pytest
from aiohttp import web

from intake.app import init_app
from intake.policy import check_declared, is_page_handler
from intake.principal import ADMIN, OWNER, USER

OPERATOR_KEY = {"Authorization": "Bearer test-operator-key-0123456789"}
ROLES = (USER, ADMIN, OWNER, "another account's owner", "operator")  # the operator last: it may cancel the account
POLICY_REFUSALS = ("key may not", "No such route for this key.")  # intake.policy's own details


# The roles' table as the product states it, written out here rather than read from intake.policy, so a change of
# the policy that breaks it fails this test: action -> the roles (besides the operator) that may take it.
TABLE = {
    "send": {OWNER, ADMIN, USER},  # messages, campaigns, calls, estimate
    "read_activity": {OWNER, ADMIN, USER},  # messages, calls, campaigns, transactions (a user: its own)
    "read_account": {OWNER, ADMIN, USER},
    "manage_users": {OWNER, ADMIN},  # users and allocations (an admin: not owners)
    "manage_keys": {OWNER, ADMIN, USER},  # owner any, admin admins' and users', user its own
    "configure": {OWNER, ADMIN},  # webhook endpoints, Twilio credentials, dunning, numbers
    "billing": {OWNER},  # purchases, card, auto-recharge, threshold, settings
    "operate": set(),  # accounts, plan, overdraft, flags, grants, month-end
    "account_life": set(),
}
DENIED_WITH_404 = {"account_life"}
# Which action a route must declare, by what its path names (routes added later are held to it too).
RESOURCES = [
    ("/webhook-endpoints", None, "configure"), ("/twilio-credentials", None, "configure"),
    ("/numbers", None, "configure"), ("/v1/accounts/{account_id}/dunning", None, "configure"),
    ("/v1/dunning/integrations", None, "configure"), ("/v1/dunning/runs", None, "configure"), ("/users", None, "manage_users"), ("/api-keys", None, "manage_keys"),
    ("/purchases", "POST", "billing"), ("/payment-method", None, "billing"), ("/auto-recharge", None, "billing"),
    ("/grants", None, "operate"), ("/v1/admin/", None, "operate"), ("/transactions", None, "read_activity"), ("/v1/messages", "POST", "send"), ("/v1/messages", "GET", "read_activity"),
    ("/v1/calls", "POST", "send"), ("/v1/calls", "GET", "read_activity"), ("/v1/campaigns", "GET", "read_activity"),
    ("/v1/campaigns", "POST", "send"), ("/v1/estimate", None, "send"),
]


def pinned_action(route: web.AbstractRoute) -> str | None:
    """The action the table gives this route's resource, if it names one (the first match)."""
    path = route.resource.canonical
    if path.startswith("/v1/accounts/{account_id}/") and path.rsplit("/", 1)[-1] in ("cancel", "reactivate",
                                                                                       "mark-spam"):
        return "account_life"
    return next((name for fragment, method, name in RESOURCES
                 if fragment in path and method in (None, route.method) and name is not None), None)


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def app(settings, sqlite_database, fake_broker):
    return init_app(settings, database=sqlite_database, broker=fake_broker)


@pytest.fixture
async def client(aiohttp_client, app):
    return await aiohttp_client(app)


async def created(response, status: int = 201) -> dict:
    assert response.status == status, await response.text()
    return await response.json()


async def new_team(client) -> tuple[str, dict[str, dict]]:
    """An account with an owner, an admin and a user, each with a key of its own, and another account: the account's
    id and each role's headers."""
    account = await created(await client.post("/v1/accounts", headers=OPERATOR_KEY, json={"name": "Grace Church"}))
    account_key = bearer(account["api_key"])
    keys = {"operator": OPERATOR_KEY}
    for role in (OWNER, ADMIN, USER):
        user = await created(await client.post(f"/v1/accounts/{account['id']}/users", headers=account_key, json={
            "name": role, "email": f"{role}@example.com", "role": role}))
        key = await created(await client.post(f"/v1/accounts/{account['id']}/api-keys", headers=account_key,
                                              json={"name": role, "user_id": user["id"]}))
        keys[role] = bearer(key["key"])
    other = await created(await client.post("/v1/accounts", headers=OPERATOR_KEY, json={"name": "Other"}))
    keys["another account's owner"] = bearer(other["api_key"])
    return account["id"], keys


def concrete_path(route: web.AbstractRoute, account_id: str) -> str:
    """The route's path with the account's id for {account_id} and a placeholder each other parameter accepts."""
    info = route.resource.get_info()
    if "formatter" not in info:
        return info["path"]
    names = [name for name in route.resource.canonical.replace("}", "{").split("{")[1::2]]
    for values in itertools.product(("x", "cancel", "purchases"), repeat=len(names)):
        path = info["formatter"].format(**{**dict(zip(names, values)), "account_id": account_id})
        if info["pattern"].fullmatch(path):
            return path
    raise AssertionError(f"no placeholder fits {route.resource.canonical}")


async def console_session(client, headers: dict) -> dict:
    """Sign the client in to the console with the key of these headers: the headers its forms send (CSRF)."""
    client.session.cookie_jar.clear()
    form = await (await client.get("/sign-in")).text()
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    home = await client.post("/sign-in", data={"key": headers["Authorization"].removeprefix("Bearer "),
                                               "csrf_token": token})
    assert home.status == 200, await home.text()
    return {"X-CSRF-Token": re.search(r'name="csrf_token" value="([^"]+)"', await home.text()).group(1)}


async def refusal_detail(response) -> str:
    """The problem's detail, or a console page's error."""
    if response.content_type.endswith("json"):
        return (await response.json()).get("detail", "")
    if response.content_type == "text/html":
        found = re.search(r'id="error"[^>]*>([^<]*)<', await response.text())
        return html.unescape(found.group(1)) if found else ""
    return ""


def walked_routes(app: web.Application) -> list[web.AbstractRoute]:
    return [route for route in app.router.routes() if route.method != "HEAD"]  # HEAD mirrors its GET


async def test_every_route_answers_every_role_as_the_policy_says(client, app):
    mismatches = []
    for route in walked_routes(app):
        declared = route.handler.creditq_action
        if declared.public:
            continue
        if (pinned := pinned_action(route)) is not None and declared.name != pinned:
            mismatches.append(f"{route.method} {route.resource.canonical} declares {declared.name}, not {pinned}")
        allowed = TABLE[declared.name]
        account_id, keys = await new_team(client)
        path = concrete_path(route, account_id)
        names_account = "{account_id}" in route.resource.canonical
        for role in ROLES:
            # when the role calls the route (with an empty body: a refusal comes before any field is read); a console
            # page, signed in to the console with the role's key
            if is_page_handler(route.handler):
                response = await client.request(route.method, path, headers=await console_session(client, keys[role]),
                                                data={} if route.method == "POST" else None, allow_redirects=False)
            else:
                response = await client.request(route.method, path, headers=keys[role],
                                                json={} if route.method in ("POST", "PUT", "PATCH") else None)
            detail = await refusal_detail(response)
            refused_by_policy = response.status in (403, 404) and any(text in detail for text in POLICY_REFUSALS)
            # then another account's owner learns nothing of this account, a role outside the action is refused
            # with the action's answer, and every other call passes the policy (whatever its handler answers)
            acts_as = OWNER if role == "another account's owner" else role  # on its own account, where no id is named
            if role == "another account's owner" and names_account:
                ok = response.status == 404 and detail == f"No account {account_id}."
            elif acts_as == "operator" or acts_as in allowed:
                ok = not refused_by_policy and response.status not in (401, 403) and response.status < 500
            else:
                ok = refused_by_policy and response.status == (404 if declared.name in DENIED_WITH_404 else 403)
            if not ok:
                mismatches.append(f"{route.method} {route.resource.canonical} as {role} ({declared.name}): "
                                  f"{response.status} {detail}")
    assert mismatches == []


async def test_public_routes_need_no_key(client, app):
    for route in walked_routes(app):
        if route.handler.creditq_action.public:
            response = await client.request(route.method, concrete_path(route, "acct_x"))
            assert response.status != 401, f"{route.method} {route.resource.canonical}"


def test_an_app_with_a_route_that_declares_no_action_is_refused(app):
    # given the app, and a route added without an action
    async def undeclared(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/v1/accounts/{account_id}/something-new", undeclared)

    # then checking the declarations names it (init_app runs this check, so such an app never serves)
    with pytest.raises(RuntimeError, match="GET /v1/accounts/{account_id}/something-new"):
        check_declared(app)


def test_every_route_of_the_app_declares_an_action(app):
    assert [route for route in app.router.routes() if getattr(route.handler, "creditq_action", None) is None] == []


async def test_the_served_document_says_who_may_call_each_operation(client):
    document = await (await client.get("/v1/openapi.json")).json()

    send = document["paths"]["/v1/messages"]["post"]
    purchases = document["paths"]["/v1/accounts/{account_id}/purchases"]["post"]
    assert (send["x-creditq-action"], send["x-creditq-roles"]) == ("send", ["operator", OWNER, ADMIN, USER])
    assert purchases["x-creditq-roles"] == ["operator", OWNER] and "403" in purchases["responses"]
    assert "| manage_users |" in document["info"]["description"]


async def test_each_role_makes_only_the_keys_the_policy_allows(client):
    # given an account whose owner, admin and user each hold a key
    account_id, keys = await new_team(client)
    users = {user["role"]: user["id"] for user in (await (await client.get(
        f"/v1/accounts/{account_id}/users", headers=keys[OWNER])).json())["data"]}
    path = f"/v1/accounts/{account_id}/api-keys"

    async def make(role: str, **body) -> int:
        return (await client.post(path, headers=keys[role], json={"name": "new", **body})).status

    # then an admin makes keys for admins and users, but neither an owner's nor an account key
    assert await make(ADMIN, user_id=users[USER]) == 201
    assert await make(ADMIN, user_id=users[OWNER]) == 403
    assert await make(ADMIN, scope="account") == 403
    # and a user makes only its own, whatever it names
    assert await make(USER) == 201
    assert await make(USER, user_id=users[ADMIN]) == 403
    assert await make(USER, scope="account") == 403
    # and an owner's key makes any
    assert await make(OWNER, scope="account") == 201
    # and each lists only the keys it may manage
    listed = {role: {key["user_id"] for key in (await (await client.get(path, headers=keys[role])).json())["data"]}
              for role in (OWNER, ADMIN, USER)}
    assert listed[USER] == {users[USER]}
    assert listed[ADMIN] == {users[ADMIN], users[USER]}
    assert listed[OWNER] == {None, users[OWNER], users[ADMIN], users[USER]}


async def test_a_refusal_names_the_role_with_the_article_it_is_said_with(client):
    # given an account whose admin and user each hold a key
    account_id, keys = await new_team(client)

    # when each asks for what only an owner may do (the purchases), and the user for another user's key
    refused = {role: await client.get(f"/v1/accounts/{account_id}/purchases", headers=keys[role])
               for role in (ADMIN, USER)}
    users = (await (await client.get(f"/v1/accounts/{account_id}/users", headers=keys[OWNER])).json())["data"]
    owner = next(user["id"] for user in users if user["role"] == OWNER)
    key_refused = await client.post(f"/v1/accounts/{account_id}/api-keys", headers=keys[USER],
                                    json={"name": "x", "user_id": owner})

    # then each 403 says "A user", "An admin", "an owner's" as they are spoken
    assert (await refused[USER].json())["detail"].startswith("A user key may not ")
    assert (await refused[ADMIN].json())["detail"].startswith("An admin key may not ")
    assert (await key_refused.json())["detail"] == "A user key may not create an owner's key."


async def test_an_admin_asking_for_a_key_without_a_user_gets_403_not_a_key_of_its_own(client):
    # given an account whose admin holds a key
    account_id, keys = await new_team(client)
    path = f"/v1/accounts/{account_id}/api-keys"
    before = [key["id"] for key in (await (await client.get(path, headers=keys[OWNER])).json())["data"]]

    # when the admin asks for a key naming no user (that is, an account key)
    response = await client.post(path, headers=keys[ADMIN], json={"name": "x"})

    # then it is refused with 403 and no key was made
    assert response.status == 403, await response.text()
    assert "account key" in (await response.json())["detail"]
    assert [key["id"] for key in (await (await client.get(path, headers=keys[OWNER])).json())["data"]] == before


async def test_a_deleted_users_keys_stop_working_at_once(client):
    # given a user with a key that works
    account_id, keys = await new_team(client)
    users = {user["role"]: user["id"] for user in (await (await client.get(
        f"/v1/accounts/{account_id}/users", headers=keys[OWNER])).json())["data"]}
    assert (await client.get(f"/v1/accounts/{account_id}", headers=keys[USER])).status == 200

    # when an admin deletes the user
    deleted = await client.delete(f"/v1/accounts/{account_id}/users/{users[USER]}", headers=keys[ADMIN])

    # then the user's key is refused, and its keys are listed revoked
    assert deleted.status == 204
    assert (await client.get(f"/v1/accounts/{account_id}", headers=keys[USER])).status == 401
    listed = (await (await client.get(f"/v1/accounts/{account_id}/api-keys", headers=keys[OWNER])).json())["data"]
    assert [key["revoked_at"] is not None for key in listed if key["user_id"] == users[USER]] == [True]


async def test_an_admin_may_not_create_change_or_delete_an_owner(client):
    account_id, keys = await new_team(client)
    owner = next(user["id"] for user in (await (await client.get(
        f"/v1/accounts/{account_id}/users", headers=keys[ADMIN])).json())["data"] if user["role"] == OWNER)

    made = await client.post(f"/v1/accounts/{account_id}/users", headers=keys[ADMIN],
                             json={"name": "New owner", "email": "n@example.com", "role": OWNER})
    deleted = await client.delete(f"/v1/accounts/{account_id}/users/{owner}", headers=keys[ADMIN])

    assert (made.status, deleted.status) == (403, 403)
    assert owner in {user["id"] for user in (await (await client.get(
        f"/v1/accounts/{account_id}/users", headers=keys[OWNER])).json())["data"]}
