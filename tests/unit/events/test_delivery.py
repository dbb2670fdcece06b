"""Delivering an event: signed per Standard Webhooks, retried with doubling delays for the retry window, then
failed (and the endpoint disabled when nothing got through); an attempt under way is never doubled; the
address is checked again at each attempt."""

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.config import WebhookSettings
from shared.events import delivery, outbox
from shared.events.endpoints import create_endpoint, update_endpoint
from shared.events.transport import Answer
from shared.models import Account, WebhookDelivery, WebhookEndpoint

START = datetime(2026, 11, 3, 15, 0, tzinfo=UTC)
SETTINGS = WebhookSettings(timeout_seconds=2, retry_base_seconds=10, retry_max_seconds=3600,
                           retry_window_seconds=3 * 24 * 3600)


class Clock:
    def __init__(self):
        self.now = START

    def __call__(self):
        return self.now


class LocalEndpoint:
    """A real HTTP server on this machine: each POST, its body read, is answered by `answer`."""

    def __init__(self):
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                endpoint.answer(self, self.rfile.read(int(self.headers["Content-Length"])).decode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"

    def answer(self, request: BaseHTTPRequestHandler, body: str) -> None:
        raise NotImplementedError

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Receiver(LocalEndpoint):
    """An endpoint that answers each POST with the next status of `answers` (then 200), keeping each request."""

    def __init__(self, answers=()):
        self.answers = list(answers)
        self.requests: list[tuple[dict, str]] = []
        super().__init__()

    def answer(self, request: BaseHTTPRequestHandler, body: str) -> None:
        self.requests.append(({k.lower(): v for k, v in request.headers.items()}, body))
        status = self.answers.pop(0) if self.answers else 200
        request.send_response(status)
        request.end_headers()
        request.wfile.write(b"nope" if status >= 300 else b"ok")


@pytest.fixture
def receiver():
    started = []

    def start(answers=()):
        started.append(Receiver(answers))
        return started[-1]

    yield start
    for server in started:
        server.close()


def given_an_event_for(database, url: str, events=("balance.low",), *,
                       account_id: str = "acct_1") -> tuple[str, str, str]:
    """An account with an endpoint at `url` and a balance.low event written: (endpoint id, secret, event id)."""
    with database.unit_of_work() as session:
        session.add(Account(id=account_id, name="Grace Church"))
        session.flush()
        endpoint, secret = create_endpoint(session, account_id, url=url, events=list(events), description=None,
                                           now=START)
        event_id = outbox.emit(session, "balance.low", account_id=account_id,
                               key=f"balance.low:{account_id}:None:2026-11-03", data={"available": "4.5"}, now=START)
    return endpoint.id, secret, event_id


def dispatched(database, event_id) -> str:
    with database.unit_of_work() as session:
        [delivery_id] = delivery.dispatch(session, event_id, settings=SETTINGS, now=START)
    return delivery_id


def stored(database, delivery_id) -> WebhookDelivery:
    with database.unit_of_work() as session:
        return session.get(WebhookDelivery, delivery_id)


def endpoint_of(database, endpoint_id) -> WebhookEndpoint:
    with database.unit_of_work() as session:
        return session.get(WebhookEndpoint, endpoint_id)


def test_a_delivery_is_signed_so_the_standardwebhooks_package_verifies_it(sqlite_database, receiver):
    server = receiver()
    _, secret, event_id = given_an_event_for(sqlite_database, server.url)
    delivery_id = dispatched(sqlite_database, event_id)
    # when it is attempted (now: the receiver checks the signature's timestamp against its clock)
    outcome = delivery.attempt(sqlite_database, delivery_id, settings=SETTINGS, development=True,
                               now=lambda: datetime.now(UTC))
    # then the receiver got the event, signed with the endpoint's secret, the event id as webhook-id
    assert outcome.status == "succeeded"
    [(headers, body)] = server.requests
    assert Webhook(secret).verify(body, headers) == {"type": "balance.low", "id": event_id,
                                                     "created_at": START.isoformat(), "data": {"available": "4.5"}}
    assert headers["webhook-id"] == event_id
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 32).verify(body, headers)
    assert stored(sqlite_database, delivery_id).status == "succeeded"
    assert endpoint_of(sqlite_database, stored(sqlite_database, delivery_id).endpoint_id).last_success_at is not None


