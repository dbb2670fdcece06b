"""The console in-process (SQLite, fake Redis): its session, its CSRF check, and pages read from the same domain
code as the API — the usage chart from daily usage, transactions with their filters and CSV."""

import csv
import html
import io
import re
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import select

from intake.app import init_app
from intake.appkeys import REDIS
from intake.console.session import COOKIE_NAME
from shared import api_keys
from shared.ledger import allocations
from shared.messaging import senders
from shared.models import Account, Message
from shared.reporting import daily_usage
from tests.support.spending import new_account, send

OPERATOR_KEY = {"Authorization": "Bearer test-operator-key-0123456789"}
NOW = datetime(2026, 11, 20, 15, tzinfo=UTC)
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def app(settings, sqlite_database, fake_broker):
    return init_app(settings, database=sqlite_database, broker=fake_broker, clock=lambda: NOW)


@pytest.fixture
async def client(aiohttp_client, app):
    return await aiohttp_client(app)


@pytest.fixture
def team(sqlite_database) -> dict:
    """An account with 1000 credits, a user Ada with 100 of them, an account key and Ada's key."""
    with sqlite_database.unit_of_work() as session:
        account_id = new_account(session, credits=1_000_000, now=NOW - timedelta(days=40))
        ada = allocations.create_user(session, account_id, name="Ada", email="ada@example.com", phone=None,
                                      role="user", monthly_credits=0, now=NOW - timedelta(days=40))
        allocations.update_user(session, account_id, ada.id, now=NOW - timedelta(days=40), total_credits=100_000)
        return {"account_id": account_id, "ada": ada.id, "key": api_keys.issue_key(session, account_id),
                "ada_key": api_keys.issue_key(session, account_id, user_id=ada.id)}


async def sign_in(client, key: str) -> str:
    """Sign in; the CSRF token of the page signed in to."""
    form = await (await client.get("/sign-in")).text()
    home = await client.post("/sign-in", data={"key": key, "csrf_token": TOKEN.search(form).group(1)})
    assert home.status == 200, await home.text()
    return TOKEN.search(await home.text()).group(1)


def figure(html: str, element_id: str) -> str:
    return re.search(rf'id="{element_id}"[^>]*>([^<]*)<', html).group(1).strip()


async def test_signing_in_sets_an_encrypted_http_only_cookie_that_holds_no_key_and_pages_load_only_their_own(client, team):
    # when the owner signs in
    form = await (await client.get("/sign-in")).text()
    signed_in = await client.post("/sign-in", data={"key": team["key"], "csrf_token": TOKEN.search(form).group(1)},
                                  allow_redirects=False)

    # then the answer sets the console's cookie, HttpOnly, same-site, and neither the key nor its digest is readable
    assert signed_in.status == 303 and signed_in.headers["Location"] == "/"
    cookie = signed_in.cookies[COOKIE_NAME]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    assert team["key"] not in cookie.value and api_keys.hash_key(team["key"]) not in cookie.value
    home = await client.get("/")
    assert str(home.url).endswith(f"/accounts/{team['account_id']}")
    # and the pages load only the console's own scripts and cannot be framed
    assert "default-src 'self'" in home.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in home.headers["Content-Security-Policy"]


async def test_a_wrong_key_does_not_sign_in(client, team):
    form = await (await client.get("/sign-in")).text()
    refused = await client.post("/sign-in", data={"key": "cq_not-a-key", "csrf_token": TOKEN.search(form).group(1)})
    assert refused.status == 401
    assert "not valid" in await refused.text()
    assert (await client.get(f"/accounts/{team['account_id']}")).url.path == "/sign-in"


async def test_a_change_to_a_user_that_is_not_there_answers_404_as_the_api_does(client, team):
    # given a signed-in owner; when a user id that does not exist is changed, and deleted
    token = await sign_in(client, team["key"])
    changed = await client.post(f"/accounts/{team['account_id']}/users/user_nope",
                                data={"total_credits": "5", "csrf_token": token})
    deleted = await client.post(f"/accounts/{team['account_id']}/users/user_nope/delete", data={"csrf_token": token})

    # then each page says so with a 404, not a 422
    assert (changed.status, deleted.status) == (404, 404)
    assert "user_nope" in await deleted.text()


