"""Twilio's webhooks through the real app: signatures, status bookkeeping, settlement, inbound keywords."""

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from intake.app import init_app
from intake.enqueue import Enqueuer
from intake.routes.webhooks import CallbackBatcher
from shared.config import load_settings
from shared.errors import CallbackRejected
from shared.ledger import book
from shared.messaging.rates import default_rate_card
from shared.messaging.statuses import Callback, StatusChange, apply_early_statuses
from shared.models import Account, EarlyStatus, Entry, Message, OptOut, PhoneNumber
from shared.twilio.gateway import STATUS_CALLBACK_PATH, TwilioGateway
from shared.twilio.signatures import Credentials, SignedForm
from tests.support.ports import free_port
from tests.twilio_sim_fixtures import (  # noqa: F401  (fixtures)
    _simulator_server,
    background_loop,
    simulator,
)
from twilio_sim.signature import twilio_signature

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SID = "SM" + "a" * 32
OUR_NUMBER = "+14155550199"
CONTACT = "+14155550100"
STATUS_PATH = "/webhooks/twilio/status"
INBOUND_PATH = "/webhooks/twilio/inbound"
CARD = default_rate_card()




@pytest.fixture
def database(sqlite_database):
    with sqlite_database.unit_of_work() as session:
        session.add(Account(id="acct_1", name="Realty", balance=5_000,
                            help_text="Realty Co: call 415-555-0199. Reply STOP to opt out."))
        session.flush()
        session.add(PhoneNumber(account_id="acct_1", phone=OUR_NUMBER, type="long_code"))
        hold = book.reserve(session, "acct_1", 1_000, reference="msg_1", idempotency_key="message:msg_1:hold:0",
                            ttl_seconds=900, now=T0)
        session.add(Message(id="msg_1", account_id="acct_1", to=CONTACT, from_=OUR_NUMBER, body="Open house Sunday",
                            status="sent", twilio_sid=SID, twilio_status="queued", hold_id=hold.id,
                            credits_estimated=1_000, created_at=T0, updated_at=T0))
    return sqlite_database


@pytest.fixture
async def client(aiohttp_client, settings, database, fake_broker, enqueued):
    return await aiohttp_client(init_app(settings, database=database, broker=fake_broker))


def signed(settings, path: str, params: dict, *, token: str | None = None, base: str | None = None) -> dict:
    url = (base or settings.public_base_url) + path
    return {"X-Twilio-Signature": twilio_signature(token or settings.twilio_auth_token, url, params)}


async def post_status(client, settings, status: str, *, sid: str = SID, **extra) -> int:
    params = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "AccountSid": settings.twilio_account_sid,
              "To": CONTACT, "From": OUR_NUMBER, **extra}
    response = await client.post(STATUS_PATH, data=params, headers=signed(settings, STATUS_PATH, params))
    return response.status


def stored(database, message_id="msg_1") -> Message:
    with database.unit_of_work() as session:
        return session.get(Message, message_id)


def usage_entries(database, message_id="msg_1") -> int:
    """How many times the message was charged."""
    with database.unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(Entry).where(Entry.kind == "usage",
                                                                            Entry.reference == message_id))


# --- status callbacks -----------------------------------------------------------------------------


async def test_a_signed_final_status_is_recorded_and_settled_in_the_same_transaction(client, settings, database,
                                                                                     enqueued):
    status = await post_status(client, settings, "delivered", NumSegments="2")

    assert status == 200
    message = stored(database)
    assert (message.status, message.twilio_status, message.twilio_segments) == ("delivered", "delivered", 2)
    assert message.credits_charged == 2 * CARD.price("sms", country="US", sender_type="long_code")
    assert usage_entries(database) == 1 and enqueued == []  # no settle job: nothing left to do


async def test_an_intermediate_status_is_recorded_without_settlement(client, settings, database, enqueued):
    assert await post_status(client, settings, "sent") == 200

    assert stored(database).twilio_status == "sent" and stored(database).credits_charged is None
    assert usage_entries(database) == 0 and enqueued == []


async def test_an_undelivered_status_keeps_twilios_error_code(client, settings, database, enqueued):
    assert await post_status(client, settings, "undelivered", ErrorCode="30003") == 200

    assert (stored(database).status, stored(database).error_code) == ("undelivered", 30003)
    assert usage_entries(database) == 1  # Twilio charges what it sent, delivered or not


