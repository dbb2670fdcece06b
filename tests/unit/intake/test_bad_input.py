"""Bad input is a 4xx problem+json and writes nothing: digits of other scripts, cursors past 64 bits, broken
dunning steps, multipart bodies without a boundary, keys that are not ASCII, NUL wherever text enters."""

import asyncio
import base64

import aiohttp
import pytest
from sqlalchemy import func, select

from shared.models import (
    Call,
    Campaign,
    DunningSchedule,
    IdempotencyRecord,
    Lot,
    Message,
    OptOut,
    User,
    VoiceBroadcast,
)
from tests.support.realty import SENDER, account_key, client  # noqa: F401  (fixtures)
from twilio_sim.signature import twilio_signature

OPERATOR_KEY = "test-operator-key-0123456789"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}


def count(database, model) -> int:
    with database.read_only() as session:
        return session.scalar(select(func.count()).select_from(model))


async def assert_problem(response, status: int) -> dict:
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["status"] == status and problem["title"] and problem["detail"]
    return problem


async def raw_request(client, head: bytes) -> tuple[int, bytes]:
    """Send bytes no HTTP client library would send (a header that is not UTF-8); the status and the body."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(head)
    await writer.drain()
    response = await reader.read()
    writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# --- numbers in query strings and cursors ----------------------------------------------------------

LISTS = ["/v1/opt-outs?account_id=acct_1", "/v1/accounts/acct_1/transactions", "/v1/accounts/acct_1/numbers",
         "/v1/accounts/acct_1/dunning/runs", "/v1/messages?account_id=acct_1", "/v1/campaigns?account_id=acct_1",
         "/v1/campaigns/cmp_1/recipients", "/v1/accounts", "/v1/accounts/acct_1/payments",
         "/v1/accounts/acct_1/purchases", "/v1/accounts/acct_1/users"]
TEXT_ID_LISTS = LISTS[4:]  # paged by the ids of shared.ids (prefix_ and base32)


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("limit", ["²", "٣", "１０", "1_0", " 5", "+5", "-1", "0", "501", "9" * 30])
async def test_a_limit_that_is_not_ascii_digits_in_range_is_a_422_naming_limit(client, path, limit):
    separator = "&" if "?" in path else "?"

    response = await client.get(f"{path}{separator}limit={limit}", headers=OPERATOR)

    most = 100 if path.startswith("/v1/campaigns?") else 500  # campaigns come with their progress
    assert (await assert_problem(response, 422))["errors"] == {"limit": f"must be 1..{most}"}


@pytest.mark.parametrize("path", [path for path in TEXT_ID_LISTS if "recipients" not in path])
@pytest.mark.parametrize("cursor", [cursor_of("before:msg_01 OR 1=1"), cursor_of("before:" + "a" * 60),
                                    cursor_of("before:MSG_01ABC"), cursor_of("after:msg_01abc"), "%%%", "é"])
async def test_a_cursor_that_names_no_id_of_ours_is_a_422(client, path, cursor):
    separator = "&" if "?" in path else "?"

    response = await client.get(f"{path}{separator}cursor={cursor}", headers=OPERATOR)

    assert (await assert_problem(response, 422))["errors"] == {"cursor": "is not valid"}


@pytest.mark.parametrize("path", LISTS[:4])
@pytest.mark.parametrize("cursor", [cursor_of(f"before:{2**63}"), cursor_of(f"before:{10**30}"),
                                    cursor_of("before:²"), cursor_of(f"{2**64}"), "%%%", "é"])
async def test_a_cursor_past_64_bits_or_not_from_the_api_is_a_422(client, path, cursor):
    separator = "&" if "?" in path else "?"

    response = await client.get(f"{path}{separator}cursor={cursor}", headers=OPERATOR)

    assert (await assert_problem(response, 422))["errors"] == {"cursor": "is not valid"}


async def test_a_cursor_the_api_returned_still_pages(client, sqlite_database):
    for phone in ("+14155550100", "+14155550101", "+14155550102"):
        await client.post("/v1/opt-outs?account_id=acct_1", json={"phone": phone}, headers=OPERATOR)

    first = await (await client.get("/v1/opt-outs?account_id=acct_1&limit=2", headers=OPERATOR)).json()
    second = await (await client.get(f"/v1/opt-outs?account_id=acct_1&limit=2&cursor={first['next_cursor']}",
                                     headers=OPERATOR)).json()

    assert [o["phone"] for o in first["data"] + second["data"]] == ["+14155550102", "+14155550101", "+14155550100"]


async def test_a_cursor_made_by_hand_or_returned_by_another_list_is_a_422(client, sqlite_database, account_key):
    # given a page of opt-outs, whose next_cursor names a row id
    for phone in ("+14155550100", "+14155550101", "+14155550102"):
        await client.post("/v1/opt-outs?account_id=acct_1", json={"phone": phone}, headers=OPERATOR)
    first = await (await client.get("/v1/opt-outs?account_id=acct_1&limit=2", headers=OPERATOR)).json()
    assert first["next_cursor"] is not None
    with sqlite_database.read_only() as session:
        newest = session.scalar(select(func.max(OptOut.id)))
    own = {"Authorization": f"Bearer {account_key}"}

    # when that cursor is passed to another list, and one is made by hand out of a real id
    for path, cursor in [("/v1/accounts/acct_1/transactions", first["next_cursor"]),
                         ("/v1/accounts/acct_1/events", first["next_cursor"]),
                         ("/v1/opt-outs", cursor_of(f"before:{newest}"))]:
        response = await client.get(path, params={"cursor": cursor}, headers=own)

        # then each is a 422 naming the cursor, not an empty page
        assert (await assert_problem(response, 422))["errors"] == {"cursor": "is not valid"}, path


# --- amounts ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "method", "body", "field"), [
    ("/v1/accounts/acct_1/purchases", "POST", {"credits": "-100", "payment_method": "pm_card_visa"}, "credits"),
    ("/v1/accounts/acct_1/purchases", "POST", {"credits": "1e400", "payment_method": "pm_card_visa"}, "credits"),
    ("/v1/accounts/acct_1/purchases", "POST", {"payment_method": "pm_card_visa"}, "credits"),
    ("/v1/accounts/acct_1/auto-recharge", "PUT", {"enabled": True, "credits": "1e400"}, "credits"),
    ("/v1/accounts/acct_1/auto-recharge", "PUT", {"enabled": True, "threshold": "-1", "credits": "500"}, "threshold"),
])
async def test_a_bad_amount_is_a_422_naming_its_field(client, path, method, body, field):
    response = await client.request(method, path, json=body, headers=OPERATOR)

    assert list((await assert_problem(response, 422))["errors"]) == [field]


# --- dunning steps ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("step", "field"), [
    ({"day": 0, "sms": {}}, "steps[0].sms.body"),
    ({"day": 0, "email": {"body": "Please pay {{ amount_due }}"}}, "steps[0].email.subject"),
    ({"day": 0, "email": {"subject": "Payment failed"}}, "steps[0].email.body"),
    ({"day": 0, "email": {}}, "steps[0].email.subject"),
])
async def test_a_dunning_step_missing_a_text_is_a_422_and_the_schedule_stays_as_it_was(client, sqlite_database, step,
                                                                                       field):
    response = await client.put("/v1/accounts/acct_1/dunning", json={"steps": [step]}, headers=OPERATOR)

    assert field in (await assert_problem(response, 422))["errors"]
    assert count(sqlite_database, DunningSchedule) == 0


# --- multipart bodies without a boundary, or broken ---------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/opt-outs/import?account_id=acct_1", "/webhooks/twilio/status",
                                  "/webhooks/twilio/inbound"])
async def test_a_multipart_body_without_a_boundary_is_a_400_and_changes_nothing(client, sqlite_database, path):
    response = await client.post(path, data=b"--x\r\n\r\n+14155550100\r\n--x--\r\n",
                                 headers={**OPERATOR, "Content-Type": "multipart/form-data"})

    assert "boundary" in (await assert_problem(response, 400))["detail"]
    assert count(sqlite_database, OptOut) == count(sqlite_database, Message) == 0


async def test_a_multipart_part_without_headers_is_a_400_and_imports_nothing(client, sqlite_database):
    response = await client.post("/v1/opt-outs/import?account_id=acct_1", data=b"--x\r\nNone--x--\r\n",
                                 headers={**OPERATOR, "Content-Type": "multipart/form-data; boundary=x"})

    await assert_problem(response, 400)
    assert count(sqlite_database, OptOut) == 0


async def test_a_twilio_count_in_other_digits_is_read_as_absent_not_a_500(client, settings):
    params = {"MessageSid": "SM" + "b" * 32, "MessageStatus": "delivered", "NumSegments": "²",
              "ErrorCode": "9" * 30, "AccountSid": settings.twilio_account_sid}
    signature = twilio_signature(settings.twilio_auth_token, settings.public_base_url + "/webhooks/twilio/status",
                                 params)

    response = await client.post("/webhooks/twilio/status", data=params, headers={"X-Twilio-Signature": signature})

    assert response.status == 200  # kept for when the sid is stored, like any early report


# --- bodies that cannot be decoded ---------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize(("path", "content_type"), [
    ("/v1/accounts", "application/json"),  # JSON
    ("/webhooks/twilio/status", "application/x-www-form-urlencoded"),  # a form, before any key or signature
    ("/v1/opt-outs/import?account_id=acct_1", "text/csv"),  # CSV
])
async def test_a_body_that_does_not_decompress_is_a_400_and_nothing_is_logged_as_an_error(
        client, sqlite_database, caplog, path, content_type, encoding):
    # when a body says it is compressed and is not
    response = await client.post(path, data=b"not compressed at all",
                                 headers={**OPERATOR, "Content-Type": content_type, "Content-Encoding": encoding})

    # then it is a 400 naming the encoding, nothing is written, and no error nor traceback is logged
    assert encoding in (await assert_problem(response, 400))["detail"]
    assert count(sqlite_database, OptOut) == count(sqlite_database, Message) == 0
    assert not [record for record in caplog.records if record.levelname == "ERROR" or record.exc_info]


# --- headers that are not ASCII --------------------------------------------------------------------

@pytest.mark.parametrize("token", ["cl\xe9".encode("latin-1"), "clé".encode(), b"\xff\xfe"])
async def test_a_bearer_token_that_is_not_ascii_is_a_401_problem(client, token):
    status, body = await raw_request(client, b"GET /v1/accounts/acct_1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                             b"Authorization: Bearer " + token + b"\r\n\r\n")

    assert status == 401 and b'"Unauthorized"' in body


async def test_an_idempotency_key_that_is_not_ascii_is_a_400_and_creates_nothing(client, sqlite_database):
    body = b'{"phone": "+14155550100"}'
    status, _ = await raw_request(
        client, b"POST /v1/opt-outs?account_id=acct_1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Authorization: Bearer " + OPERATOR_KEY.encode() + b"\r\nIdempotency-Key: cl\xe9\r\n"
                b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    assert status == 400
    assert count(sqlite_database, OptOut) == count(sqlite_database, IdempotencyRecord) == 0


# --- NUL wherever text enters -------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/opt-outs?account_id=acct%00_1", "/v1/opt-outs?account_id=acct_1&cursor=%00",
                                  "/v1/accounts/acct%00_1", "/v1/accounts/acct_1/balance?x%00=1",
                                  "/v1/messages/msg%00_1"])
async def test_nul_in_the_path_or_the_query_string_is_a_400(client, path):
    await assert_problem(await client.get(path, headers=OPERATOR), 400)


async def test_nul_in_a_csv_field_is_a_400_naming_the_line_and_nothing_is_imported(client, sqlite_database):
    response = await client.post("/v1/opt-outs/import?account_id=acct_1",
                                 data="phone\n+14155550100\n+1415555\x000101\n".encode(),
                                 headers={**OPERATOR, "Content-Type": "text/csv"})

    assert "line 3" in (await assert_problem(response, 400))["detail"]
    assert count(sqlite_database, OptOut) == 0


async def test_a_csv_line_that_is_not_utf8_is_a_422_naming_the_line_and_nothing_is_imported(client, sqlite_database):
    # an unpaired surrogate written out as bytes (ED A0 80) is not UTF-8 either
    response = await client.post("/v1/opt-outs/import?account_id=acct_1",
                                 data=b"phone\n+14155550100\n+14155550101\xed\xa0\x80\n",
                                 headers={**OPERATOR, "Content-Type": "text/csv"})

    problem = await assert_problem(response, 422)
    assert "line 3" in problem["detail"] and problem["errors"] == {"csv": "line 3 is not UTF-8"}
    assert count(sqlite_database, OptOut) == 0


async def test_nul_in_a_multipart_csv_is_a_400_and_nothing_is_imported(client, sqlite_database):
    form = aiohttp.FormData()
    form.add_field("file", b"phone\n+14155550100\x00\n", filename="dnc.csv", content_type="text/csv")

    response = await client.post("/v1/opt-outs/import?account_id=acct_1", data=form, headers=OPERATOR)

    await assert_problem(response, 400)
    assert count(sqlite_database, OptOut) == 0


async def test_nul_in_a_campaign_csv_is_a_400_and_no_campaign_is_made(client, sqlite_database, account_key):
    response = await client.post(f"/v1/campaigns?name=Spring&from=%2B{SENDER[1:]}&body=Hi",
                                 data="to\n+14155550100\x00\n".encode(),
                                 headers={"Authorization": f"Bearer {account_key}", "Content-Type": "text/csv"})

    await assert_problem(response, 400)
    assert count(sqlite_database, Campaign) == 0


async def test_nul_in_a_json_key_or_value_is_a_400_and_nothing_is_written(client, sqlite_database):
    for body in ({"phone": "+14155550100\x00"}, {"ph\x00one": "+14155550100"}):
        response = await client.post("/v1/opt-outs?account_id=acct_1", json=body, headers=OPERATOR)
        await assert_problem(response, 400)

    assert count(sqlite_database, OptOut) == 0


# --- unknown fields on the sends ---------------------------------------------------------------------

@pytest.mark.parametrize(("path", "body", "unknown"), [
    ("/v1/messages", {"to": "+14155550100", "from": SENDER, "body": "Open house at 5",
                      "sendAt": "2030-01-01T09:00:00Z"}, ["sendAt"]),
    ("/v1/messages", {"to": "+14155550100", "from": SENDER, "body": "Open house", "media_url": "x", "priority": 1},
     ["media_url", "priority"]),
    ("/v1/campaigns", {"name": "Spring", "from": SENDER, "body": "Hi", "recipients": [{"to": "+14155550100"}],
                       "send_time": "2030-01-01T09:00:00Z"}, ["send_time"]),
    ("/v1/calls", {"to": "+14155550100", "from": SENDER, "say": "Open house at 5", "maxMinutes": 1}, ["maxMinutes"]),
    ("/v1/voice-broadcasts", {"name": "Spring", "from": SENDER, "say": "Hi", "recipients": [{"to": "+14155550100"}],
                              "quietHours": {"start": "09:00", "end": "20:00"}}, ["quietHours"]),
])
async def test_an_unknown_field_on_a_send_is_a_422_naming_it_and_nothing_is_sent(client, sqlite_database, account_key,
                                                                                  path, body, unknown):
    # when a send names a field the API does not know (a typo of send_at would otherwise go out at once)
    response = await client.post(path, json=body, headers={"Authorization": f"Bearer {account_key}"})

    # then it is a 422 naming each such field, and nothing was made
    problem = await assert_problem(response, 422)
    assert problem["errors"] == {name: "is not a known field" for name in unknown}
    assert [count(sqlite_database, model) for model in (Message, Campaign, Call, VoiceBroadcast)] == [0, 0, 0, 0]


@pytest.mark.parametrize(("extra", "errors"), [
    ("&sendAt=2030-01-01", {"sendAt": "is not a known field"}),
    ("&body=Bye", {"body": "is given more than once"}),
])
async def test_an_unknown_or_repeated_query_field_beside_a_campaign_csv_is_a_422_and_no_campaign_is_made(
        client, sqlite_database, account_key, extra, errors):
    response = await client.post(f"/v1/campaigns?name=Spring&from=%2B{SENDER[1:]}&body=Hi{extra}",
                                 data=b"to\n+14155550100\n",
                                 headers={"Authorization": f"Bearer {account_key}", "Content-Type": "text/csv"})

    problem = await assert_problem(response, 422)
    assert problem["errors"] == errors
    assert count(sqlite_database, Campaign) == 0


# --- instants near the ends of the calendar -----------------------------------------------------------

@pytest.mark.parametrize(("field", "instant"), [
    ("granted_at", "9999-12-31T23:59:59+00:00"), ("granted_at", "0001-01-01T00:00:00+00:00"),
    ("expires_at", "9999-12-31T23:59:59-14:00"), ("granted_at", "1969-12-31T23:59:59+00:00"),
])
@pytest.mark.parametrize("kind", ["rollover", "plan", "bonus", "purchase"])
async def test_a_grant_dated_near_the_ends_of_the_calendar_is_a_422_naming_the_field(client, sqlite_database, field,
                                                                                   instant, kind):
    # when the operator grants credits dated at the very start or end of what a date can hold (its local date, cycle
    # and expiry would overflow once the account's zone or months were added)
    response = await client.post("/v1/accounts/acct_1/grants", headers=OPERATOR,
                                 json={"credits": "1", "kind": kind, field: instant})

    # then it is a 422 naming that field, not a 500, and no lot was made
    problem = await assert_problem(response, 422)
    assert set(problem["errors"]) == {field}
    assert count(sqlite_database, Lot) == 0


async def test_a_list_filter_before_1970_is_a_422_naming_it(client):
    response = await client.get("/v1/messages?account_id=acct_1&created_after=0001-01-01T00:00:00Z", headers=OPERATOR)

    problem = await assert_problem(response, 422)
    assert set(problem["errors"]) == {"created_after"}


@pytest.mark.parametrize("email", ["victim@example.com\r\nBcc: attacker@evil.example", "ada@exa\nmple.com",
                                   "ü@bücher.de", "group:ada@example.com;", "ada@example.com,eve@example.com",
                                   "ada lovelace@example.com", "no-at-sign", "@example.com", "ada@", "a@b@c"])
async def test_a_user_whose_email_no_mail_header_can_carry_is_a_422_and_is_not_made(client, sqlite_database, email):
    response = await client.post("/v1/accounts/acct_1/users", headers=OPERATOR,
                                 json={"name": "Evil", "email": email, "role": "owner"})

    problem = await assert_problem(response, 422)
    assert set(problem["errors"]) == {"email"}
    assert count(sqlite_database, User) == 0


# --- requests aiohttp itself cannot parse --------------------------------------------------------------

@pytest.mark.parametrize("head", [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer cq_live_" + b"s" * 20_000 + b"\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % n for n in range(500)) + b"\r\n",
    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
])
async def test_a_request_too_big_to_parse_is_a_400_logged_as_one_warning_without_its_bytes(client, caplog, head):
    # when a client sends a header line, a header count or a request line past aiohttp's limits
    status, _ = await raw_request(client, head)

    # then it is refused with 400, logged as one warning naming the fault, with no traceback and none of its bytes
    assert status == 400
    server = [record for record in caplog.records if record.name == "aiohttp.server"]
    assert [(record.levelname, record.exc_info) for record in server] == [("WARNING", None)]
    assert "refused a malformed request" in server[0].getMessage()
    assert "cq_live_" not in caplog.text and "sss" not in caplog.text and "Traceback" not in caplog.text


@pytest.mark.parametrize(("extra", "errors"), [
    ({}, {"recipients": "is required: give recipients (a list) or csv (text)"}),
    ({"csv": 123}, {"csv": "must be a string"}),
    ({"csv": "to\n+14155550100\n", "recipients": [{"to": "+14155550100"}]},
     {"recipients": "give recipients (a list) or csv (text), not both"}),
])
async def test_a_campaign_without_one_list_of_recipients_says_which_is_wrong(client, sqlite_database, account_key,
                                                                            extra, errors):
    response = await client.post("/v1/campaigns", headers={"Authorization": f"Bearer {account_key}"},
                                 json={"name": "Spring", "from": SENDER, "body": "Hi", **extra})

    problem = await assert_problem(response, 422)
    assert problem["errors"] == errors
    assert count(sqlite_database, Campaign) == 0
