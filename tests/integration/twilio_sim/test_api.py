"""The Twilio simulator, driven the way the product drives Twilio: through the official client."""

from __future__ import annotations

import time

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator

from tests.twilio_sim_fixtures import (  # noqa: F401  (fixtures)
    _callback_receiver_server,
    _simulator_server,
    background_loop,
    callback_receiver,
    simulator,
)
from twilio_sim.client import simulated_client
from twilio_sim.delivery_errors import ERROR_MESSAGES

TEST_FROM = "+15005550006"
RECIPIENT = "+15558675310"


def wait_for_status(client, sid: str, status: str, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = client.messages(sid).fetch()
        if message.status == status:
            return message
        time.sleep(0.01)
    raise AssertionError(f"{sid} never reached {status}; last {message.status}")


# --- Messages through the official client -------------------------------------------------


def test_create_returns_a_queued_message_in_twilio_format(simulator):
    # given the official client pointed at the simulator
    client = simulator.client()

    # when a message is created
    message = client.messages.create(to=RECIPIENT, from_=TEST_FROM, body="Hello there")

    # then it looks like Twilio's answer to a create
    assert message.sid.startswith("SM") and len(message.sid) == 34
    int(message.sid[2:], 16)
    assert message.status == "queued"
    assert message.account_sid == simulator.account_sid
    assert (message.to, message.from_, message.body) == (RECIPIENT, TEST_FROM, "Hello there")
    assert message.num_segments == "1"
    assert message.price is None and message.price_unit == "USD"
    assert message.direction == "outbound-api"
    assert message.date_created is not None and message.date_sent is None
    assert message.error_code is None


def test_fetch_shows_the_message_progressing_to_delivered_with_a_negative_price(simulator):
    # given a created two-segment message
    client = simulator.client()
    created = client.messages.create(to=RECIPIENT, from_=TEST_FROM, body="x" * 161)

    # when it is fetched after delivery
    fetched = wait_for_status(client, created.sid, "delivered")

    # then Twilio's fields are filled in as they would be
    assert fetched.sid == created.sid
    assert fetched.num_segments == "2"
    assert fetched.price == "-0.01580" and fetched.price_unit == "USD"
    assert fetched.date_sent is not None
    assert fetched.error_code is None


def test_fetch_of_an_unknown_sid_is_twilio_404(simulator):
    # given no such message
    client = simulator.client()

    # when it is fetched
    with pytest.raises(TwilioRestException) as raised:
        client.messages("SM" + "0" * 32).fetch()

    # then the client sees Twilio's not-found error
    assert (raised.value.status, raised.value.code) == (404, 20404)


def test_list_pages_newest_first_and_filters_by_recipient(simulator):
    # given seven messages to one recipient and one to another
    client = simulator.client()
    sids = [
        client.messages.create(to=RECIPIENT, from_=TEST_FROM, body=f"message {n}").sid
        for n in range(7)
    ]
    client.messages.create(to="+15550000000", from_=TEST_FROM, body="someone else")

    # when they are listed three per page, filtered by recipient
    listed = client.messages.list(to=RECIPIENT, page_size=3)
    first_page = client.messages.page(to=RECIPIENT, page_size=3)

    # then the client follows Twilio's paging through all of them, newest first
    assert [message.sid for message in listed] == list(reversed(sids))
    assert len(list(first_page)) == 3
    assert first_page.next_page_url.startswith(simulator.url)
    assert first_page.previous_page_url is None


def test_list_paging_is_not_shifted_by_messages_created_meanwhile(simulator):
    # given a first page of two out of four messages
    client = simulator.client()
    sids = [client.messages.create(to=RECIPIENT, from_=TEST_FROM, body=str(n)).sid for n in range(4)]
    first_page = client.messages.page(page_size=2)

    # when a new message arrives before the next page is read
    client.messages.create(to=RECIPIENT, from_=TEST_FROM, body="late")
    second_page = first_page.next_page()

    # then the next page continues where the first stopped
    assert [m.sid for m in first_page] + [m.sid for m in second_page] == list(reversed(sids))


def test_media_urls_make_a_single_segment_mms(simulator):
    # given a long body with two media URLs
    client = simulator.client()

    # when it is sent
    message = client.messages.create(
        to=RECIPIENT,
        from_=TEST_FROM,
        body="y" * 500,
        media_url=["https://example.com/a.png", "https://example.com/b.png"],
    )

    # then it is one MMS message with both media
    assert message.sid.startswith("MM")
    assert (message.num_media, message.num_segments) == ("2", "1")


def test_messaging_service_without_from_is_accepted_first(simulator):
    # given a send through a Messaging Service only
    client = simulator.client()

    # when it is created
    message = client.messages.create(
        to=RECIPIENT, messaging_service_sid="MG" + "a" * 32, body="via service"
    )

    # then Twilio's "accepted" status comes back, with no From yet
    assert message.status == "accepted"
    assert message.from_ is None
    assert message.messaging_service_sid == "MG" + "a" * 32


@pytest.mark.parametrize(
    ("to", "from_", "code"),
    [
        ("+15005550001", TEST_FROM, 21211),
        ("+15005550002", TEST_FROM, 21612),
        ("+15005550003", TEST_FROM, 21408),
        ("+15005550004", TEST_FROM, 21610),
        ("+15005550009", TEST_FROM, 21614),
        (RECIPIENT, "+15005550001", 21212),
        (RECIPIENT, "+15005550007", 21606),
        (RECIPIENT, "+15005550008", 21611),
    ],
)
def test_magic_numbers_fail_with_twilio_error_codes(simulator, to, from_, code):
    # given the official client
    client = simulator.client()

    # when a magic number is used
    with pytest.raises(TwilioRestException) as raised:
        client.messages.create(to=to, from_=from_, body="magic")

    # then the create fails with Twilio's 400 and error code, and nothing was sent
    assert (raised.value.status, raised.value.code) == (400, code)
    assert simulator.sent()["count"] == 0


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"to": "", "from_": TEST_FROM, "body": "no to"}, 21604),
        ({"to": RECIPIENT, "body": "no from"}, 21603),
        ({"to": RECIPIENT, "from_": TEST_FROM}, 21602),
        ({"to": RECIPIENT, "from_": TEST_FROM, "body": "z" * 1601}, 21617),
    ],
)
def test_incomplete_creates_fail_as_twilio_does(simulator, params, code):
    # given a create missing what Twilio requires
    client = simulator.client()

    # when it is sent
    with pytest.raises(TwilioRestException) as raised:
        client.messages.create(**params)

    # then Twilio's validation error comes back
    assert (raised.value.status, raised.value.code) == (400, code)


