"""The Twilio gateway against the in-process simulator: wire round trip, error classes, no resent POSTs."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests
from aiohttp import web

from shared.config import load_settings
from shared.twilio.errors import CredentialsRejected, OutcomeUnknown, PermanentTwilioError, TransientTwilioError
from shared.twilio.gateway import TwilioGateway, gateway_for
from tests.support.ports import free_port
from tests.twilio_sim_fixtures import (  # noqa: F401  (fixtures)
    _callback_receiver_server,
    _simulator_server,
    background_loop,
    callback_receiver,
    simulator,
)

TEST_FROM = "+15005550006"
RECIPIENT = "+15558675310"


@pytest.fixture
def gateway(simulator, callback_receiver):
    gateway = TwilioGateway(simulator.account_sid, simulator.auth_token, simulator.url, callback_receiver.status_url)
    yield gateway
    gateway.close()


def wait_for(check, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.01)
    raise AssertionError("condition never held")


def test_send_then_fetch_round_trips_through_twilio_wire_format(gateway, callback_receiver):
    # when a two-segment message is sent
    sent = gateway.send(to=RECIPIENT, from_=TEST_FROM, body="x" * 161)

    # then Twilio's answer comes back typed, and it later reports the delivery with its price
    assert sent.sid.startswith("SM") and len(sent.sid) == 34
    assert (sent.status, sent.num_segments, sent.price, sent.price_unit) == ("queued", 2, None, "USD")
    fetched = wait_for(lambda: (m := gateway.fetch(sent.sid)).status == "delivered" and m)
    assert (fetched.sid, fetched.num_segments, fetched.price, fetched.price_unit) == (sent.sid, 2, "-0.01580", "USD")
    assert (fetched.error_code, fetched.error_message) == (None, None)
    # and the create asked Twilio to report to our status callback URL
    callbacks = callback_receiver.wait_for(
        sent.sid, lambda received: any(c.form["MessageStatus"] == "delivered" for c in received))
    assert callbacks[0].url == callback_receiver.status_url


def test_media_urls_are_sent_as_an_mms_each_url_its_own_field(gateway, simulator):
    sent = gateway.send(to=RECIPIENT, from_=TEST_FROM, body="see this",
                        media_urls=["https://example.com/a.jpg", "https://example.com/b.png?size=2&x=%20"])

    assert sent.sid.startswith("MM") and sent.num_segments == 1
    received = requests.get(f"{simulator.url}/2010-04-01/Accounts/{simulator.account_sid}/Messages/{sent.sid}.json",
                            auth=(simulator.account_sid, simulator.auth_token), timeout=10).json()
    assert received["num_media"] == "2"


def test_a_failed_delivery_is_fetched_with_its_error(gateway, simulator):
    # given Twilio fails every message
    simulator.configure(outcomes={"failed": 1})
    sent = gateway.send(to=RECIPIENT, from_=TEST_FROM, body="hello")

    # when it is fetched after failing
    fetched = wait_for(lambda: (m := gateway.fetch(sent.sid)).status == "failed" and m)

    # then the error code is an int and the message says why
    assert isinstance(fetched.error_code, int) and fetched.error_code >= 30001 and fetched.error_message


@pytest.mark.parametrize(("to", "from_", "code"), [
    ("+15005550001", TEST_FROM, 21211),  # invalid To
    ("+15005550002", TEST_FROM, 21612),  # not reachable from this sender
    ("+15005550003", TEST_FROM, 21408),  # region not enabled
    ("+15005550004", TEST_FROM, 21610),  # unsubscribed recipient
    ("+15005550009", TEST_FROM, 21614),  # not a mobile number
    (RECIPIENT, "+15005550001", 21212),  # invalid From
    (RECIPIENT, "+15005550007", 21606),  # From not capable for this destination
])
def test_twilio_refusals_are_permanent_errors_with_their_code(gateway, simulator, to, from_, code):
    with pytest.raises(PermanentTwilioError) as raised:
        gateway.send(to=to, from_=from_, body="hello")

    assert raised.value.code == code and raised.value.status == 400 and raised.value.message
    assert raised.value.recipient_opted_out == (code == 21610)
    assert raised.value.blames_sender == (code in (21212, 21606))
    assert simulator.sent()["count"] == 0


def test_a_full_sender_queue_is_transient(gateway):
    # given the From number whose queue at Twilio is full (21611)
    with pytest.raises(TransientTwilioError) as raised:
        gateway.send(to=RECIPIENT, from_="+15005550008", body="hello")

    assert raised.value.code == 21611 and not isinstance(raised.value, OutcomeUnknown)


def test_a_429_storm_is_transient_with_twilios_retry_after(gateway, simulator):
    # given Twilio refuses every request with 429 and Retry-After: 7
    simulator.configure(rate_429=1.0, retry_after_s=7)

    with pytest.raises(TransientTwilioError) as raised:
        gateway.send(to=RECIPIENT, from_=TEST_FROM, body="hello")

    assert (raised.value.status, raised.value.code, raised.value.retry_after) == (429, 20429, 7.0)
    assert not isinstance(raised.value, OutcomeUnknown)
    assert simulator.sent()["count"] == 0


def test_a_twilio_500_is_transient_without_retry_after(gateway, simulator):
    simulator.configure(rate_5xx=1.0)

    with pytest.raises(TransientTwilioError) as raised:
        gateway.send(to=RECIPIENT, from_=TEST_FROM, body="hello")

    assert (raised.value.status, raised.value.code, raised.value.retry_after) == (500, 20500, None)


def test_rotated_credentials_are_rejected_for_send_and_fetch(gateway, simulator):
    # given a message sent, then the auth token rotated at Twilio
    sent = gateway.send(to=RECIPIENT, from_=TEST_FROM, body="hello")
    simulator.configure(auth_token="rotated-elsewhere")

    # then both calls raise CredentialsRejected naming the account
    for call in (lambda: gateway.send(to=RECIPIENT, from_=TEST_FROM, body="again"), lambda: gateway.fetch(sent.sid)):
        with pytest.raises(CredentialsRejected) as raised:
            call()
        assert raised.value.account_sid == simulator.account_sid


def test_a_subaccount_gateway_sends_as_the_subaccount_and_proves_its_credentials(simulator, callback_receiver):
    # given a subaccount's own credentials, and the same sid with a guessed token
    sub = simulator.add_account()
    own = TwilioGateway(sub["sid"], sub["auth_token"], simulator.url, callback_receiver.status_url)
    guessed = TwilioGateway(sub["sid"], "guessed-token", simulator.url, callback_receiver.status_url)

    # when each asks Twilio for its account, and the subaccount sends
    status = own.account_status()
    with pytest.raises(CredentialsRejected):
        guessed.account_status()
    sent = own.send(to=RECIPIENT, from_=TEST_FROM, body="from the subaccount")

    # then the message is the subaccount's, and so is what a later fetch says
    assert status == "active"
    assert sent.account_sid == own.fetch(sent.sid).account_sid == sub["sid"]
    own.close()
    guessed.close()


def test_an_unreachable_twilio_cannot_prove_credentials(simulator):
    # given nothing listens where Twilio should be
    gateway = TwilioGateway(simulator.account_sid, simulator.auth_token, f"http://127.0.0.1:{free_port()}", "http://x/")

    # then asking for the account is a transient failure, not a verdict on the credentials
    with pytest.raises(TransientTwilioError):
        gateway.account_status()
    gateway.close()


def test_fetching_an_unknown_sid_is_permanent_20404(gateway):
    with pytest.raises(PermanentTwilioError) as raised:
        gateway.fetch("SM" + "0" * 32)

    assert (raised.value.status, raised.value.code) == (404, 20404)


def test_an_unreachable_twilio_is_transient_and_safe_to_retry(callback_receiver):
    # given nothing listens where Twilio should be
    gateway = TwilioGateway("AC" + "1" * 32, "token", f"http://127.0.0.1:{free_port()}", callback_receiver.status_url)

    with pytest.raises(TransientTwilioError) as raised:
        gateway.send(to=RECIPIENT, from_=TEST_FROM, body="hello")

    # then the request never left, so it is a plain transient error, not an unknown outcome
    assert not isinstance(raised.value, OutcomeUnknown)


class SilentTwilio:
    """Takes a create and never answers it: it stalls past the client's timeout, or drops the connection."""

    def __init__(self, background_loop, behaviour: str):
        self.posts = 0
        self.behaviour = behaviour
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._create)
        self.url = background_loop.serve(app)

    async def _create(self, request: web.Request) -> web.Response:
        await request.post()
        self.posts += 1
        if self.behaviour == "drop":
            request.transport.close()
        else:
            await asyncio.sleep(1.0)
        return web.json_response({}, status=201)