async def test_a_form_without_the_csrf_token_is_refused_and_changes_nothing(client, team, sqlite_database):
    # given a signed-in owner
    token = await sign_in(client, team["key"])

    # when a form is posted without the token, then with another one, then with the session's
    bare = await client.post(f"/accounts/{team['account_id']}/users", data={"name": "Eve", "email": "e@x.io"})
    forged = await client.post(f"/accounts/{team['account_id']}/users",
                               data={"name": "Eve", "email": "e@x.io", "csrf_token": "x" * 43})
    genuine = await client.post(f"/accounts/{team['account_id']}/users",
                                data={"name": "Bob", "email": "b@x.io", "role": "admin", "csrf_token": token})

    # then the first two are refused with 403 and only the genuine one made a user
    assert (bare.status, forged.status, genuine.status) == (403, 403, 200)
    with sqlite_database.read_only() as session:
        names = sorted(user.name for user in allocations.list_users(session, team["account_id"]))
    assert names == ["Ada", "Bob"]


async def test_signing_out_ends_the_session(client, team):
    token = await sign_in(client, team["key"])
    out = await client.post("/sign-out", data={"csrf_token": token})
    assert out.url.path == "/sign-in"
    assert (await client.get(f"/accounts/{team['account_id']}")).url.path == "/sign-in"


def console_cookie(client) -> str:
    return client.session.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE_NAME].value


async def test_a_copy_of_the_cookie_taken_before_signing_out_is_refused_too(client, team, sqlite_database):
    # given a signed-in owner, and a copy of the session's cookie (say, from a shared machine's browser)
    token = await sign_in(client, team["key"])
    copied = console_cookie(client)

    # when the owner signs out, and the copy is sent afterwards, to read a page and to post a form
    await client.post("/sign-out", data={"csrf_token": token})
    client.session.cookie_jar.clear()
    with_copy = {"Cookie": f"{COOKIE_NAME}={copied}"}
    read = await client.get(f"/accounts/{team['account_id']}", headers=with_copy, allow_redirects=False)
    client.session.cookie_jar.clear()
    posted = await client.post(f"/accounts/{team['account_id']}/users", headers=with_copy, allow_redirects=False,
                               data={"name": "Eve", "email": "e@x.io", "role": "admin", "csrf_token": token})
    client.session.cookie_jar.clear()

    # then both are sent to sign in, and the form changed nothing
    assert (read.status, read.headers["Location"]) == (303, "/sign-in")
    assert (posted.status, posted.headers.get("Location")) == (303, "/sign-in"), await posted.text()
    with sqlite_database.read_only() as session:
        assert [user.name for user in allocations.list_users(session, team["account_id"])] == ["Ada"]
    # and signing in again starts a session that works
    await sign_in(client, team["key"])
    assert (await client.get(f"/accounts/{team['account_id']}")).status == 200


async def test_while_redis_is_away_a_session_still_works_and_signing_out_still_ends_the_browsers_cookie(
        client, app, team, monkeypatch, caplog):
    # given a signed-in owner, and then Redis out of reach
    token = await sign_in(client, team["key"])

    async def unreachable(*_args, **_kwargs):
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(app[REDIS], "exists", unreachable)
    monkeypatch.setattr(app[REDIS], "set", unreachable)

    # when pages are read, then the owner signs out
    read = await client.get(f"/accounts/{team['account_id']}")
    await client.get(f"/accounts/{team['account_id']}")
    out = await client.post("/sign-out", data={"csrf_token": token})

    # then the page loaded (as the rate limits let requests pass), and the sign-out cleared the browser's cookie,
    # with a warning that a copy of it would stay valid
    assert read.status == 200
    assert out.url.path == "/sign-in"
    assert (await client.get(f"/accounts/{team['account_id']}")).url.path == "/sign-in"
    assert "could not record a console sign-out" in caplog.text
    assert caplog.text.count("could not check console sessions") == 1  # not a line a request


async def test_a_revoked_key_ends_its_session(client, team, sqlite_database):
    # given the owner signed in with a second key
    with sqlite_database.unit_of_work() as session:
        second = api_keys.issue_key(session, team["account_id"], name="console")
        second_id = api_keys.find_key(session, second).id
    await sign_in(client, second)
    assert (await client.get(f"/accounts/{team['account_id']}")).status == 200

    # when that key is revoked through the API
    revoked = await client.delete(f"/v1/accounts/{team['account_id']}/api-keys/{second_id}",
                                  headers={"Authorization": f"Bearer {team['key']}"})
    assert revoked.status == 204

    # then its session is over
    assert (await client.get(f"/accounts/{team['account_id']}")).url.path == "/sign-in"