# --- Credentials --------------------------------------------------------------------------


def test_a_wrong_auth_token_is_rejected_with_20003(simulator):
    # given a client holding the wrong token
    client = simulator.client(auth_token="not-the-token")

    # when it sends
    with pytest.raises(TwilioRestException) as raised:
        client.messages.create(to=RECIPIENT, from_=TEST_FROM, body="hi")

    # then Twilio's authentication error comes back and nothing is sent
    assert (raised.value.status, raised.value.code) == (401, 20003)
    assert simulator.sent()["count"] == 0


def test_rotating_the_token_locks_out_the_old_one(simulator):
    # given a client that works with the current token
    old_client = simulator.client()
    old_client.messages.create(to=RECIPIENT, from_=TEST_FROM, body="before")

    # when the token is rotated through the control API
    simulator.configure(auth_token="rotated-token")

    # then the old token gets 20003 and the new one works
    with pytest.raises(TwilioRestException) as raised:
        old_client.messages.create(to=RECIPIENT, from_=TEST_FROM, body="after")
    assert raised.value.code == 20003
    new_client = simulator.client(auth_token="rotated-token")
    assert new_client.messages.create(to=RECIPIENT, from_=TEST_FROM, body="after").sid


def test_another_accounts_path_is_not_found(simulator):
    # given valid credentials
    # when a message of another account is asked for
    response = requests.get(
        f"{simulator.url}/2010-04-01/Accounts/AC{'f' * 32}/Messages.json",
        auth=(simulator.account_sid, simulator.auth_token),
        timeout=10,
    )

    # then it does not exist for this account
    assert (response.status_code, response.json()["code"]) == (404, 20404)


# --- Subaccounts ---------------------------------------------------------------------------


