"""A text from the shared short code, or from an account's own, through the real send pipeline (accept, send to the
Twilio simulator, signed status callback, settle), on SQLite and PostgreSQL; and recipients' STOPs to the shared code
obeyed at send time."""

from datetime import UTC, datetime

import fakeredis
import pytest

from shared.errors import OptedOut
from shared.ledger import book
from shared.ledger.accounts import Overdraft, create_account
from shared.messaging.inbound import Inbound, receive_inbound
from shared.messaging.messages import MessageRequest, accept_message
from shared.messaging.rates import parse_rate_card
from shared.messaging.send_cap import SendCap
from shared.messaging.sender_throttle import SenderThrottle
from shared.messaging.senders import add_number
from shared.messaging.sending import send_message
from shared.messaging.settlement import settle_message
from shared.messaging.shared_short_code import set_keyword
from shared.models import Account, Message
from shared.twilio.gateway import TwilioGateway
from shared.twilio.signatures import Credentials, SignedForm
from tests.support.callbacks import twilio_reports
from tests.twilio_sim_fixtures import (  # noqa: F401
    _callback_receiver_server,
    _simulator_server,
    background_loop,
    callback_receiver,
    simulator,
)
from twilio_sim.signature import twilio_signature

CODE = "12345"
CONTACT = "+14155550100"
BODY_155 = ("Open house this Sunday at 2pm, 14 Elm Street: four bedrooms, a garden and a garage. "
            "Reply to book a private viewing or ask about the price, please. Thanks!")
UNCAPPED = SendCap(young_days=0, per_day=1)
# Short-code texts cost 2.5 credits a segment here, long-code ones 1: a charge at the wrong rate shows.
CARD = parse_rate_card({"name": "test", "home_country": "US", "countries": {"US": {"rates": {
    "sms": {"long_code": "1", "toll_free": "1.5", "short_code": "2.5"}, "mms": "2", "call_outgoing": "1",
    "voice_broadcast": "1", "answering_machine_detection": "1", "call_forwarding": "1", "voicemail": "1",
    "transcription": "1", "phone_number": "100"}}}}, source="test")
INBOUND_URL = "https://creditq.example/webhooks/twilio/inbound"


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def gateways(simulator, callback_receiver):  # noqa: F811
    gateway = TwilioGateway(simulator.account_sid, simulator.auth_token, simulator.url, callback_receiver.status_url)
    yield lambda account_sid=None, auth_token=None: gateway
    gateway.close()


@pytest.fixture
def throttle():
    """A long code may send one segment in 100 s; a short code 10,000 a second."""
    return SenderThrottle(fakeredis.FakeRedis(), {"long_code": 0.01, "toll_free": 0.01, "short_code": 10_000.0})


def account_with_keyword(database, keyword: str, credits: int = 20) -> str:
    with database.unit_of_work() as session:
        account, _ = create_account(session, name=keyword, timezone="UTC", plan_monthly_credits=0, plan_cycle="monthly",
                                    plan_rollover="none", overdraft=Overdraft("prepaid"), low_balance_threshold=0,
                                    now=now())
        book.grant(session, account.id, credits * 1000, "purchase", granted_at=now(), idempotency_key=f"s:{account.id}")
        set_keyword(session, account.id, keyword, code=CODE)
        return account.id


def accept(database, account_id: str, body: str = BODY_155) -> str:
    with database.unit_of_work() as session:
        message, _ = accept_message(session, account_id, MessageRequest(to=CONTACT, from_=CODE, body=body),
                                    rate_card=CARD, now=now(), cap=UNCAPPED, shared_short_code=CODE)
        return message.id


def send(database, message_id: str, gateways, throttle) -> str:
    return send_message(database, message_id, gateway_for=gateways, throttle=throttle, hold_ttl_seconds=900)


def stored(database, model, key):
    with database.unit_of_work() as session:
        return session.get(model, key)


def texts_to_the_code(database, simulator, body: str, sid: str) -> None:  # noqa: F811
    """The contact texts the shared code; Twilio posts it signed with the deployment's (the simulator's) token."""
    deployment = Credentials(simulator.account_sid, simulator.auth_token)
    params = {"MessageSid": sid, "From": CONTACT, "To": CODE, "Body": body, "AccountSid": deployment.account_sid}
    form = SignedForm(INBOUND_URL, params, twilio_signature(deployment.auth_token, INBOUND_URL, params))
    with database.unit_of_work() as session:
        receive_inbound(session, Inbound(sid=sid, from_=CONTACT, to=CODE, body=body), form, deployment=deployment,
                        now=now(), shared_short_code=CODE)


