"""book.reserve_each on SQLite and PostgreSQL: a batch of holds on many accounts, each meeting its own fate, in one
round trip on PostgreSQL, the accounts' rows locked in their ids' order."""

from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import select

from shared.errors import AccountLocked, InsufficientCredits
from shared.ledger import book
from shared.ledger.expiry import utc
from shared.ledger.verify import verify
from shared.models import Account, Entry, Hold
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


def test_references_and_keys_with_any_characters_go_through_a_batch_exactly(database):
    # given two accounts, references and keys with quotes, backslashes, braces, commas and non-ASCII letters, and a
    # time with microseconds
    accounts = [account_with(database, 5000) for _ in range(2)]
    texts = ['say "hi", {x}', "C:\\path\\n \\u0041 ü 漢字 🎉"]
    now = NOW + timedelta(microseconds=123_457)

    # when a batch holds a credit on each and another batch settles both
    with database.unit_of_work() as session:
        holds = book.reserve_each(session, [book.Reservation(account_id, 1000, f"{text}:hold", 61, reference=text)
                                            for account_id, text in zip(accounts, texts)], now=now)
        book.settle_many(session, [book.SettleRequest(hold.id, 700, idempotency_key=f"{text}:usage",
                                                      reference=f"{text}:sent")
                                   for hold, text in zip(holds, texts)], now=now)

    # then each hold and its usage entry keep their texts as given, the hold's expiry to the microsecond
    with database.unit_of_work() as session:
        for account_id, text in zip(accounts, texts):
            hold = session.scalars(select(Hold).where(Hold.account_id == account_id)).one()
            assert (hold.reference, hold.idempotency_key) == (text, f"{text}:hold")
            assert utc(hold.expires_at) == now + timedelta(seconds=61)
            entry = session.scalars(select(Entry).where(Entry.account_id == account_id, Entry.kind == "usage")).one()
            assert (entry.reference, entry.idempotency_key, entry.amount) == (f"{text}:sent", f"{text}:usage", -700)