@pytest.mark.parametrize("case", ["missing", "wrong token", "other url", "tampered field"])
async def test_unsigned_or_forged_callbacks_are_refused_and_change_nothing(client, settings, database, enqueued, case):
    params = {"MessageSid": SID, "MessageStatus": "delivered"}
    headers = {
        "missing": {},
        "wrong token": signed(settings, STATUS_PATH, params, token="guessed-token"),
        "other url": signed(settings, STATUS_PATH, params, base="http://internal.example:9999"),
        "tampered field": signed(settings, STATUS_PATH, {**params, "MessageStatus": "sent"}),
    }[case]

    response = await client.post(STATUS_PATH, data=params, headers=headers)

    assert response.status == 403
    assert response.content_type == "application/problem+json"
    assert (await response.json())["status"] == 403
    assert (stored(database).status, stored(database).twilio_status) == ("sent", "queued")
    assert usage_entries(database) == 0 and enqueued == []


async def test_the_query_string_is_part_of_what_twilio_signs(client, settings, database, enqueued):
    path = STATUS_PATH + "?attempt=2"
    params = {"MessageSid": SID, "MessageStatus": "delivered", "AccountSid": settings.twilio_account_sid}

    response = await client.post(path, data=params, headers=signed(settings, path, params))
    forged = await client.post(path, data=params, headers=signed(settings, STATUS_PATH, params))

    assert (response.status, forged.status) == (200, 403)


async def test_duplicate_and_out_of_order_callbacks_settle_once(client, settings, database, enqueued):
    # when Twilio sends delivered, delivered again, then a late sent, then delivered once more
    statuses = [await post_status(client, settings, s) for s in ("delivered", "delivered", "sent", "delivered")]

    # then every one is acknowledged, the message stays delivered, and it was charged once
    assert statuses == [200, 200, 200, 200]
    assert stored(database).status == "delivered"
    assert usage_entries(database) == 1


async def test_a_callback_for_an_unknown_sid_is_acknowledged(client, settings, enqueued):
    assert await post_status(client, settings, "delivered", sid="SM" + "f" * 32) == 200
    assert enqueued == []


async def test_a_callback_that_beats_the_stored_sid_is_kept_for_it(client, settings, database, enqueued):
    # given a message whose sid the worker has not stored yet
    early_sid = "SM" + "c" * 32

    # when Twilio reports it sent and delivered first
    statuses = [await post_status(client, settings, s, sid=early_sid, NumSegments="2") for s in ("sent", "delivered")]

    # then both are acknowledged and kept, nothing is settled yet, and storing the sid applies them
    assert statuses == [200, 200] and enqueued == []
    with database.unit_of_work() as session:
        session.add(Message(id="msg_2", account_id="acct_1", to=CONTACT, from_=OUR_NUMBER, body="Hi", status="sending",
                            twilio_sid=early_sid, twilio_account_sid=settings.twilio_account_sid,
                            created_at=T0, updated_at=T0))
        assert apply_early_statuses(session, early_sid, now=T0) == "delivered"
    assert (stored(database, "msg_2").twilio_status, stored(database, "msg_2").twilio_segments) == ("delivered", 2)


async def test_a_signed_callback_without_a_status_is_a_bad_request(client, settings, enqueued):
    params = {"MessageSid": SID}

    response = await client.post(STATUS_PATH, data=params, headers=signed(settings, STATUS_PATH, params))

    assert response.status == 400 and enqueued == []