def test_a_subaccount_authenticates_with_its_own_token_only(simulator):
    # given a subaccount added through the control API
    sub = simulator.add_account(friendly_name="Grace Church")

    # when it fetches itself with its token, with the main account's token, and a made-up sid tries
    own = simulator.client().api.v2010.accounts(sub["sid"])
    fetched = simulated_client(simulator.url, sub["sid"], sub["auth_token"]).api.v2010.accounts(sub["sid"]).fetch()
    with pytest.raises(TwilioRestException) as wrong_token:
        simulated_client(simulator.url, sub["sid"], simulator.auth_token).api.v2010.accounts(sub["sid"]).fetch()
    made_up = "AC" + "e" * 32
    with pytest.raises(TwilioRestException) as unknown:
        simulated_client(simulator.url, made_up, "any-token").api.v2010.accounts(made_up).fetch()

    # then only its own token opens it (its parent reaches it too), and nobody opens a made-up account
    assert (fetched.sid, fetched.status, fetched.owner_account_sid) == (sub["sid"], "active", simulator.account_sid)
    assert own.fetch().friendly_name == "Grace Church"
    assert (wrong_token.value.status, wrong_token.value.code) == (401, 20003)
    assert (unknown.value.status, unknown.value.code) == (401, 20003)


def test_a_subaccounts_messages_are_its_own_and_its_callbacks_carry_its_signature(simulator, callback_receiver):
    # given a subaccount that sends a message with a status callback
    sub = simulator.add_account()
    client = simulated_client(simulator.url, sub["sid"], sub["auth_token"])
    message = client.messages.create(
        to=RECIPIENT, from_=TEST_FROM, body="from the subaccount", status_callback=callback_receiver.status_url
    )

    # when its callbacks arrive, and the main account and the subaccount look the message up
    callbacks = callback_receiver.wait_for(message.sid, lambda cbs: len(cbs) == 2)
    main_sees = [m.sid for m in simulator.client().messages.list()]

    # then the message is the subaccount's, signed with the subaccount's token and not the main one's
    assert message.account_sid == sub["sid"] and message.sid not in main_sees
    assert client.messages(message.sid).fetch().account_sid == sub["sid"]
    for callback in callbacks:
        assert callback.form["AccountSid"] == sub["sid"]
        assert RequestValidator(sub["auth_token"]).validate(callback.url, callback.form, callback.signature)
        assert not RequestValidator(simulator.auth_token).validate(callback.url, callback.form, callback.signature)


def test_a_subaccount_cannot_reach_another_accounts_messages(simulator):
    # given a message of the main account and a subaccount
    sent = simulator.client().messages.create(to=RECIPIENT, from_=TEST_FROM, body="main's")
    sub = simulator.add_account()

    # when the subaccount asks for it under the main account's path and under its own
    response = requests.get(f"{simulator.url}/2010-04-01/Accounts/{simulator.account_sid}/Messages/{sent.sid}.json",
                            auth=(sub["sid"], sub["auth_token"]), timeout=10)
    own_path = requests.get(f"{simulator.url}/2010-04-01/Accounts/{sub['sid']}/Messages/{sent.sid}.json",
                            auth=(sub["sid"], sub["auth_token"]), timeout=10)

    # then it exists for neither
    assert (response.status_code, own_path.status_code) == (404, 404)


def test_reset_forgets_the_subaccounts(simulator):
    # given a subaccount
    sub = simulator.add_account()

    # when the simulator is reset
    simulator.reset()

    # then its credentials no longer open anything, and only the main account is listed
    response = requests.get(f"{simulator.url}/2010-04-01/Accounts/{sub['sid']}.json",
                            auth=(sub["sid"], sub["auth_token"]), timeout=10)
    assert response.status_code == 401
    listed = requests.get(f"{simulator.url}/_sim/accounts", timeout=10).json()["accounts"]
    assert [account["sid"] for account in listed] == [simulator.account_sid]


@pytest.mark.parametrize("fields", [{"status": "asleep"}, {"sid": "AC123"}, {"auth_token": 5}, {"colour": "red"}])
def test_invalid_subaccounts_are_refused(simulator, fields):
    response = requests.post(f"{simulator.url}/_sim/accounts", json=fields, timeout=10)

    assert response.status_code == 400 and response.json()["error"]
    assert len(requests.get(f"{simulator.url}/_sim/accounts", timeout=10).json()["accounts"]) == 1


# --- Injected faults ----------------------------------------------------------------------


def test_injected_429s_carry_20429_and_retry_after_and_create_nothing(simulator):
    # given a simulator refusing every request with 429
    simulator.configure(rate_429=1.0, retry_after_s=3)
    client = simulator.client()

    # when a message is sent
    with pytest.raises(TwilioRestException) as raised:
        client.messages.create(to=RECIPIENT, from_=TEST_FROM, body="hi")

    # then Twilio's rate-limit error comes back, with Retry-After, and nothing was created
    assert (raised.value.status, raised.value.code) == (429, 20429)
    assert client.http_client._test_only_last_response.headers["Retry-After"] == "3"
    simulator.configure(rate_429=0.0)
    assert simulator.sent()["count"] == 0