@pytest.mark.parametrize("behaviour", ["stall", "drop"])
def test_a_create_without_an_answer_is_an_unknown_outcome_and_never_resent(background_loop, behaviour):
    # given a Twilio that receives the create but never answers it
    twilio = SilentTwilio(background_loop, behaviour)
    gateway = TwilioGateway("AC" + "1" * 32, "token", twilio.url, "http://127.0.0.1:1/status", timeout=0.2)

    # when a message is sent
    with pytest.raises(OutcomeUnknown):
        gateway.send(to=RECIPIENT, from_=TEST_FROM, body="only once")

    # then the caller learns Twilio may have it, and the HTTP layer did not POST it again
    time.sleep(0.5)  # room for a resent POST to arrive, if there were one
    assert twilio.posts == 1


def test_a_create_the_simulator_made_but_never_answered_is_unknown_and_found_again(simulator, callback_receiver):  # noqa: F811
    # given a Twilio that creates every message and answers only after the client gave up
    simulator.configure(rate_lost_answer=1.0, hang_s=1.0)
    gateway = TwilioGateway(simulator.account_sid, simulator.auth_token, simulator.url, callback_receiver.status_url,
                            timeout=0.2)
    sent_after = datetime.now(UTC) - timedelta(minutes=1)

    # when a message is sent
    with pytest.raises(OutcomeUnknown):
        gateway.send(to=RECIPIENT, from_=TEST_FROM, body="answer lost")

    # then Twilio has it once, and a find brings back its sid
    simulator.configure(rate_lost_answer=0.0)
    found = gateway.find(to=RECIPIENT, from_=TEST_FROM, body="answer lost", sent_after=sent_after)
    assert [m.sid for m in found] == [m["sid"] for m in simulator.sent()["messages"]] and len(found) == 1
    assert simulator.faults() == {"lost_answer": 1}
    gateway.close()