async def test_a_callback_for_an_account_with_its_own_twilio_credentials_is_signed_with_its_token(
        client, settings, database, enqueued):
    # given the account sends through its own Twilio subaccount
    subaccount = "AC" + "5" * 32
    with database.unit_of_work() as session:
        account = session.get(Account, "acct_1")
        account.twilio_account_sid, account.twilio_auth_token = subaccount, "subaccount-token"
    params = {"MessageSid": SID, "MessageStatus": "delivered", "AccountSid": subaccount}

    # when Twilio signs its callback with the subaccount's token (and a forger tries the deployment's name)
    forged = await client.post(STATUS_PATH, data=params,
                               headers=signed(settings, STATUS_PATH, params, token="guessed-token"))
    genuine = await client.post(STATUS_PATH, data=params,
                                headers=signed(settings, STATUS_PATH, params, token="subaccount-token"))

    # then only the genuine one is accepted, and, the subaccount's token being the tenant's too, its final status
    # is asked of Twilio: the confirm job is enqueued, and nothing is charged on the callback's word
    assert (forged.status, genuine.status) == (403, 200)
    assert [(job.actor_name, job.args) for job in enqueued] == [("confirm_message_status", (SID,))]
    assert (stored(database).status, usage_entries(database)) == ("sent", 0)


@pytest.fixture
def other_tenant(database) -> tuple[str, str]:
    """Another account that stored Twilio credentials of its own: (AccountSid, token)."""
    credentials = ("AC" + "7" * 32, "other-tenants-token")
    with database.unit_of_work() as session:
        session.add(Account(id="acct_2", name="Other", twilio_account_sid=credentials[0],
                            twilio_auth_token=credentials[1]))
    return credentials


async def test_a_status_signed_with_another_tenants_token_is_refused(client, settings, database, enqueued,
                                                                     other_tenant):
    # given the other tenant signs a "delivered, 40 segments" for acct_1's message, naming its own account
    sid, token = other_tenant
    params = {"MessageSid": SID, "MessageStatus": "delivered", "NumSegments": "40", "AccountSid": sid}

    response = await client.post(STATUS_PATH, data=params, headers=signed(settings, STATUS_PATH, params, token=token))

    # then it is refused and the message is as it was, not charged
    assert response.status == 403 and response.content_type == "application/problem+json"
    assert (stored(database).status, stored(database).twilio_segments) == ("sent", None)
    assert usage_entries(database) == 0


# --- inbound messages -----------------------------------------------------------------------------


async def post_inbound(client, settings, body: str, *, sid: str = "SM" + "b" * 32, to: str = OUR_NUMBER):
    params = {"MessageSid": sid, "SmsSid": sid, "AccountSid": settings.twilio_account_sid, "From": CONTACT, "To": to,
              "Body": body, "NumSegments": "1", "NumMedia": "0"}
    return await client.post(INBOUND_PATH, data=params, headers=signed(settings, INBOUND_PATH, params))


def opt_outs_of(database) -> list[tuple[str, str]]:
    with database.unit_of_work() as session:
        return [(o.phone, o.source) for o in session.scalars(select(OptOut).where(OptOut.account_id == "acct_1"))]


def inbound_rows(database) -> list[Message]:
    with database.unit_of_work() as session:
        return list(session.scalars(select(Message).where(Message.direction == "inbound")))


async def test_an_inbound_stop_opts_the_sender_out_and_lets_twilio_confirm(client, settings, database):
    response = await post_inbound(client, settings, " Stop ")

    assert response.status == 200 and response.content_type == "text/xml"
    assert "<Message" not in await response.text()
    assert opt_outs_of(database) == [(CONTACT, "stop_keyword")]
    [row] = inbound_rows(database)
    assert (row.account_id, row.from_, row.to, row.body, row.status) == \
        ("acct_1", CONTACT, OUR_NUMBER, " Stop ", "received")


async def test_an_inbound_start_opts_the_sender_back_in(client, settings, database):
    await post_inbound(client, settings, "STOP", sid="SM" + "1" * 32)

    response = await post_inbound(client, settings, "start", sid="SM" + "2" * 32)

    assert response.status == 200 and opt_outs_of(database) == []


async def test_a_retried_stop_after_start_does_not_opt_out_again(client, settings, database):
    await post_inbound(client, settings, "STOP", sid="SM" + "1" * 32)
    await post_inbound(client, settings, "START", sid="SM" + "2" * 32)

    retried = await post_inbound(client, settings, "STOP", sid="SM" + "1" * 32)

    assert retried.status == 200
    assert opt_outs_of(database) == [] and len(inbound_rows(database)) == 2


async def test_an_inbound_help_is_answered_with_the_accounts_help_text(client, settings):
    response = await post_inbound(client, settings, "help")

    text = await response.text()
    assert response.status == 200 and response.content_type == "text/xml"
    assert "<Message>Realty Co: call 415-555-0199. Reply STOP to opt out.</Message>" in text