def test_served_faults_are_counted_until_reset(simulator):
    # given one refused and one failed request
    client = simulator.client()
    for knobs in ({"rate_429": 1.0}, {"rate_429": 0.0, "rate_5xx": 1.0}):
        simulator.configure(**knobs)
        with pytest.raises(TwilioRestException):
            client.messages.create(to=RECIPIENT, from_=TEST_FROM, body="hi")

    # then the control API counts them by kind, and a reset forgets them
    assert simulator.faults() == {"429": 1, "5xx": 1}
    simulator.reset()
    assert simulator.faults() == {}


def test_injected_5xx_fail_with_20500(simulator):
    # given a simulator failing every request
    simulator.configure(rate_5xx=1.0)

    # when a message is sent
    with pytest.raises(TwilioRestException) as raised:
        simulator.client().messages.create(to=RECIPIENT, from_=TEST_FROM, body="hi")

    # then it is Twilio's internal error
    assert (raised.value.status, raised.value.code) == (500, 20500)


def test_a_429_rate_refuses_about_that_share_of_requests(simulator):
    # given a 30% rate of 429s
    simulator.configure(rate_429=0.3)
    client = simulator.client()

    # when many messages are sent
    refused = 0
    for n in range(200):
        try:
            client.messages.create(to=RECIPIENT, from_=TEST_FROM, body=str(n))
        except TwilioRestException as error:
            assert error.code == 20429
            refused += 1

    # then roughly that share was refused and the rest created
    assert 30 <= refused <= 90
    assert simulator.sent()["count"] == 200 - refused


def test_latency_delays_the_answer(simulator):
    # given 200 ms of latency
    simulator.configure(latency_ms=200)
    client = simulator.client()

    # when a message is sent
    started = time.monotonic()
    client.messages.create(to=RECIPIENT, from_=TEST_FROM, body="slow")

    # then the answer took at least that long
    assert time.monotonic() - started >= 0.2


def test_num_segments_override_reports_more_segments_than_the_body_needs(simulator):
    # given a simulator told to report two segments for everything
    simulator.configure(num_segments_override=2)
    client = simulator.client()

    # when a short body is sent and delivered
    message = client.messages.create(to=RECIPIENT, from_=TEST_FROM, body="short")
    delivered = wait_for_status(client, message.sid, "delivered")

    # then Twilio "reports" two segments and charges for two
    assert message.num_segments == "2"
    assert delivered.price == "-0.01580"


@pytest.mark.parametrize(
    ("outcome", "codes"),
    [("undelivered", range(30003, 30009)), ("failed", (30001, 30002))],
)
def test_outcome_mix_decides_the_final_status_and_error(simulator, callback_receiver, outcome, codes):
    # given every message is set to end as `outcome`
    simulator.configure(outcomes={outcome: 1})
    client = simulator.client()

    # when a message is sent
    message = client.messages.create(
        to=RECIPIENT, from_=TEST_FROM, body="doomed", status_callback=callback_receiver.status_url
    )
    final = wait_for_status(client, message.sid, outcome)

    # then it ends that way, with a Twilio error code in the resource and the callback
    assert final.error_code in codes and final.error_message
    callbacks = callback_receiver.wait_for(
        message.sid, lambda cbs: any(cb.form["MessageStatus"] == outcome for cb in cbs)
    )
    assert callbacks[-1].form["ErrorCode"] == str(final.error_code)
    if outcome == "failed":
        assert final.price is None and final.date_sent is None
        assert [cb.form["MessageStatus"] for cb in callbacks] == ["failed"]


@pytest.mark.parametrize(("outcome", "status", "code"),
                         [("undelivered:30007", "undelivered", 30007), ("failed:30034", "failed", 30034)])
def test_an_outcome_can_name_its_error_code(simulator, callback_receiver, outcome, status, code):  # noqa: F811
    # given every message is set to end with one named Twilio error
    simulator.configure(outcomes={outcome: 1})
    client = simulator.client()

    # when a message is sent
    message = client.messages.create(
        to=RECIPIENT, from_=TEST_FROM, body="filtered", status_callback=callback_receiver.status_url
    )
    final = wait_for_status(client, message.sid, status)

    # then the resource and the final callback carry that code
    assert (final.error_code, final.error_message) == (code, ERROR_MESSAGES[code])
    callbacks = callback_receiver.wait_for(
        message.sid, lambda cbs: any(cb.form["MessageStatus"] == status for cb in cbs)
    )
    assert callbacks[-1].form["ErrorCode"] == str(code)


