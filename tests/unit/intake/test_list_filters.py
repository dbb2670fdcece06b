"""A list's query string is checked as a body is: a filter it does not take (a typo) is a 422 naming it, never
silently ignored; the ledger's entries filter by kind."""

import pytest

from tests.support import realty

account_key, client = realty.account_key, realty.client  # the fixtures of one account, Realty

OPERATOR = {"Authorization": "Bearer test-operator-key-0123456789"}

EVERY_LIST = ["/v1/opt-outs?account_id=acct_1", "/v1/accounts/acct_1/transactions", "/v1/accounts/acct_1/numbers",
              "/v1/accounts/acct_1/dunning/runs", "/v1/messages?account_id=acct_1", "/v1/campaigns?account_id=acct_1",
              "/v1/accounts", "/v1/accounts/acct_1/payments", "/v1/accounts/acct_1/purchases",
              "/v1/accounts/acct_1/users", "/v1/accounts/acct_1/events", "/v1/accounts/acct_1/api-keys",
              "/v1/accounts/acct_1/webhook-endpoints"]


async def problem_of(response, status: int) -> dict:
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    return await response.json()


@pytest.mark.parametrize("path", EVERY_LIST)
async def test_a_filter_the_list_does_not_take_is_a_422_naming_it(client, path):
    separator = "&" if "?" in path else "?"

    response = await client.get(f"{path}{separator}bogus=1", headers=OPERATOR)

    assert (await problem_of(response, 422))["errors"] == {"bogus": "is not a known field"}


@pytest.mark.parametrize("path", ["/v1/accounts/acct_1/api-keys", "/v1/accounts/acct_1/webhook-endpoints"])
async def test_a_list_of_one_page_refuses_paging_it_does_not_do(client, path):
    response = await client.get(f"{path}?limit=10", headers=OPERATOR)

    assert (await problem_of(response, 422))["errors"] == {"limit": "is not a known field"}


async def test_transactions_filter_by_kind_and_another_account_cannot_list_them(client, account_key):
    # given a bonus grant and a purchase grant on Realty
    for credits, kind in (("5", "bonus"), ("7", "purchase")):
        granted = await client.post("/v1/accounts/acct_1/grants", json={"credits": credits, "kind": kind},
                                    headers=OPERATOR)
        assert granted.status == 201, await granted.text()
    own = {"Authorization": f"Bearer {account_key}"}

    # when Realty lists its purchase entries, and a kind that is no kind
    purchases = await client.get("/v1/accounts/acct_1/transactions?kind=purchase", headers=own)
    usage = await client.get("/v1/accounts/acct_1/transactions?kind=usage", headers=own)
    wrong = await client.get("/v1/accounts/acct_1/transactions?kind=charge", headers=own)

    # then only the purchase comes back, no usage, and the wrong kind is a 422 naming it
    assert [(row["kind"], row["credits"]) for row in (await purchases.json())["data"]] == [("purchase", "7")]
    assert (await usage.json())["data"] == []
    assert list((await problem_of(wrong, 422))["errors"]) == ["kind"]
    # and another account's key gets 404 for Realty's entries, filtered or not
    other = await (await client.post("/v1/accounts", json={"name": "Other"}, headers=OPERATOR)).json()
    stranger = {"Authorization": f"Bearer {other['api_key']}"}
    assert (await client.get("/v1/accounts/acct_1/transactions?kind=purchase", headers=stranger)).status == 404


async def test_a_filter_given_twice_is_a_422_naming_it_not_one_value_dropped(client):
    response = await client.get("/v1/accounts/acct_1/payments?status=declined&status=succeeded", headers=OPERATOR)

    assert (await problem_of(response, 422))["errors"] == {"status": "is given more than once"}


@pytest.mark.parametrize("path", [path for path in EVERY_LIST if not path.endswith(("api-keys", "endpoints"))])
async def test_a_page_size_given_twice_is_a_422_naming_it_on_every_paged_list(client, path):
    separator = "&" if "?" in path else "?"

    response = await client.get(f"{path}{separator}limit=2&limit=3", headers=OPERATOR)

    assert (await problem_of(response, 422))["errors"] == {"limit": "is given more than once"}