async def test_an_ordinary_reply_is_stored_without_an_answer(client, settings, database):
    response = await post_inbound(client, settings, "Is the house still for sale?")

    assert "<Message" not in await response.text()
    assert [row.body for row in inbound_rows(database)] == ["Is the house still for sale?"]
    assert opt_outs_of(database) == []


async def test_inbound_for_a_locked_account_is_stored_and_free(client, settings, database):
    # given an account locked with a negative balance
    with database.unit_of_work() as session:
        account = session.get(Account, "acct_1")
        account.status, account.balance = "locked", -2_000

    response = await post_inbound(client, settings, "Hello?")

    # then the message is stored, and nothing was charged
    assert response.status == 200
    [row] = inbound_rows(database)
    assert (row.credits_charged, row.hold_id) == (0, None)
    with database.unit_of_work() as session:
        assert session.get(Account, "acct_1").balance == -2_000
        assert session.scalar(select(func.count()).select_from(Entry)) == 0


async def test_inbound_to_a_number_no_account_has_is_acknowledged_and_dropped(client, settings, database):
    response = await post_inbound(client, settings, "STOP", to="+14155550000")

    assert response.status == 200 and inbound_rows(database) == [] and opt_outs_of(database) == []


async def test_a_forged_inbound_stop_is_refused(client, settings, database):
    params = {"MessageSid": "SM" + "b" * 32, "From": CONTACT, "To": OUR_NUMBER, "Body": "STOP"}

    response = await client.post(INBOUND_PATH, data=params,
                                 headers=signed(settings, INBOUND_PATH, params, token="guessed-token"))

    assert response.status == 403 and opt_outs_of(database) == [] and inbound_rows(database) == []


# --- the simulator's own signed callbacks, over real HTTP ----------------------------------------------


async def test_the_simulators_signed_callbacks_settle_a_sent_message(aiohttp_server, tmp_path, sqlite_database,
                                                                    fake_broker, enqueued, simulator):
    # given the intake served where PUBLIC_BASE_URL says, and a message sent through the gateway
    port = free_port()
    settings = load_settings({"CREDITQ_DATA_DIR": str(tmp_path / "data"), "CREDITQ_ADMIN_KEY": "k" * 20,
                              "DATABASE_URL": sqlite_database.url, "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
                              "TWILIO_ACCOUNT_SID": simulator.account_sid, "TWILIO_AUTH_TOKEN": simulator.auth_token})
    await aiohttp_server(init_app(settings, database=sqlite_database, broker=fake_broker), port=port)
    simulator.configure(callback_delay_ms=200)  # time to store the sid before the first callback
    gateway = TwilioGateway(simulator.account_sid, simulator.auth_token, simulator.url,
                            settings.public_base_url + STATUS_CALLBACK_PATH)
    sent = await asyncio.to_thread(gateway.send, to=CONTACT, from_="+15005550006", body="Open house Sunday")
    with sqlite_database.unit_of_work() as session:
        session.add(Account(id="acct_1", name="Realty", balance=5_000))
        session.flush()
        hold = book.reserve(session, "acct_1", 1_000, reference="msg_1", idempotency_key="message:msg_1:hold:0",
                            ttl_seconds=900, now=T0)
        session.add(Message(id="msg_1", account_id="acct_1", to=CONTACT, from_="+15005550006", body="Open house Sunday",
                            status="sent", twilio_sid=sent.sid, twilio_account_sid=sent.account_sid, hold_id=hold.id,
                            twilio_status=sent.status, created_at=T0, updated_at=T0))

    # when the simulator reports sent and delivered to the webhook
    for _ in range(500):
        if stored(sqlite_database).credits_charged is not None:
            break
        await asyncio.sleep(0.01)

    # then its signatures were accepted and the message settled once
    assert stored(sqlite_database).status == "delivered"
    assert usage_entries(sqlite_database) == 1
    gateway.close()