async def test_the_dashboard_charts_credits_per_day_by_kind_and_per_user(client, team, sqlite_database):
    # given texts sent by the pool and by Ada in the last days, and an MMS, partly folded into daily usage
    with sqlite_database.unit_of_work() as session:
        send(session, team["account_id"], "m1", at=NOW - timedelta(days=2), usage=1000, carrier_fee=5)
        send(session, team["account_id"], "m2", at=NOW - timedelta(days=1), usage=2000, user_id=team["ada"])
    with sqlite_database.unit_of_work() as session:
        daily_usage.fold_new_entries(session)
    with sqlite_database.unit_of_work() as session:
        send(session, team["account_id"], "m3", at=NOW - timedelta(hours=1), usage=3000, mms=True)

    # when the owner opens the dashboard, and Ada hers
    await sign_in(client, team["key"])
    owners = await (await client.get(f"/accounts/{team['account_id']}")).text()
    await sign_in(client, team["ada_key"])
    adas = await (await client.get(f"/accounts/{team['account_id']}?days=90")).text()

    # then the chart adds up every kind, per day, and the credits per user name who spent them
    assert figure(owners, "usage-total") == "6.005"
    assert owners.count("<rect ") == 4  # texts and a carrier fee on day -2, texts on -1, MMS today
    assert "2026-11-20 MMS: 3 credits" in owners and "2026-11-18 Carrier fees: 0.005 credits" in owners
    per_user = re.findall(r"<tr><td>([^<]+)</td><td class=\"num\">([^<]+)</td></tr>",
                          owners.split('id="per-user"')[1])
    assert per_user == [("Company pool (owners and admins)", "4.005"), ("Ada", "2")]
    # and Ada sees her own spending and wallet only
    assert figure(adas, "usage-total") == "2" and 'id="per-user"' not in adas
    assert figure(adas, "balance") == "98"


async def test_transactions_filter_by_kind_and_local_dates_and_the_csv_holds_every_match(client, team,
                                                                                        sqlite_database):
    # given spending on two days
    with sqlite_database.unit_of_work() as session:
        send(session, team["account_id"], "m1", at=NOW - timedelta(days=3), usage=1000, carrier_fee=5)
        send(session, team["account_id"], "m2", at=NOW - timedelta(days=1), usage=2000)
    await sign_in(client, team["key"])
    path = f"/accounts/{team['account_id']}/transactions"

    # when the owner filters usage entries of the last two days, and exports all usage as CSV
    recent = await (await client.get(path, params={"kind": "usage", "from": "2026-11-18", "to": "2026-11-20"})).text()
    exported = await client.get(f"{path}.csv", params={"kind": "usage"})

    # then the page shows the one matching entry with its running subtotal, the CSV both
    rows = re.findall(r"<td>usage</td><td class=\"num\">([^<]+)</td>\s*<td class=\"num\">([^<]+)</td>", recent)
    assert rows == [("-2", "996.995")]
    lines = list(csv.DictReader(io.StringIO(await exported.text())))
    assert [(line["kind"], line["credits"], line["balance_after"]) for line in lines] == [
        ("usage", "-2", "996.995"), ("usage", "-1", "999")]
    assert exported.headers["Content-Disposition"].startswith("attachment")


async def test_a_user_sees_only_its_own_transactions_and_none_of_the_owners_pages(client, team, sqlite_database):
    with sqlite_database.unit_of_work() as session:
        send(session, team["account_id"], "m1", at=NOW - timedelta(days=1), usage=1000)
        send(session, team["account_id"], "m2", at=NOW - timedelta(days=1), usage=2000, user_id=team["ada"])
    await sign_in(client, team["ada_key"])
    page = await (await client.get(f"/accounts/{team['account_id']}/transactions")).text()
    usage = re.findall(r"<td>usage</td><td class=\"num\">([^<]+)</td>", page)
    assert usage == ["-2"]
    assert (await client.get(f"/accounts/{team['account_id']}/users")).status == 403
    assert (await client.get(f"/accounts/{team['account_id']}/billing")).status == 403


