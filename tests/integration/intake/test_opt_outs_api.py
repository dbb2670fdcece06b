"""/v1/opt-outs over HTTP: account scoping, E.164 validation, paging, removal rules, do-not-contact imports."""

import aiohttp
import pytest

from intake.app import init_app
from shared.api_keys import issue_key
from shared.messaging.opt_outs import FROM_STOP_KEYWORD, opt_out
from shared.models import Account

OPERATOR = {"Authorization": "Bearer test-operator-key-0123456789"}
ALICE = "+14155550100"


@pytest.fixture
def keys(sqlite_database) -> dict[str, dict]:
    with sqlite_database.unit_of_work() as session:
        session.add_all([Account(id="acct_1", name="Realty"), Account(id="acct_2", name="Church")])
        session.flush()
        return {account: {"Authorization": f"Bearer {issue_key(session, account)}"} for account in ("acct_1", "acct_2")}


@pytest.fixture
async def client(aiohttp_client, settings, sqlite_database, fake_broker, keys):
    return await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))


async def test_an_account_opts_a_recipient_out_once(client, keys):
    first = await client.post("/v1/opt-outs", json={"phone": "+1 (415) 555-0100"}, headers=keys["acct_1"])
    again = await client.post("/v1/opt-outs", json={"phone": ALICE}, headers=keys["acct_1"])

    assert (first.status, again.status) == (201, 200)
    body = await first.json()
    assert (body["phone"], body["source"]) == (ALICE, "api") and body["created_at"].endswith("+00:00")
    listed = await (await client.get("/v1/opt-outs", headers=keys["acct_1"])).json()
    assert [o["phone"] for o in listed["data"]] == [ALICE] and listed["next_cursor"] is None


@pytest.mark.parametrize("body", [{"phone": "555-0100"}, {"phone": "+1415"}, {}, {"phone": ALICE, "extra": 1}])
async def test_a_bad_phone_is_a_422_naming_the_field(client, keys, body):
    response = await client.post("/v1/opt-outs", json=body, headers=keys["acct_1"])

    assert response.status == 422 and response.content_type == "application/problem+json"
    assert (await response.json())["errors"]


async def test_an_idempotency_key_replays_the_first_answer(client, keys):
    headers = {**keys["acct_1"], "Idempotency-Key": "opt-1"}

    first = await client.post("/v1/opt-outs", json={"phone": ALICE}, headers=headers)
    replay = await client.post("/v1/opt-outs", json={"phone": ALICE}, headers=headers)

    assert (first.status, replay.status) == (201, 201) and replay.headers["Idempotent-Replayed"] == "true"


