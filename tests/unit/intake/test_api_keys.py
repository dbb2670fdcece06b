"""An account's API keys over HTTP: create, list, revoke, rotate; scopes; revocation across web processes."""

import pytest

from intake.app import init_app
from intake.appkeys import KEY_CACHE
from intake.key_cache import TTL_SECONDS, KeyCache
from intake.principal import Principal

OPERATOR = {"Authorization": "Bearer test-operator-key-0123456789"}


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def client(aiohttp_client, settings, sqlite_database, fake_broker):
    return await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))


async def new_account(client, name: str = "Grace Church") -> tuple[str, str]:
    response = await client.post("/v1/accounts", headers=OPERATOR, json={"name": name})
    assert response.status == 201
    created = await response.json()
    return created["id"], created["api_key"]


async def create_key(client, account_id: str, headers: dict, **body):
    return await client.post(f"/v1/accounts/{account_id}/api-keys", headers=headers, json={"name": "rotated", **body})


async def works(client, account_id: str, key: str) -> int:
    return (await client.get(f"/v1/accounts/{account_id}", headers=bearer(key))).status


async def listed(client, account_id: str, headers: dict = OPERATOR) -> list[dict]:
    response = await client.get(f"/v1/accounts/{account_id}/api-keys", headers=headers)
    assert response.status == 200
    return (await response.json())["data"]


async def test_an_account_key_creates_a_second_key_and_both_work_at_once(client):
    # given an account and the key it was created with
    account_id, first = await new_account(client)

    # when that key creates a second one (rotation: swap to the new key before revoking the old)
    response = await create_key(client, account_id, bearer(first), name="billing server")

    # then the new key is shown once, with its prefix, and both keys work
    assert response.status == 201
    created = await response.json()
    assert created["key"].startswith(created["prefix"]) and len(created["prefix"]) < len(created["key"]) // 2
    assert (created["name"], created["scope"], created["revoked_at"]) == ("billing server", "account", None)
    assert await works(client, account_id, first) == 200
    assert await works(client, account_id, created["key"]) == 200


async def test_the_list_shows_names_prefixes_and_uses_but_never_a_usable_key(client):
    # given an account with a second key, both used
    account_id, first = await new_account(client)
    second = (await (await create_key(client, account_id, bearer(first), name="billing server")).json())["key"]
    await works(client, account_id, second)

    # when the account lists its keys
    response = await client.get(f"/v1/accounts/{account_id}/api-keys", headers=bearer(first))
    text = await response.text()
    keys = (await response.json())["data"]

    # then each is named and recognisable by its prefix, newest first, last use noted ...
    assert [(key["name"], key["scope"]) for key in keys] == [("billing server", "account"), ("initial", "account")]
    assert [key["prefix"] for key in keys] == [second[:14], first[:14]]
    assert keys[0]["last_used_at"] is not None and keys[0]["created_at"]
    # ... and nothing in the answer works as a key
    assert first not in text and second not in text and "key" not in keys[0]
    for key in keys:
        assert await works(client, account_id, key["prefix"]) == 401


async def test_a_revoked_key_answers_401_and_the_other_key_keeps_working(client):
    # given two live keys of one account
    account_id, old = await new_account(client)
    new = (await (await create_key(client, account_id, bearer(old))).json())["key"]
    old_id = (await listed(client, account_id))[-1]["id"]

    # when the new key revokes the old one
    response = await client.delete(f"/v1/accounts/{account_id}/api-keys/{old_id}", headers=bearer(new))

    # then the old key is refused, the new one still works, and the list says when the old one went
    assert response.status == 204
    refused = await client.get(f"/v1/accounts/{account_id}", headers=bearer(old))
    assert refused.status == 401 and refused.content_type == "application/problem+json"
    assert await works(client, account_id, new) == 200
    assert (await listed(client, account_id))[-1]["revoked_at"] is not None


async def test_revoking_the_last_live_key_is_allowed_and_the_operator_mints_a_new_one(client):
    # given an account with a single key
    account_id, only = await new_account(client)
    only_id = (await listed(client, account_id))[0]["id"]

    # when the key revokes itself
    revoked = await client.delete(f"/v1/accounts/{account_id}/api-keys/{only_id}", headers=bearer(only))

    # then the account has no working key until the operator creates one
    assert revoked.status == 204
    assert await works(client, account_id, only) == 401
    minted = await create_key(client, account_id, OPERATOR, name="recovery")
    assert minted.status == 201
    assert await works(client, account_id, (await minted.json())["key"]) == 200


async def test_an_account_key_cannot_mint_an_operator_key(client):
    # given an account key
    account_id, key = await new_account(client)

    # when it asks for an operator-scoped key
    response = await create_key(client, account_id, bearer(key), scope="operator")

    # then it is forbidden and no key was made
    assert response.status == 403
    assert "scope" in (await response.json())["detail"]
    assert len(await listed(client, account_id)) == 1