async def test_a_group_text_is_accepted_once_per_recipient_and_charged_as_the_api_charges(client, team, sqlite_database,
                                                                                        enqueued):
    # given the owner on the compose page of an account with a sender number
    with sqlite_database.unit_of_work() as session:
        senders.add_number(session, team["account_id"], "+14155550123", "long_code")
    token = await sign_in(client, team["key"])

    # when a text goes to two numbers, one of them twice, and another to a number that is not one
    sent = await client.post(f"/accounts/{team['account_id']}/compose", data={
        "to": "+14155550100, +14155550101\n+14155550100", "from": "+14155550123", "body": "Open house Sunday",
        "csrf_token": token})
    refused = await client.post(f"/accounts/{team['account_id']}/compose", data={
        "to": "555", "from": "+14155550123", "body": "Open house Sunday", "csrf_token": token})

    # then two messages were accepted, each priced as the API prices it, and their send jobs enqueued
    page = await sent.text()
    assert sent.status == 200, re.findall(r'banner danger" role="alert">([^<]*)<', page)
    assert page.count("accepted (1 credits)") == 2
    assert sorted(message.actor_name for message in enqueued) == ["send_message", "send_message"]
    with sqlite_database.read_only() as session:
        stored = session.execute(select(Message.to, Message.from_, Message.credits_estimated, Message.status)
                                 .where(Message.account_id == team["account_id"]).order_by(Message.to)).all()
    assert [tuple(row) for row in stored] == [("+14155550100", "+14155550123", 1000, "accepted"),
                                               ("+14155550101", "+14155550123", 1000, "accepted")]
    # and the bad number is refused with the API's reason
    assert refused.status == 422
    assert "555: Invalid message: to" in html.unescape(await refused.text())


@pytest.mark.parametrize("role_key, next_step", [("key", "Buy credits or turn on auto-recharge on the Billing page."),
                                                 ("ada_key", None)])
async def test_a_balance_under_the_threshold_shows_a_banner_saying_what_to_do(client, team, sqlite_database, role_key,
                                                                              next_step):
    # given an account whose 900 pool credits are under its 950 threshold
    patched = await client.patch(f"/v1/accounts/{team['account_id']}", json={"low_balance_threshold": "1950"},
                                 headers={"Authorization": f"Bearer {team['key']}"})
    assert patched.status == 200, await patched.text()

    # when the owner, then a user, opens the dashboard
    await sign_in(client, team[role_key])
    page = await (await client.get(f"/accounts/{team['account_id']}")).text()

    # then the owner is told the balance is low and what to do; a user's own wallet has no such banner
    if next_step:
        assert "Credits are running low: 1000 left, under the 1950 threshold." in page and next_step in page
    else:
        assert "running low" not in page


async def test_a_locked_account_shows_why_and_what_to_do(client, team, sqlite_database):
    with sqlite_database.unit_of_work() as session:
        account = session.get(Account, team["account_id"])
        account.status, account.status_reason = "locked", "the balance went below zero"
    await sign_in(client, team["key"])
    page = await (await client.get(f"/accounts/{team['account_id']}")).text()
    assert ("The account is locked: the balance went below zero. Buy credits on the Billing page to unlock it."
            in page)


async def test_compose_estimates_a_voice_broadcast_as_the_api_does_and_names_a_bad_figure(client, team):
    # given an owner on the compose page
    token = await sign_in(client, team["key"])
    compose = await (await client.get(f"/accounts/{team['account_id']}/compose")).text()
    assert 'id="voice-ticker"' in compose and 'for="voice_detection"' in compose

    # when it asks what 500 numbers of 2 minutes with answering-machine detection cost
    path = f"/accounts/{team['account_id']}/compose/voice-estimate"
    fragment = await (await client.post(path, data={"recipients": "500", "expected_minutes": "2",
                                                     "machine_detection": "true", "csrf_token": token})).text()

    # then it shows the API's own figures: 500 x (2 x 2 + 0.5) credits
    api = await (await client.post("/v1/estimate", headers={"Authorization": f"Bearer {team['key']}"}, json={
        "channel": "voice_broadcast", "recipients": 500, "expected_minutes": 2, "machine_detection": True})).json()
    assert figure(fragment, "voice-credits") == api["credits"] == "2250"
    assert figure(fragment, "voice-detection") == api["detection_per_number"]
    # and a figure that is not a whole number is named, with nothing estimated
    refused = await (await client.post(path, data={"recipients": "many", "expected_minutes": "2",
                                                    "csrf_token": token})).text()
    assert 'id="voice-credits"' not in refused and "recipients must be a number of recipients" in refused
