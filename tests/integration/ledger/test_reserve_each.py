"""book.reserve_each on SQLite and PostgreSQL: a batch of holds on many accounts, each meeting its own fate, in one
round trip on PostgreSQL, the accounts' rows locked in their ids' order."""

import psycopg
import pytest
from sqlalchemy import select

from shared.errors import AccountLocked, InsufficientCredits
from shared.ledger import book
from shared.ledger.verify import verify
from shared.models import Account, Hold
from tests.integration.ledger.test_reserve_many import NOW, account_with


def reservation(account_id: str, amount_mc: int, key: str) -> book.Reservation:
    return book.Reservation(account_id, amount_mc, key, 900, reference=key)


def reserve_each(database, reservations: list[book.Reservation]) -> list:
    with database.unit_of_work() as session:
        return book.reserve_each(session, reservations, now=NOW)


def held(database, account_id: str) -> int:
    with database.unit_of_work() as session:
        return session.get(Account, account_id).held


def test_each_reservation_meets_its_own_fate_and_the_answers_come_in_the_batchs_order(database):
    # given three accounts: 5 credits, 1 credit, and 5 credits but locked; and a hold already made under "replayed"
    rich, poor, locked = account_with(database, 5000), account_with(database, 1000), account_with(database, 5000)
    with database.unit_of_work() as session:
        first = book.reserve(session, rich, 1000, reference="replayed", idempotency_key="replayed", ttl_seconds=900,
                             now=NOW)
        session.get(Account, locked).status = "locked"

    # when one batch asks, in an order that is not the accounts', for 2 credits of each, and replays the first hold
    answers = reserve_each(database, [reservation(locked, 2000, "c"), reservation(rich, 2000, "a"),
                                      reservation(poor, 2000, "b"), reservation(rich, 1000, "replayed")])

    # then the locked and the poor account refuse theirs, the rich one holds its 2 credits, and the replay answers the
    # first hold without holding again
    refused_locked, rich_hold, refused_poor, replay = answers
    assert isinstance(refused_locked, AccountLocked) and isinstance(refused_poor, InsufficientCredits)
    assert (rich_hold.account_id, rich_hold.amount, rich_hold.reference) == (rich, 2000, "a")
    assert replay.id == first.id
    assert (held(database, rich), held(database, poor), held(database, locked)) == (3000, 0, 0)
    with database.unit_of_work() as session:
        assert sorted(session.scalars(select(Hold.idempotency_key))) == ["a", "replayed"]
        assert verify(session) == []


def test_a_reservation_whose_account_has_an_expiry_to_write_first_is_made_after_writing_it(database):
    # given an account with 1 lasting credit and 3 that expired an hour ago, their expiry not written yet
    expiring = account_with(database, 1000, expiring_mc=3000)
    plain = account_with(database, 5000)

    # when a batch asks 2 credits of it and 1 of another account
    answers = reserve_each(database, [reservation(expiring, 2000, "x"), reservation(plain, 1000, "y")])

    # then the expired credits were written off first, so the 2 credits do not fit; the other holds
    assert isinstance(answers[0], InsufficientCredits) and answers[1].amount == 1000
    with database.unit_of_work() as session:
        assert session.get(Account, expiring).balance == 1000
        assert verify(session) == []


@pytest.mark.postgres
def test_a_batch_is_one_statement_on_postgresql(postgres_database, monkeypatch):
    # given four accounts, and every statement psycopg is given recorded
    accounts = [account_with(postgres_database, 5000) for _ in range(4)]
    sent = []
    execute = psycopg.Cursor.execute
    monkeypatch.setattr(psycopg.Cursor, "execute", lambda cursor, query, *args, **kwargs: (
        sent.append(str(query)), execute(cursor, query, *args, **kwargs))[1])

    # when a batch holds a credit of each
    answers = reserve_each(postgres_database, [reservation(account_id, 1000, f"k{n}")
                                               for n, account_id in enumerate(accounts)])

    # then all four are held, by one statement
    assert [answer.account_id for answer in answers] == accounts
    assert sum("ledger_reserve" in statement for statement in sent) == 1