def test_carriers_can_filter_one_sender_and_not_another(simulator):  # noqa: F811
    # given the texts of one local number are filtered (30007) and everyone else's delivered
    local, toll_free = "+14155550123", "+18005550199"
    simulator.configure(sender_outcomes={local: {"undelivered:30007": 1}})
    client = simulator.client()

    # when each sends a text
    filtered = client.messages.create(to=RECIPIENT, from_=local, body="from local")
    passed = client.messages.create(to=RECIPIENT, from_=toll_free, body="from toll-free")

    # then only the local number's ends undelivered, with 30007
    assert wait_for_status(client, filtered.sid, "undelivered").error_code == 30007
    assert wait_for_status(client, passed.sid, "delivered").error_code is None


# --- Status callbacks ---------------------------------------------------------------------


def test_callbacks_report_sent_then_delivered_signed_as_twilio_signs(simulator, callback_receiver):
    # given a message with a StatusCallback
    client = simulator.client()
    message = client.messages.create(
        to=RECIPIENT, from_=TEST_FROM, body="callback me", status_callback=callback_receiver.status_url
    )

    # when its callbacks arrive
    callbacks = callback_receiver.wait_for(message.sid, lambda cbs: len(cbs) == 2)

    # then they carry Twilio's fields, in order, and the official validator accepts them
    assert [cb.form["MessageStatus"] for cb in callbacks] == ["sent", "delivered"]
    validator = RequestValidator(simulator.auth_token)
    for callback in callbacks:
        form = callback.form
        assert form["SmsStatus"] == form["MessageStatus"]
        assert (form["MessageSid"], form["SmsSid"]) == (message.sid, message.sid)
        assert (form["AccountSid"], form["To"], form["From"]) == (
            simulator.account_sid, RECIPIENT, TEST_FROM,
        )
        assert (form["NumSegments"], form["ApiVersion"]) == ("1", "2010-04-01")
        assert "ErrorCode" not in form
        assert validator.validate(callback.url, form, callback.signature)


def test_a_tampered_callback_fails_validation(simulator, callback_receiver):
    # given a received, signed callback
    client = simulator.client()
    message = client.messages.create(
        to=RECIPIENT, from_=TEST_FROM, body="tamper", status_callback=callback_receiver.status_url
    )
    callback = callback_receiver.wait_for(message.sid, lambda cbs: len(cbs) >= 1)[0]

    # when one parameter is changed, or the token is not the account's
    tampered = {**callback.form, "MessageStatus": "delivered" if callback.form["MessageStatus"] != "delivered" else "failed"}

    # then the official validator rejects it
    assert not RequestValidator(simulator.auth_token).validate(callback.url, tampered, callback.signature)
    assert not RequestValidator("another-token").validate(callback.url, callback.form, callback.signature)


def test_duplicate_callback_knob_delivers_every_callback_twice(simulator, callback_receiver):
    # given every callback is duplicated
    simulator.configure(duplicate_callback_rate=1.0)
    client = simulator.client()

    # when a message is delivered
    message = client.messages.create(
        to=RECIPIENT, from_=TEST_FROM, body="twice", status_callback=callback_receiver.status_url
    )
    callbacks = callback_receiver.wait_for(message.sid, lambda cbs: len(cbs) == 4)

    # then each status arrives twice, still in order
    assert [cb.form["MessageStatus"] for cb in callbacks] == ["sent", "sent", "delivered", "delivered"]
    time.sleep(0.1)
    assert len(callback_receiver.for_message(message.sid)) == 4


def test_out_of_order_knob_delivers_the_final_status_first(simulator, callback_receiver):
    # given every message's callbacks are reversed
    simulator.configure(out_of_order_rate=1.0)
    client = simulator.client()

    # when a message is delivered
    message = client.messages.create(
        to=RECIPIENT, from_=TEST_FROM, body="reversed", status_callback=callback_receiver.status_url
    )
    callbacks = callback_receiver.wait_for(message.sid, lambda cbs: len(cbs) == 2)

    # then "delivered" arrives before "sent", and the resource never regresses
    assert [cb.form["MessageStatus"] for cb in callbacks] == ["delivered", "sent"]
    assert client.messages(message.sid).fetch().status == "delivered"