def test_a_request_that_hangs_past_the_timeout_is_unknown_and_creates_nothing(simulator, callback_receiver):  # noqa: F811
    # given a Twilio that stalls every request and creates nothing
    simulator.configure(rate_timeout=1.0, hang_s=1.0)
    gateway = TwilioGateway(simulator.account_sid, simulator.auth_token, simulator.url, callback_receiver.status_url,
                            timeout=0.2)

    # when a message is sent, the caller cannot tell whether Twilio took it
    with pytest.raises(OutcomeUnknown):
        gateway.send(to=RECIPIENT, from_=TEST_FROM, body="stalled")

    # then Twilio has nothing
    assert simulator.sent()["count"] == 0 and simulator.faults() == {"timeout": 1}
    gateway.close()


def test_gateway_for_waits_as_long_as_twilio_timeout_seconds_says(tmp_path):
    settings = load_settings({"CREDITQ_DATA_DIR": str(tmp_path), "TWILIO_TIMEOUT_SECONDS": "2.5",
                              "CREDITQ_ADMIN_KEY": "test-operator-key-0123456789", "CREDITQ_ENV": "development"})

    assert gateway_for(settings).http_client.timeout == 2.5


def test_threads_share_a_few_pooled_connections(gateway, simulator):
    # given 8 threads sending 80 messages through one gateway
    with ThreadPoolExecutor(8) as pool:
        sids = list(pool.map(lambda n: gateway.send(to=RECIPIENT, from_=TEST_FROM, body=f"m{n}").sid, range(80)))

    # then every message went out once, over at most one keep-alive connection per thread
    sent = simulator.sent()
    assert len(set(sids)) == 80 and sent["count"] == 80 and sent["duplicates"] == []
    pools = gateway.http_client.pool.pools
    assert 1 <= sum(pools[key].num_connections for key in pools.keys()) <= 8