async def test_opt_outs_page_newest_first(client, keys):
    phones = [f"+1415555{n:04d}" for n in range(5)]
    for phone in phones:
        await client.post("/v1/opt-outs", json={"phone": phone}, headers=keys["acct_1"])

    seen, cursor = [], None
    for _ in range(5):
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await (await client.get("/v1/opt-outs", params=query, headers=keys["acct_1"])).json()
        seen += [o["phone"] for o in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == list(reversed(phones))


async def test_a_cursor_not_from_the_api_is_a_422(client, keys):
    response = await client.get("/v1/opt-outs", params={"cursor": "%%%"}, headers=keys["acct_1"])

    assert response.status == 422


async def test_an_account_key_sees_only_its_own_account(client, keys):
    await client.post("/v1/opt-outs", json={"phone": ALICE}, headers=keys["acct_1"])

    other = await (await client.get("/v1/opt-outs", headers=keys["acct_2"])).json()
    named = await client.get("/v1/opt-outs", params={"account_id": "acct_1"}, headers=keys["acct_2"])
    removal = await client.delete(f"/v1/opt-outs/{ALICE}", params={"account_id": "acct_1"}, headers=keys["acct_2"])

    assert other["data"] == [] and named.status == 404 and removal.status == 404


async def test_the_operator_names_the_account(client, keys):
    await client.post("/v1/opt-outs", json={"phone": ALICE}, params={"account_id": "acct_2"}, headers=OPERATOR)

    unnamed = await client.get("/v1/opt-outs", headers=OPERATOR)
    named = await (await client.get("/v1/opt-outs", params={"account_id": "acct_2"}, headers=OPERATOR)).json()
    missing = await client.get("/v1/opt-outs", params={"account_id": "acct_404"}, headers=OPERATOR)

    assert unnamed.status == 422 and "account_id" in (await unnamed.json())["errors"]
    assert [o["phone"] for o in named["data"]] == [ALICE]
    assert missing.status == 404


async def test_the_customer_removes_its_own_opt_out(client, keys):
    await client.post("/v1/opt-outs", json={"phone": ALICE}, headers=keys["acct_1"])

    removed = await client.delete("/v1/opt-outs/%2B14155550100", headers=keys["acct_1"])
    again = await client.delete(f"/v1/opt-outs/{ALICE}", headers=keys["acct_1"])

    assert (removed.status, again.status) == (204, 404)


async def test_a_recipients_own_stop_cannot_be_removed_through_the_api(client, keys, sqlite_database):
    with sqlite_database.unit_of_work() as session:
        opt_out(session, "acct_1", ALICE, FROM_STOP_KEYWORD)

    response = await client.delete(f"/v1/opt-outs/{ALICE}", headers=keys["acct_1"])

    assert response.status == 409 and "START" in (await response.json())["detail"]


async def test_a_csv_import_counts_what_it_added_and_lists_bad_rows(client, keys):
    csv_text = f"phone,name\n{ALICE},Alice\n+14155550101,Bob\nnope,Nobody\n{ALICE},Alice twice\n"

    response = await client.post("/v1/opt-outs/import", data=csv_text.encode(),
                                 headers={**keys["acct_1"], "Content-Type": "text/csv"})
    again = await client.post("/v1/opt-outs/import", data=csv_text.encode(),
                              headers={**keys["acct_1"], "Content-Type": "text/csv"})

    assert response.status == 200
    body = await response.json()
    assert (body["added"], body["invalid_count"]) == (2, 1)
    assert [(row["line"], row["value"]) for row in body["invalid_rows"]] == [(4, "nope")]
    assert (await again.json())["added"] == 0


async def test_a_multipart_upload_imports_its_file_part(client, keys):
    form = aiohttp.FormData()
    form.add_field("file", "\ufeffphone\r\n+14155550102\r\n".encode(), filename="dnc.csv", content_type="text/csv")

    response = await client.post("/v1/opt-outs/import", data=form, headers=keys["acct_1"])

    assert response.status == 200 and (await response.json())["added"] == 1
    listed = await (await client.get("/v1/opt-outs", headers=keys["acct_1"])).json()
    assert [(o["phone"], o["source"]) for o in listed["data"]] == [("+14155550102", "import")]


@pytest.mark.parametrize(("content_type", "data", "status"), [
    ("application/json", b'{"phone": "+14155550100"}', 415),
    ("text/csv", b"", 422),
    ("text/csv", b"\xff\xfe+14155550100", 422),
])
async def test_an_import_that_is_not_a_csv_is_refused(client, keys, content_type, data, status):
    response = await client.post("/v1/opt-outs/import", data=data,
                                 headers={**keys["acct_1"], "Content-Type": content_type})

    assert response.status == status and response.content_type == "application/problem+json"


async def test_the_opt_out_paths_are_documented(client):
    paths = (await (await client.get("/v1/openapi.json")).json())["paths"]

    assert {"get", "post"} <= set(paths["/v1/opt-outs"]) and "delete" in paths["/v1/opt-outs/{phone}"]
    assert "post" in paths["/v1/opt-outs/import"] and "post" in paths["/webhooks/twilio/status"]


async def test_an_opt_out_with_an_extension_opts_the_line_out(client, keys):
    # given a do-not-contact list and an opt-out that name an office line with its extension
    imported = await client.post("/v1/opt-outs/import", data=b"phone\n+1 415 555 0101 x22\n",
                                 headers={**keys["acct_1"], "Content-Type": "text/csv"})
    added = await client.post("/v1/opt-outs", json={"phone": "+1 415 555 0100 ext. 7"}, headers=keys["acct_1"])

    # then each opts the line out: a text cannot reach an extension, so the line is what is kept from texts
    assert (imported.status, (await imported.json())["added"], added.status) == (200, 1, 201)
    listed = await (await client.get("/v1/opt-outs", headers=keys["acct_1"])).json()
    assert sorted(o["phone"] for o in listed["data"]) == [ALICE, "+14155550101"]
