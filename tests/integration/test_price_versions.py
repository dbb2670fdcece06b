"""Two processes on one database (each its own engine, as two hosts would have): what one changes, the other uses
without a restart — a published rate card within its check interval, a rotated Twilio token at its next send."""

import json
import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from shared.db import Database
from shared.messaging.credentials import set_twilio_credentials
from shared.messaging.rates import BUNDLED_RATE_CARD, RATE_CARDS, current_rate_card
from shared.messaging.settlement import settle_message
from shared.models import PriceVersion
from shared.price_versions import CHECK_SECONDS, load_file, publish
from shared.twilio.gateway import GatewayCache
from tests.integration.messaging.test_send_pipeline import (  # noqa: F401
    accept,
    account,
    gateways,
    make_account,
    message,
    report,
    send,
    throttle,
)
from tests.twilio_sim_fixtures import (  # noqa: F401
    _callback_receiver_server,
    _simulator_server,
    background_loop,
    callback_receiver,
    simulator,
)

BOUND_SECONDS = 10 * CHECK_SECONDS  # generous: the check interval is what is proven, not a timing


def now() -> datetime:
    return datetime.now(UTC)


def eventually(condition) -> bool:
    deadline = time.monotonic() + BOUND_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def other_process(database):
    """A second process's Database on the same server: its own engine, pool and views."""
    other = Database(database.url, pool_size=4)
    yield other
    other.dispose()


def _dearer_card() -> dict:
    card = json.loads(BUNDLED_RATE_CARD.read_text())
    card["countries"]["US"]["rates"]["sms"]["long_code"] = "1.25"
    return card


def test_a_card_published_through_one_process_prices_the_other_processes_settlement(
        database, other_process, gateways, throttle):  # noqa: F811
    # given the file loaded as version 1, seen by a worker process, and a delivered 2-segment text
    with database.unit_of_work() as session:
        load_file(session, RATE_CARDS, now=now())
    assert eventually(lambda: current_rate_card(other_process.engine).version == 1)
    account_id = make_account(database, 10)
    message_id = accept(database, account_id)
    send(database, message_id, gateways, throttle)
    report(database, message_id, "delivered", segments=2)

    # when an operator publishes a card with dearer texts through another process
    with database.unit_of_work() as session:
        assert publish(session, RATE_CARDS, _dearer_card(), now=now()) == (2, True)

    # then the worker prices with it after its next check, and the message names the version it was charged by
    assert eventually(lambda: current_rate_card(other_process.engine).version == 2)
    with other_process.unit_of_work() as session:
        settle_message(session, message_id, rate_card=current_rate_card(other_process.engine), now=now())
    settled = message(database, message_id)
    assert (settled.credits_charged, settled.rate_card_version) == (2500, 2)
    assert account(database, account_id).balance == 10_000 - 2500


def test_db_upgrades_at_the_same_moment_load_one_version(database):
    # given four hosts running `creditq db upgrade` at once
    start = threading.Barrier(4)
    results, errors = [], []

    def upgrade_host():
        host = Database(database.url, pool_size=1)
        try:
            start.wait()
            with host.unit_of_work() as session:
                results.append(load_file(session, RATE_CARDS, now=now()))
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)
        finally:
            host.dispose()

    threads = [threading.Thread(target=upgrade_host) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then the file is one version, added by one of them
    assert errors == []
    assert sorted(results) == [(1, False), (1, False), (1, False), (1, True)]
    with database.read_only() as session:
        assert session.scalars(select(PriceVersion.version)).all() == [1]


def test_a_token_rotated_through_one_process_is_used_by_the_others_next_send(
        database, other_process, throttle, simulator, callback_receiver):  # noqa: F811
    # given a worker process whose gateway cache holds the account's old (rejected) token
    cache = GatewayCache(max_entries=4)

    def worker_gateways(account_sid=None, auth_token=None):
        return cache.get((account_sid or simulator.account_sid, auth_token or simulator.auth_token, simulator.url,
                          callback_receiver.status_url))

    account_id = make_account(database, 10)
    with database.unit_of_work() as session:
        set_twilio_credentials(session, account_id, simulator.account_sid, "old-token", now=now())
    first = accept(database, account_id)
    assert send(other_process, first, worker_gateways, throttle) == "parked"

    # when the owner rotates the token through the web process
    with database.unit_of_work() as session:
        set_twilio_credentials(session, account_id, simulator.account_sid, simulator.auth_token, now=now())

    # then the worker's next send uses the new token: the text reaches Twilio
    assert send(other_process, first, worker_gateways, throttle) == "queued"
    assert message(database, first).twilio_sid in {m["sid"] for m in simulator.sent()["messages"]}
