"""A process's view of the newest rate card version: the file until one is loaded, then each newer one once it
re-checks (never later than its check interval), never a query per read in between."""

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.orm import Session

from shared import price_versions
from shared.messaging.rates import BUNDLED_RATE_CARD, RATE_CARDS
from shared.price_versions import NewestVersions, load_file, publish


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _dearer_card(credits: str) -> dict:
    card = json.loads(BUNDLED_RATE_CARD.read_text())
    card["countries"]["US"]["rates"]["sms"]["long_code"] = credits
    return card


@pytest.fixture
def view(sqlite_database):
    clock = Clock()
    return NewestVersions(sqlite_database.engine, check_seconds=2.0, clock=clock), clock


def test_the_file_prices_until_a_version_is_loaded_then_each_newer_version_after_a_check(sqlite_database, view):
    newest, clock = view
    # given a database no upgrade has loaded: the file's card, no version
    assert newest.current(RATE_CARDS).version is None

    # when db upgrade loads the file and an operator publishes a dearer card
    with sqlite_database.unit_of_work() as session:
        load_file(session, RATE_CARDS, now=datetime.now(UTC))
        publish(session, RATE_CARDS, _dearer_card("1.25"), now=datetime.now(UTC))

    # then the process keeps what it read until its next check, and then prices with the newest
    assert newest.current(RATE_CARDS).version is None
    clock.now += 2.0
    card = newest.current(RATE_CARDS)
    assert card.version == 2
    assert card.price("sms", country="US", sender_type="long_code") == 1250


def test_reads_between_checks_ask_the_database_nothing(sqlite_database, view):
    newest, clock = view
    with sqlite_database.unit_of_work() as session:
        load_file(session, RATE_CARDS, now=datetime.now(UTC))
    statements = []
    event.listen(sqlite_database.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    for _ in range(1000):
        newest.current(RATE_CARDS)
    clock.now += 1.9
    newest.current(RATE_CARDS)
    assert len([s for s in statements if "price_versions" in s]) == 2  # the first read: the newest number, the row

    clock.now += 0.1
    newest.current(RATE_CARDS)
    assert len([s for s in statements if "price_versions" in s]) == 3  # a check finds the same number: no row read


def test_the_same_document_published_again_is_not_a_new_version(sqlite_database):
    with sqlite_database.unit_of_work() as session:
        first = publish(session, RATE_CARDS, _dearer_card("1.25"), now=datetime.now(UTC))
        again = publish(session, RATE_CARDS, json.loads(json.dumps(_dearer_card("1.25"), indent=4)),
                        now=datetime.now(UTC))

    assert first == (1, True)
    assert again == (1, False)


def test_a_check_reads_through_the_callers_session_and_needs_no_second_connection(sqlite_database):
    # given a loaded rate card, and a process whose pool has one connection, held by the session that asks for it
    with sqlite_database.unit_of_work() as session:
        load_file(session, RATE_CARDS, now=datetime.now(UTC))
    engine = create_engine(sqlite_database.url, pool_size=1, max_overflow=0, pool_timeout=0.5)
    with Session(engine) as session:
        session.connection()

        # when the process first prices in that session (its view has a check due)
        card = price_versions.current(session, RATE_CARDS)

    # then the check read through that session (one of its own would wait for the pool's only connection)
    assert card.version == 1
    engine.dispose()
