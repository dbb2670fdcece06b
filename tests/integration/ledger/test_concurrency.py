"""64 threads in 2 processes race to reserve 1 credit each from a prepaid account holding 10, in units of work
or alone (`Database.one_statement()`: autocommit on PostgreSQL)."""

import multiprocessing
import threading
from datetime import datetime, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from shared.db import Database
from shared.errors import InsufficientCredits
from shared.ledger import accounts, book
from shared.ledger.verify import verify

PROCESSES = 2
THREADS_PER_PROCESS = 32
NOW = datetime(2021, 3, 1, tzinfo=timezone.utc)


def prepaid_account(database: Database, name: str, credits_mc: int) -> str:
    """A prepaid account holding `credits_mc`, with no overdraft."""
    with database.unit_of_work() as session:
        account, _ = accounts.create_account(
            session, name=name, timezone="UTC", plan_monthly_credits=0, plan_cycle="monthly", plan_rollover="none",
            overdraft=accounts.Overdraft("prepaid"), low_balance_threshold=0, now=NOW)
        book.grant(session, account.id, credits_mc, "purchase", granted_at=NOW, idempotency_key="seed")
    return account.id


def race(url: str, account_id: str, process_index: int, start, alone: bool) -> list[tuple[str, int]]:
    """One process: its own engine, THREADS_PER_PROCESS threads released together; (outcome, available) each."""
    database = Database(url, pool_size=THREADS_PER_PROCESS)
    outcomes: list[tuple[str, int]] = []
    ready = threading.Barrier(THREADS_PER_PROCESS)

    def reserve_one(thread_index: int) -> None:
        ready.wait()
        try:
            key = f"race-{process_index}-{thread_index}"
            if alone:
                with database.one_statement() as connection:
                    book.reserve(connection, account_id, 1_000, idempotency_key=key, ttl_seconds=600, now=NOW)
                with database.read_only() as session:
                    available = book.balance(session, account_id, now=NOW).available
            else:
                with database.unit_of_work() as session:
                    book.reserve(session, account_id, 1_000, idempotency_key=key, ttl_seconds=600, now=NOW)
                    available = book.balance(session, account_id, now=NOW).available
            outcomes.append(("held", available))
        except InsufficientCredits as refused:
            outcomes.append(("refused", refused.available))

    start.wait()
    threads = [threading.Thread(target=reserve_one, args=(index,)) for index in range(THREADS_PER_PROCESS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    database.dispose()
    return outcomes


@pytest.mark.parametrize("alone", [False, True], ids=["unit_of_work", "one_statement"])
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_exactly_ten_of_sixty_four_concurrent_reservations_succeed(backend, alone, request):
    # Given a prepaid account holding 10 credits
    database = request.getfixturevalue(f"{backend}_database")
    account_id = prepaid_account(database, "Race", 10_000)

    # When 64 threads spread over 2 processes each reserve 1 credit at once (in a unit of work, or alone)
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        start = manager.Barrier(PROCESSES)
        with context.Pool(PROCESSES) as pool:
            results = pool.starmap(race, [(database.url, account_id, index, start, alone)
                                          for index in range(PROCESSES)])
    outcomes = [outcome for result in results for outcome in result]

    # Then exactly 10 holds exist, available never went negative and the ledger verifies clean
    assert len(outcomes) == PROCESSES * THREADS_PER_PROCESS
    assert sum(1 for kind, _ in outcomes if kind == "held") == 10
    assert min(available for _, available in outcomes) >= 0
    with database.unit_of_work() as session:
        view = book.balance(session, account_id, now=NOW)
        assert (view.balance, view.held, view.available) == (10_000, 10_000, 0)
        assert verify(session) == []


@pytest.mark.postgres
def test_a_replayed_reservation_answers_its_first_hold_without_waiting_for_the_account_row(postgres_database):
    # Given an account with a hold, and another transaction holding the account's row (a settlement, a month-end)
    database = postgres_database
    account_id = prepaid_account(database, "Busy", 10_000)
    with database.one_statement() as connection:
        first = book.reserve(connection, account_id, 1_000, idempotency_key="msg-1", ttl_seconds=600, now=NOW)
    with database.engine.connect() as other:
        other.exec_driver_sql("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (account_id,))

        # When the same reservation is replayed meanwhile, and a new one is made, each giving up after 2 s of waiting
        with database.one_statement() as connection:
            connection.exec_driver_sql("SET lock_timeout = '2s'")
            replay = book.reserve(connection, account_id, 1_000, idempotency_key="msg-1", ttl_seconds=600, now=NOW)
            with pytest.raises(OperationalError, match="lock timeout"):
                book.reserve(connection, account_id, 1_000, idempotency_key="msg-2", ttl_seconds=600, now=NOW)
            connection.exec_driver_sql("RESET lock_timeout")
        other.rollback()

    # Then the replay answered the first hold at once, and the new one, which must lock the row, waited for it
    assert replay == first
    # and once the row is free, the new one holds, with nothing left behind by the try that gave up
    with database.one_statement() as connection:
        second = book.reserve(connection, account_id, 1_000, idempotency_key="msg-2", ttl_seconds=600, now=NOW)
    with database.unit_of_work() as session:
        assert book.balance(session, account_id, now=NOW).held == 2_000
        assert session.scalar(text("SELECT count(*) FROM holds")) == 2 and second.id != first.id
        assert verify(session) == []


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_refused_reservation_leaves_no_hold_and_its_key_holds_once_there_is_room(backend, request):
    # Given an account holding 1 credit
    database = request.getfixturevalue(f"{backend}_database")
    account_id = prepaid_account(database, "Short", 1_000)

    # When a reservation of 2 credits is refused
    with pytest.raises(InsufficientCredits), database.unit_of_work() as session:
        book.reserve(session, account_id, 2_000, idempotency_key="msg-1", ttl_seconds=600, now=NOW)

    # Then no hold is left of it
    with database.unit_of_work() as session:
        assert session.scalar(text("SELECT count(*) FROM holds")) == 0
        book.grant(session, account_id, 1_000, "purchase", granted_at=NOW, idempotency_key="top-up")
    # and once there is room, the same key holds
    with database.one_statement() as connection:
        hold = book.reserve(connection, account_id, 2_000, idempotency_key="msg-1", ttl_seconds=600, now=NOW)
    with database.unit_of_work() as session:
        assert (hold.amount, book.balance(session, account_id, now=NOW).available) == (2_000, 0)
        assert verify(session) == []