async def test_an_inbound_stop_signed_with_another_tenants_token_is_refused(client, settings, database, other_tenant):
    sid, token = other_tenant
    params = {"MessageSid": "SM" + "b" * 32, "AccountSid": sid, "From": CONTACT, "To": OUR_NUMBER, "Body": "STOP"}

    response = await client.post(INBOUND_PATH, data=params,
                                 headers=signed(settings, INBOUND_PATH, params, token=token))

    assert response.status == 403 and opt_outs_of(database) == [] and inbound_rows(database) == []


# --- callbacks applied in group commits ----------------------------------------------------------------


def callback(settings, status: str, *, sid: str = SID, token: str | None = None, **report) -> Callback:
    params = {"MessageSid": sid, "MessageStatus": status, "AccountSid": settings.twilio_account_sid}
    url = settings.public_base_url + STATUS_PATH
    form = SignedForm(url, params, twilio_signature(token or settings.twilio_auth_token, url, params))
    return Callback(form, sid=sid, status=status, **report)


def test_a_batch_of_callbacks_gives_each_its_own_fate_and_commits_the_rest(settings, database, fake_broker, enqueued):
    # given a second message already delivered and settled
    delivered_sid = "SM" + "d" * 32
    with database.unit_of_work() as session:
        session.add(Message(id="msg_2", account_id="acct_1", to=CONTACT, from_=OUR_NUMBER, body="Hi", status="delivered",
                            twilio_sid=delivered_sid, twilio_status="delivered", credits_charged=1_000,
                            created_at=T0, updated_at=T0))
    batcher = CallbackBatcher(database, Enqueuer(fake_broker),
                              Credentials(settings.twilio_account_sid, settings.twilio_auth_token))

    # when one batch brings: msg_1 delivered, an unknown sid, msg_1 delivered again, a regression of msg_2 to
    # "sent", and a forged "undelivered" for msg_2
    outcomes = batcher.apply_batch([
        callback(settings, "delivered"),
        callback(settings, "delivered", sid="SM" + "e" * 32),
        callback(settings, "delivered"),
        callback(settings, "sent", sid=delivered_sid),
        callback(settings, "undelivered", sid=delivered_sid, token="guessed-token"),
    ])

    # then the first delivers and settles msg_1, the unknown sid is kept for later, the duplicate and the
    # regression change nothing, the forgery is refused, and all of it in the one commit
    first, unknown, duplicate, regression, forged = outcomes
    assert first == StatusChange("msg_1", "acct_1", became_final=True, changed=True)
    assert unknown is None
    assert duplicate == StatusChange("msg_1", "acct_1", became_final=False, changed=False)
    assert regression == StatusChange("msg_2", "acct_1", became_final=False, changed=False)
    assert isinstance(forged, CallbackRejected)
    assert (stored(database).status, usage_entries(database)) == ("delivered", 1)
    assert (stored(database, "msg_2").status, stored(database, "msg_2").twilio_status) == ("delivered", "delivered")
    with database.unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(EarlyStatus)) == 1


def test_another_tenants_report_in_the_same_batch_as_the_genuine_one_is_refused_alone(settings, database, fake_broker,
                                                                                     enqueued, other_tenant):
    # given one batch bringing, for acct_1's message, the other tenant's "undelivered, 40 segments" signed with its
    # own token and naming its own account, then Twilio's genuine "delivered" (the batch reads the message once)
    other_sid, other_token = other_tenant
    params = {"MessageSid": SID, "MessageStatus": "undelivered", "NumSegments": "40", "AccountSid": other_sid}
    url = settings.public_base_url + STATUS_PATH
    forged = Callback(SignedForm(url, params, twilio_signature(other_token, url, params)), sid=SID,
                      status="undelivered", num_segments=40)
    batcher = CallbackBatcher(database, Enqueuer(fake_broker),
                              Credentials(settings.twilio_account_sid, settings.twilio_auth_token))

    # when it is applied
    refused, genuine = batcher.apply_batch([forged, callback(settings, "delivered", num_segments=1)])

    # then the other tenant's report is refused and changes nothing; the genuine one delivers and charges 1 segment
    assert isinstance(refused, CallbackRejected)
    assert genuine == StatusChange("msg_1", "acct_1", became_final=True, changed=True)
    assert (stored(database).status, stored(database).twilio_segments) == ("delivered", 1)
    assert usage_entries(database) == 1