def test_a_second_dispatch_of_an_event_makes_no_second_delivery(sqlite_database):
    _, _, event_id = given_an_event_for(sqlite_database, "http://127.0.0.1:9/hooks")
    dispatched(sqlite_database, event_id)
    with sqlite_database.unit_of_work() as session:
        assert delivery.dispatch(session, event_id, settings=SETTINGS, now=START) == []
        assert len(session.scalars(select(WebhookDelivery)).all()) == 1


def test_failures_are_retried_after_doubling_delays_with_the_same_event_id(sqlite_database, receiver):
    server = receiver([500, 503, 404])
    _, _, event_id = given_an_event_for(sqlite_database, server.url)
    delivery_id = dispatched(sqlite_database, event_id)
    clock = Clock()
    delays = []
    while (outcome := delivery.attempt(sqlite_database, delivery_id, settings=SETTINGS, development=True,
                                       now=clock)).status == "retrying":
        delays.append(outcome.retry_in_seconds)
        assert stored(sqlite_database, delivery_id).next_attempt_at is not None
        clock.now += timedelta(seconds=outcome.retry_in_seconds)
    assert delays == [10, 20, 40] and outcome.status == "succeeded"
    assert [headers["webhook-id"] for headers, _ in server.requests] == [event_id] * 4
    assert stored(sqlite_database, delivery_id).attempts == 4


def test_an_attempt_under_way_is_not_made_again_until_its_lease_ends(sqlite_database):
    _, _, event_id = given_an_event_for(sqlite_database, "http://127.0.0.1:9/hooks")
    delivery_id = dispatched(sqlite_database, event_id)
    clock = Clock()
    second = []

    def post_while_another_job_tries(target, body, headers, *, timeout):
        second.append(delivery.attempt(sqlite_database, delivery_id, settings=SETTINGS, development=True, now=clock))
        return Answer(200, "ok")

    outcome = delivery.attempt(sqlite_database, delivery_id, settings=SETTINGS, development=True, now=clock,
                               poster=post_while_another_job_tries)
    assert outcome.status == "succeeded" and [o.status for o in second] == ["not_due"]
    assert stored(sqlite_database, delivery_id).attempts == 1


def test_a_name_that_resolves_elsewhere_at_delivery_time_is_not_called(sqlite_database):
    # given an endpoint saved while its name resolved to a public address
    _, _, event_id = given_an_event_for(sqlite_database, "https://hooks.example.com/creditq")
    delivery_id = dispatched(sqlite_database, event_id)
    posted = []
    # when the name now resolves to the metadata service (DNS rebinding)
    outcome = delivery.attempt(sqlite_database, delivery_id, settings=SETTINGS, development=False, now=Clock(),
                               resolver=lambda host, port: ["169.254.169.254"],
                               poster=lambda *args, **kwargs: posted.append(args))
    # then nothing is sent and the attempt failed, saying why
    assert posted == [] and outcome.status == "retrying"
    assert stored(sqlite_database, delivery_id).error == "url resolves to 169.254.169.254, which is not a public address"