def test_gateway_for_makes_one_gateway_per_credentials(settings):
    # given two threads asking for the deployment's gateway at once, and one for a subaccount
    results = []
    threads = [threading.Thread(target=lambda: results.append(gateway_for(settings))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    subaccount = gateway_for(settings, "AC" + "2" * 32, "sub-token")

    # then they share one gateway, and the subaccount has its own
    assert results[0] is results[1] is gateway_for(settings)
    assert subaccount is not results[0] and subaccount.account_sid == "AC" + "2" * 32
    assert results[0].status_callback_url == settings.public_base_url + "/webhooks/twilio/status"


def test_requests_are_not_logged_at_info(gateway, caplog):
    # given a worker logging at INFO, as dramatiq's does
    with caplog.at_level("INFO"):
        gateway.send(to=RECIPIENT, from_=TEST_FROM, body="hello")

    # then the package's per-request lines stay out of it
    assert not [r for r in caplog.records if r.name.startswith("twilio")]


# --- find: the sid of a create whose answer was lost ------------------------------------------------


def test_find_lists_the_matching_messages_sent_since_oldest_first(gateway, simulator):
    # given two sends of the same text to the recipient, and others that differ in body, To or From
    since = datetime.now(UTC) - timedelta(seconds=5)
    first = gateway.send(to=RECIPIENT, from_=TEST_FROM, body="open house")
    second = gateway.send(to=RECIPIENT, from_=TEST_FROM, body="open house")
    gateway.send(to=RECIPIENT, from_=TEST_FROM, body="another text")
    gateway.send(to="+15558675311", from_=TEST_FROM, body="open house")
    gateway.send(to=RECIPIENT, from_="+15005550010", body="open house")
    wait_for(lambda: all(m["status"] != "queued" for m in simulator.sent()["messages"]))

    # when looking for the text
    found = gateway.find(to=RECIPIENT, from_=TEST_FROM, body="open house", sent_after=since)

    # then only the two matches come back, oldest first, with their status
    assert [m.sid for m in found] == [first.sid, second.sid]
    assert all(m.status in ("sent", "delivered") and m.date_created >= since for m in found)


def test_find_skips_messages_created_before_the_given_time(gateway, simulator):
    # given a message sent earlier today (DateSent> only counts days)
    gateway.send(to=RECIPIENT, from_=TEST_FROM, body="open house")
    wait_for(lambda: all(m["status"] != "queued" for m in simulator.sent()["messages"]))

    # when looking for one sent after it
    found = gateway.find(to=RECIPIENT, from_=TEST_FROM, body="open house",
                         sent_after=datetime.now(UTC) + timedelta(seconds=1))

    # then there is none
    assert found == []


def test_find_sees_a_message_twilio_took_but_has_not_sent_yet(gateway, simulator):
    # given a text Twilio has queued and will not send for a minute (no DateSent yet)
    simulator.configure(callback_delay_ms=60_000)
    since = datetime.now(UTC) - timedelta(seconds=5)
    queued = gateway.send(to=RECIPIENT, from_=TEST_FROM, body="open house")
    assert [m["status"] for m in simulator.sent()["messages"]] == ["queued"]

    # when looking for it, as the sweeper does for a create whose answer was lost
    found = gateway.find(to=RECIPIENT, from_=TEST_FROM, body="open house", sent_after=since)

    # then it is found, so it is adopted rather than sent a second time
    assert [m.sid for m in found] == [queued.sid]


def test_the_simulators_date_sent_filter_counts_whole_days(simulator):
    # given a message sent today
    client = simulator.client()
    client.messages.create(to=RECIPIENT, from_=TEST_FROM, body="hello")
    wait_for(lambda: all(m["status"] != "queued" for m in simulator.sent()["messages"]))
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)

    # then DateSent> today (any time of it) finds it, and tomorrow does not
    assert len(client.messages.list(to=RECIPIENT, date_sent_after=today + timedelta(hours=23))) == 1
    assert client.messages.list(to=RECIPIENT, date_sent_after=today + timedelta(days=1)) == []