def test_a_text_from_the_shared_code_reaches_twilio_with_its_keyword_and_is_charged_for_it_at_short_code_rates(
        database, gateways, throttle, simulator, callback_receiver):  # noqa: F811
    # given an account with the keyword ACME and 20 credits; a 155-character text is one segment, two with "ACME: "
    account_id = account_with_keyword(database, "ACME")

    # when it sends two texts from the shared code, back to back
    first, second = accept(database, account_id), accept(database, account_id)
    statuses = [send(database, message_id, gateways, throttle) for message_id in (first, second)]

    # then both went at once (short-code throughput: a long code would wait 200 s for its next slot) ...
    assert statuses == ["queued", "queued"]
    # ... and Twilio got them from the code, with the keyword in front, in two segments each
    sent = simulator.sent()["messages"]
    assert [(m["from"], m["to"], m["body"], m["num_segments"]) for m in sent] == [
        (CODE, CONTACT, f"ACME: {BODY_155}", 2)] * 2
    assert stored(database, Message, first).credits_estimated == 5000  # the hold: 2 segments x 2.5

    # when Twilio reports the first delivered (its signed callback) and it settles
    sid = stored(database, Message, first).twilio_sid
    [delivered] = [c for c in callback_receiver.wait_for(
        sid, lambda callbacks: any(c.form["MessageStatus"] == "delivered" for c in callbacks))
        if c.form["MessageStatus"] == "delivered"]
    twilio_reports(database, Credentials(simulator.account_sid, simulator.auth_token), sid, "delivered",
                   num_segments=int(delivered.form["NumSegments"]))
    with database.unit_of_work() as session:
        assert settle_message(session, first, rate_card=CARD, now=now()).outcome == "settled"

    # then it cost Twilio's 2 segments at the short-code rate: 5 credits, the prefix included
    assert stored(database, Message, first).credits_charged == 5000
    account = stored(database, Account, account_id)
    assert (account.balance, account.held) == (15_000, 5000)  # the second text's hold still pending


def test_a_text_from_an_accounts_own_short_code_goes_at_short_code_throughput_and_rate(
        database, gateways, throttle, simulator):  # noqa: F811
    # given an account with a short code of its own, added as one
    own_code = "54321"
    account_id = account_with_keyword(database, "OWN")
    with database.unit_of_work() as session:
        add_number(session, account_id, own_code, "short_code")

    # when it sends two texts from it, back to back
    texts = []
    for _ in range(2):
        with database.unit_of_work() as session:
            message, _ = accept_message(session, account_id, MessageRequest(to=CONTACT, from_=own_code, body=BODY_155),
                                        rate_card=CARD, now=now(), cap=UNCAPPED)
            texts.append(message.id)
    statuses = [send(database, message_id, gateways, throttle) for message_id in texts]

    # then both went at once (a long code would wait 100 s for its next slot), from the code, with no keyword added,
    # each held at the short-code rate: one segment x 2.5
    assert statuses == ["queued", "queued"]
    assert [(m["from"], m["body"]) for m in simulator.sent()["messages"]] == [(own_code, BODY_155)] * 2
    assert [stored(database, Message, message_id).credits_estimated for message_id in texts] == [2500, 2500]


def test_stop_with_a_keyword_cancels_that_accounts_texts_and_a_bare_stop_every_accounts_uncharged(
        database, gateways, throttle, simulator):  # noqa: F811
    # given Acme and Zen each accepted a text to the contact from the shared code
    acme, zen = account_with_keyword(database, "ACME"), account_with_keyword(database, "ZEN")
    acme_text, zen_text = accept(database, acme), accept(database, zen)

    # when the contact texts STOP ACME before they go out
    texts_to_the_code(database, simulator, "STOP ACME", "SM" + "1" * 32)

    # then Acme's text is canceled at send, uncharged, and Acme may not text them again; Zen's goes
    assert send(database, acme_text, gateways, throttle) == "canceled"
    assert (stored(database, Account, acme).balance, stored(database, Account, acme).held) == (20_000, 0)
    with pytest.raises(OptedOut):
        accept(database, acme)
    assert send(database, zen_text, gateways, throttle) == "queued"

    # when Zen accepts another and the contact texts a bare STOP
    zen_again = accept(database, zen)
    texts_to_the_code(database, simulator, "STOP", "SM" + "2" * 32)

    # then that one is canceled too, and Twilio only ever got Zen's first
    assert send(database, zen_again, gateways, throttle) == "canceled"
    assert [m["body"] for m in simulator.sent()["messages"]] == [f"ZEN: {BODY_155}"]
    # ("ZEN: " + 155 characters is 160: one segment, held at 2.5 credits)
    assert (stored(database, Account, zen).balance, stored(database, Account, zen).held) == (20_000, 2500)