def test_a_name_server_that_never_answers_holds_the_attempt_no_longer_than_its_timeout(sqlite_database):
    # given an endpoint whose host's name server never answers (until the test ends)
    _, _, event_id = given_an_event_for(sqlite_database, "https://hooks.example.com/creditq")
    delivery_id = dispatched(sqlite_database, event_id)
    answers, posted = threading.Event(), []

    def resolver(host, port):
        answers.wait(60)
        return ["93.184.215.14"]

    # when it is attempted, its timeout 2 s
    started = time.monotonic()
    outcome = delivery.attempt(sqlite_database, delivery_id, settings=SETTINGS, development=False, now=Clock(),
                               resolver=resolver, poster=lambda *args, **kwargs: posted.append(args))
    answers.set()

    # then the attempt failed once its timeout was over (generously bounded: a loaded machine), saying why
    assert time.monotonic() - started < 30 and posted == [] and outcome.status == "retrying"
    assert "the host name did not resolve within 2 s" in stored(sqlite_database, delivery_id).error


def test_an_endpoint_that_never_answered_for_the_whole_window_is_disabled_with_a_reason(sqlite_database, receiver):
    server = receiver([500] * 100)
    endpoint_id, _, event_id = given_an_event_for(sqlite_database, server.url)
    delivery_id = dispatched(sqlite_database, event_id)
    clock = Clock()
    while (outcome := delivery.attempt(sqlite_database, delivery_id, settings=SETTINGS, development=True,
                                       now=clock)).status == "retrying":
        clock.now += timedelta(seconds=outcome.retry_in_seconds)
    # then the delivery failed within its 3 days, and the endpoint is disabled, saying why
    row = stored(sqlite_database, delivery_id)
    assert outcome.status == "failed" and row.status == "failed" and clock.now <= START + timedelta(days=3)
    assert row.response_status == 500 and row.error == "HTTP 500: nope"
    endpoint = endpoint_of(sqlite_database, endpoint_id)
    assert not endpoint.enabled and endpoint.disabled_reason == "every delivery failed for 72 hours (last: HTTP 500: nope)"
    # and enabling it again clears the reason; a replay sends the event again under its id
    with sqlite_database.unit_of_work() as session:
        update_endpoint(session, "acct_1", endpoint_id, enabled=True, now=clock.now)
        delivery.replay(session, "acct_1", endpoint_id, delivery_id, settings=SETTINGS, now=clock.now)
    server.answers.clear()
    assert delivery.attempt(sqlite_database, delivery_id, settings=SETTINGS, development=True,
                            now=clock).status == "succeeded"
    assert json.loads(server.requests[-1][1])["id"] == event_id
    assert endpoint_of(sqlite_database, endpoint_id).disabled_reason is None


def test_an_endpoint_that_took_other_events_meanwhile_stays_enabled_when_one_delivery_fails(sqlite_database, receiver):
    server = receiver([500] * 100)
    endpoint_id, _, event_id = given_an_event_for(sqlite_database, server.url)
    delivery_id = dispatched(sqlite_database, event_id)
    with sqlite_database.unit_of_work() as session:
        session.get(WebhookEndpoint, endpoint_id).last_success_at = START + timedelta(days=1)
    clock = Clock()
    while (outcome := delivery.attempt(sqlite_database, delivery_id, settings=SETTINGS, development=True,
                                       now=clock)).status == "retrying":
        clock.now += timedelta(seconds=outcome.retry_in_seconds)
    assert outcome.status == "failed" and endpoint_of(sqlite_database, endpoint_id).enabled


def test_the_sweeper_finds_events_never_dispatched_and_deliveries_whose_job_was_lost(sqlite_database):
    _, _, event_id = given_an_event_for(sqlite_database, "http://127.0.0.1:9/hooks")
    stale = timedelta(seconds=60)
    with sqlite_database.unit_of_work() as session:
        assert delivery.lost(session, now=START + timedelta(seconds=30), stale_after=stale).events == []
        assert delivery.lost(session, now=START + timedelta(seconds=61), stale_after=stale).events == [event_id]
    delivery_id = dispatched(sqlite_database, event_id)
    with sqlite_database.unit_of_work() as session:
        found = delivery.lost(session, now=START + timedelta(seconds=61), stale_after=stale)
    assert found.events == [] and found.deliveries == [delivery_id]