def test_callbacks_are_retried_while_the_receiver_is_down(simulator, callback_receiver):
    # given a receiver answering 503 to its next three requests
    callback_receiver.failures_to_serve = 3
    client = simulator.client()

    # when a message is delivered
    message = client.messages.create(
        to=RECIPIENT, from_=TEST_FROM, body="retry", status_callback=callback_receiver.status_url
    )
    callbacks = callback_receiver.wait_for(message.sid, lambda cbs: len(cbs) == 2)

    # then both callbacks got through, in order, after the retries
    assert [cb.form["MessageStatus"] for cb in callbacks] == ["sent", "delivered"]
    assert callback_receiver.attempts[message.sid] == 5


def test_retries_are_bounded(simulator, callback_receiver):
    # given at most two retries and a receiver that keeps failing
    simulator.configure(callback_retries=2)
    callback_receiver.failures_to_serve = 1000
    client = simulator.client()

    # when a message is delivered
    message = client.messages.create(
        to=RECIPIENT, from_=TEST_FROM, body="give up", status_callback=callback_receiver.status_url
    )
    deadline = time.monotonic() + 5
    while callback_receiver.attempts[message.sid] < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)

    # then each callback was tried three times, then given up, and the message still delivered
    assert callback_receiver.attempts[message.sid] == 6
    assert client.messages(message.sid).fetch().status == "delivered"


def test_an_unreachable_receiver_blocks_neither_creates_nor_status_changes(simulator):
    # given a StatusCallback where nothing listens
    simulator.configure(callback_retries=1)
    client = simulator.client()
    unreachable = "http://127.0.0.1:9/status"

    # when messages are sent to it
    started = time.monotonic()
    sids = [
        client.messages.create(to=RECIPIENT, from_=TEST_FROM, body=str(n), status_callback=unreachable).sid
        for n in range(5)
    ]

    # then the creates answered at once and the messages still got delivered
    assert time.monotonic() - started < 2
    for sid in sids:
        wait_for_status(client, sid, "delivered")


# --- Control API --------------------------------------------------------------------------


def test_control_api_counts_creates_per_recipient_and_body(simulator):
    # given the same text sent twice to one recipient and once to another
    client = simulator.client()
    client.messages.create(to=RECIPIENT, from_=TEST_FROM, body="same")
    client.messages.create(to=RECIPIENT, from_=TEST_FROM, body="same")
    client.messages.create(to="+15550000000", from_=TEST_FROM, body="same")

    # when the sent messages are read
    sent = simulator.sent()

    # then the double send is visible
    assert sent["count"] == 3
    assert [m["creates"] for m in sent["messages"]] == [2, 2, 1]
    assert {(m["to"], m["body"]) for m in sent["duplicates"]} == {(RECIPIENT, "same")}
    assert set(sent["messages"][0]) == {
        "sid", "account_sid", "to", "from", "body", "num_segments", "status", "error_code", "creates", "created_at",
    }
    assert [m["created_at"] for m in sent["messages"]] == sorted(m["created_at"] for m in sent["messages"])


def test_reset_forgets_messages_and_restores_the_start_up_config(simulator):
    # given a sent message and changed knobs
    simulator.client().messages.create(to=RECIPIENT, from_=TEST_FROM, body="old")
    simulator.configure(rate_429=0.5, auth_token="changed")

    # when the simulator is reset
    simulator.reset()

    # then nothing is remembered and the original credentials work again
    assert simulator.sent()["count"] == 0
    config = requests.get(f"{simulator.url}/_sim/config", timeout=10).json()
    assert (config["rate_429"], config["auth_token"]) == (0.0, simulator.auth_token)


@pytest.mark.parametrize(
    "changes",
    [{"rate_429": 2}, {"no_such_knob": 1}, {"outcomes": {"lost": 1}}, {"callback_concurrency": 8},
     {"outcomes": {"undelivered:99999": 1}}, {"outcomes": {"delivered:30007": 1}},
     {"sender_outcomes": {"+14155550123": {"lost": 1}}}],
)
def test_invalid_config_changes_are_refused_and_change_nothing(simulator, changes):
    # given the start-up configuration
    before = requests.get(f"{simulator.url}/_sim/config", timeout=10).json()

    # when an invalid change is posted
    response = requests.post(f"{simulator.url}/_sim/config", json={"latency_ms": 5, **changes}, timeout=10)

    # then it is refused as a whole
    assert response.status_code == 400 and response.json()["error"]
    assert requests.get(f"{simulator.url}/_sim/config", timeout=10).json() == before