async def test_the_operator_key_is_not_minted_through_the_api_either(client):
    account_id, _ = await new_account(client)

    response = await create_key(client, account_id, OPERATOR, scope="operator")

    assert response.status == 422 and "scope" in (await response.json())["errors"]
    assert len(await listed(client, account_id)) == 1


async def test_an_account_key_cannot_touch_another_accounts_keys(client):
    # given two accounts
    mine, my_key = await new_account(client, "Grace Church")
    theirs, their_key = await new_account(client, "Acme Realty")
    their_key_id = (await listed(client, theirs))[0]["id"]

    # when one account's key tries to mint, list and revoke the other's keys
    minted = await create_key(client, theirs, bearer(my_key))
    listing = await client.get(f"/v1/accounts/{theirs}/api-keys", headers=bearer(my_key))
    revoked = await client.delete(f"/v1/accounts/{theirs}/api-keys/{their_key_id}", headers=bearer(my_key))
    # and to revoke the other's key through its own account's path
    sideways = await client.delete(f"/v1/accounts/{mine}/api-keys/{their_key_id}", headers=bearer(my_key))

    # then every attempt is 404, as if the account did not exist, and the other key still works
    assert [r.status for r in (minted, listing, revoked, sideways)] == [404, 404, 404, 404]
    assert len(await listed(client, theirs)) == 1
    assert await works(client, theirs, their_key) == 200


@pytest.mark.parametrize("key_id", ["abc", "99999", "1e3", "١"])
async def test_revoking_a_key_that_is_not_there_is_404(client, key_id):
    account_id, _ = await new_account(client)

    response = await client.delete(f"/v1/accounts/{account_id}/api-keys/{key_id}", headers=OPERATOR)

    assert response.status == 404 and response.content_type == "application/problem+json"


async def test_a_key_needs_a_name_and_a_known_scope(client):
    account_id, key = await new_account(client)

    response = await client.post(f"/v1/accounts/{account_id}/api-keys", headers=bearer(key),
                                 json={"scope": "admin"})

    assert response.status == 422
    assert set((await response.json())["errors"]) == {"name", "scope"}


async def test_a_key_revoked_through_one_process_stops_working_on_another_within_the_cache_ttl(
        aiohttp_client, settings, sqlite_database, fake_broker):
    # given two web processes on one database, the second with a clock the test moves
    first = await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))
    second_app = init_app(settings, database=sqlite_database, broker=fake_broker)
    ticks = Ticks()
    second_app[KEY_CACHE] = KeyCache(clock=ticks)
    second = await aiohttp_client(second_app)
    account_id, old = await new_account(first)
    new = (await (await create_key(first, account_id, bearer(old))).json())["key"]
    old_id = (await listed(first, account_id))[-1]["id"]
    assert await works(second, account_id, old) == 200  # the second process now holds the key in its cache

    # when the key is revoked through the first process
    assert (await first.delete(f"/v1/accounts/{account_id}/api-keys/{old_id}", headers=bearer(new))).status == 204

    # then the second stops taking it as soon as its cached entry is older than the TTL (well under 5 s)
    assert TTL_SECONDS < 5
    ticks.now += TTL_SECONDS
    assert await works(second, account_id, old) == 401
    assert await works(second, account_id, new) == 200


def test_the_key_cache_is_bounded_in_size_dropping_the_least_recently_used():
    cache = KeyCache(max_entries=2, clock=Ticks())
    cache.put("a", Principal("acct_a", key_id=1))
    cache.put("b", Principal("acct_b", key_id=2))
    cache.get("a")

    cache.put("c", Principal("acct_c", key_id=3))

    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (Principal("acct_a", key_id=1), None,
                                                                 Principal("acct_c", key_id=3))


async def test_the_key_operations_are_in_the_contract_with_their_errors(client):
    document = await (await client.get("/v1/openapi.json")).json()
    paths = document["paths"]

    operations = {(method, path): operation for path in ("/v1/accounts/{account_id}/api-keys",
                                                         "/v1/accounts/{account_id}/api-keys/{key_id}")
                  for method, operation in paths[path].items() if method != "parameters"}

    assert {operation["operationId"] for operation in operations.values()} == {
        "createApiKey", "listApiKeys", "revokeApiKey"}
    assert {"401", "403", "404", "409", "422", "429"} <= set(operations["post", "/v1/accounts/{account_id}/api-keys"]
                                                            ["responses"])
    assert {"401", "404"} <= set(operations["delete", "/v1/accounts/{account_id}/api-keys/{key_id}"]["responses"])
