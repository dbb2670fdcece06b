"""reserve/settle have two implementations (Python on SQLite, PL/pgSQL on PostgreSQL): they must be the same ledger.

Each hypothesis example plays one random sequence of grants, reservations, settlements (below and above
the hold, with carrier fees, by id or by key; in a unit of work or alone in `Database.one_statement()`,
autocommit on PostgreSQL), voids, expiries (written at once, or at spend time after a
clock jump), allocations, flags and replays on both
databases at once. After every step both answered alike (same result or the same error) and both hold
the same accounts, users, lots, holds and entries field by field (ids compared by their order, the
rest as stored), show the same balance, and `ledger verify` is clean on both.
"""

import itertools
import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from shared.errors import DomainError
from shared.ledger import accounts, allocations, book
from shared.ledger.verify import verify
from shared.models import Account, Entry, Hold, Lot, User

pytestmark = pytest.mark.postgres

_examples = itertools.count()
credits = st.integers(min_value=1, max_value=20_000)


class Twin:
    """One database's side of the example: its account, its users, and its ids in creation order."""

    def __init__(self, database):
        self.database = database
        self.account_id = ""
        self.users: list[str] = []
        self.holds: list[int] = []

    def normalize(self, value, lots: dict[int, str] | None = None):
        """Replace this side's ids by names both sides share (account, user index, hold index, lot rank).

        `lots` (from lot_names) must be given inside a unit of work: SQLite allows one writer at a time.
        """
        if isinstance(value, book.HoldView):
            return {**vars(value), "id": f"hold#{self.holds.index(value.id)}", "account_id": "acct",
                    "user_id": self.normalize(value.user_id, lots)}
        if isinstance(value, book.Settlement):
            return {**vars(value), "hold": self.normalize(value.hold, lots)}
        if isinstance(value, list):
            return [self.normalize(item, lots) for item in value]
        if isinstance(value, book.LotView):
            lots = self.lot_names() if lots is None else lots
            return {**vars(value), "id": lots[value.id], "account_id": "acct",
                    "user_id": self.normalize(value.user_id, lots)}
        if isinstance(value, str):
            value = value.replace(self.account_id, "acct")
            for index, user_id in enumerate(self.users):
                value = value.replace(user_id, f"user#{index}")
            value = re.sub(r"\b([a-z]+)_[0-9a-z]{26}\b", r"\1_*", value)  # fresh random ids (allocation keys)
            value = re.sub(r"hold (\d+)", lambda m: f"hold {self.hold_name(int(m.group(1)))}", value)
            lots = self.lot_names() if lots is None else lots
            return re.sub(r"lot[ :](\d+)", lambda m: f"lot {lots.get(int(m.group(1)), m.group(1))}", value)
        return value

    def hold_name(self, hold_id: int) -> str:
        return f"hold#{self.holds.index(hold_id)}" if hold_id in self.holds else f"hold?{hold_id}"

    def lot_names(self) -> dict[int, str]:
        with self.database.unit_of_work() as session:
            ids = session.scalars(select(Lot.id).where(Lot.account_id == self.account_id).order_by(Lot.id))
            return {lot_id: f"lot#{rank}" for rank, lot_id in enumerate(ids)}

    def call(self, operation, alone: bool = False):
        """(result or error, normalized) of `operation(session, twin)` in one unit of work, or `alone` in
        `one_statement()` (then `session` is a Core connection)."""
        try:
            with self.database.one_statement() if alone else self.database.unit_of_work() as session:
                result = operation(session, self)
        except DomainError as error:
            return ("error", type(error).__name__, self.normalize(str(error)),
                    {key: self.normalize(value) for key, value in vars(error).items()})
        if isinstance(result, book.HoldView) and result.id not in self.holds:
            self.holds.append(result.id)
        return ("ok", self.normalize(result))

    def rows(self) -> dict[str, list[dict]]:
        """Everything the ledger stores for the account, ids replaced by shared names, timestamps as UTC."""
        lots = self.lot_names()

        def plain(row, skip=("id", "created_at", "updated_at")):
            values = {}
            for key, value in row._mapping.items():
                if key in skip:
                    continue
                if isinstance(value, datetime):
                    value = (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
                values[key] = self.hold_name(value) if key == "hold_id" and value is not None else self.normalize(
                    value, lots)
            return values

        with self.database.unit_of_work() as session:
            where = self.account_id
            return {
                "account": [plain(row) for row in session.execute(
                    select(Account.__table__).where(Account.id == where))],
                "users": [plain(row) for row in session.execute(
                    select(User.__table__).where(User.account_id == where).order_by(User.name))],
                "lots": [plain(row) for row in session.execute(
                    select(Lot.__table__).where(Lot.account_id == where).order_by(Lot.id))],
                "holds": [{"name": self.hold_name(row.id), **plain(row, skip=("id",))} for row in session.execute(
                    select(Hold.__table__).where(Hold.account_id == where).order_by(Hold.id))],
                "entries": [plain(row) for row in session.execute(
                    select(Entry.__table__).where(Entry.account_id == where).order_by(Entry.id))],
            }


class TwinLedgers(RuleBasedStateMachine):
    """The same steps on SQLite (Python path) and PostgreSQL (function path), compared after each."""

    def __init__(self, sqlite_database, postgres_database):
        super().__init__()
        self.twins = (Twin(sqlite_database), Twin(postgres_database))
        self.example = next(_examples)
        self.keys = itertools.count()
        self.calls = []  # replayable operations
        self.hold_count = 0

    def key(self, what: str) -> str:
        return f"eq{self.example}:{what}:{next(self.keys)}"

    def both(self, operation, alone: bool = False):
        """Run `operation(session, twin)` on both sides; they must answer alike. Returns the normalized answer."""
        sqlite_answer, postgres_answer = (twin.call(operation, alone) for twin in self.twins)
        assert sqlite_answer == postgres_answer
        return sqlite_answer

    def keyed(self, operation, alone: bool = False):
        """both(), and remember an operation that succeeded: replaying it with its key must change nothing."""
        answer = self.both(operation, alone)
        if answer[0] == "ok":
            self.calls.append(operation)
        return answer

    @initialize(policy=st.sampled_from(["prepaid", "overdraft", "postpaid"]))
    def open_account(self, policy):
        self.now = datetime(2021, 1, 1, tzinfo=timezone.utc)
        for twin in self.twins:
            with twin.database.unit_of_work() as session:
                account, _ = accounts.create_account(
                    session, name="twin", timezone="America/Chicago", plan_monthly_credits=100_000,
                    plan_cycle="monthly", plan_rollover="fifo_12m",
                    overdraft=accounts.Overdraft(policy, 5_000 if policy == "overdraft" else 0),
                    low_balance_threshold=0, now=self.now)
                twin.account_id = account.id
                twin.users = [allocations.create_user(session, account.id, name=f"u{n}", email="u@x", phone=None,
                                                      role="user", monthly_credits=10_000, now=self.now).id
                              for n in range(2)]
                twin.users.append(allocations.create_user(session, account.id, name="owner", email="o@x",
                                                          phone=None, role="owner", monthly_credits=None,
                                                          now=self.now).id)
        for kind, amount in (("purchase", 30_000), ("plan", 20_000)):  # so that most holds fit
            self.grant(amount, kind, to_user=False, days=None, priority=None)

    @rule(amount=credits, kind=st.sampled_from(["plan", "rollover", "purchase", "bonus"]), to_user=st.booleans(),
          days=st.sampled_from([None, 1, 20, 400]), priority=st.sampled_from([None, None, 15]))
    def grant(self, amount, kind, to_user, days, priority):
        """Explicit expiries and priorities too, so that the burn order decides which lot burns."""
        key, now = self.key("grant"), self.now
        expires_at = book.DEFAULT_EXPIRY if days is None else now + timedelta(days=days)

        def operation(session, twin):
            return book.grant(session, twin.account_id, amount, kind, granted_at=now, expires_at=expires_at,
                                priority=priority, user_id=twin.users[0] if to_user else None, idempotency_key=key)
        self.keyed(operation)

    @rule(amount=credits, to_user=st.booleans())
    def crossing_lots(self, amount, to_user):
        """Two lots of one priority whose grant order and expiry order disagree: only the burn order decides."""
        self.grant(amount, "bonus", to_user=to_user, days=400, priority=15)
        self.now += timedelta(minutes=1)
        self.grant(amount, "bonus", to_user=to_user, days=20, priority=15)

    @rule(amount=credits, sender=st.sampled_from([None, 0, 1, 2, "stranger"]), alone=st.booleans())
    def reserve(self, amount, sender, alone):
        self.hold(amount, sender, alone)

    def hold(self, amount, sender, alone: bool = False) -> bool:
        """Reserve on both sides; True when both hold."""
        key, now = self.key("hold"), self.now

        def operation(session, twin):
            user_id = "user_missing" if sender == "stranger" else None if sender is None else twin.users[sender]
            return book.reserve(session, twin.account_id, amount, user_id=user_id, reference=f"msg-{key}",
                                  idempotency_key=key, ttl_seconds=3600, now=now)
        if self.keyed(operation, alone)[0] != "ok":
            return False
        self.hold_count += 1
        return True

    @precondition(lambda self: self.hold_count)
    @rule(data=st.data(), ratio=st.sampled_from([0, 0.5, 1, 1.5, 3]), fee=st.sampled_from([0, 0, 7, 500]),
          by_key=st.booleans(), reference=st.sampled_from([None, "", "ref-override"]), alone=st.booleans())
    def settle(self, data, ratio, fee, by_key, reference, alone):
        index = data.draw(st.integers(0, self.hold_count - 1), label="hold")
        key, now = self.key("settle"), self.now

        def operation(session, twin):
            hold_id = twin.holds[index]
            hold = book.get_hold(session, hold_id)
            return book.settle(session, hold.idempotency_key if by_key else hold_id, int(hold.amount * ratio),
                                 carrier_fee_mc=fee, reference=reference, idempotency_key=key, now=now)
        self.keyed(operation, alone)

    @precondition(lambda self: self.hold_count)
    @rule(data=st.data(), ratios=st.lists(st.sampled_from([0, 0.5, 1, 3]), min_size=1, max_size=4),
          fee=st.sampled_from([0, 7]))
    def settle_many(self, data, ratios, fee):
        """Several holds settled in one batch (one statement on PostgreSQL), as a callback batch settles them."""
        indexes = [data.draw(st.integers(0, self.hold_count - 1), label="hold") for _ in ratios]
        keys, now = [self.key("settle") for _ in ratios], self.now

        def operation(session, twin):
            requests = [book.SettleRequest(twin.holds[index], int(book.get_hold(session, twin.holds[index]).amount
                                                                  * ratio), idempotency_key=key, carrier_fee_mc=fee)
                        for index, ratio, key in zip(indexes, ratios, keys)]
            return book.settle_many(session, requests, now=now)
        self.keyed(operation)

    @rule(amount=credits, sender=st.sampled_from([None, 0, 2]), ratio=st.sampled_from([0.5, 1, 2, 4]),
          fee=st.sampled_from([0, 7]), alone=st.booleans())
    def send(self, amount, sender, ratio, fee, alone):
        """A send's usual life: reserve, then settle what it really cost (below or above the hold)."""
        if not self.hold(amount, sender, alone):
            return
        key, now, index = self.key("settle"), self.now, self.hold_count - 1

        def operation(session, twin):
            hold = twin.holds[index]
            return book.settle(session, hold, int(book.get_hold(session, hold).amount * ratio),
                                 carrier_fee_mc=fee, idempotency_key=key, now=now)
        self.keyed(operation, alone)

    @precondition(lambda self: self.hold_count)
    @rule(data=st.data())
    def void(self, data):
        index = data.draw(st.integers(0, self.hold_count - 1), label="hold")
        now = self.now
        operation = lambda session, twin: book.void(session, twin.holds[index], now=now)  # noqa: E731
        self.keyed(operation)

    @rule(hours=st.integers(1, 24 * 45), write_expiries=st.booleans())
    def time_passes(self, hours, write_expiries):
        """Holds past their TTL are swept; lots past their expiry are written off now, or else by whatever
        operation touches the account next (expiry at spend time)."""
        self.now += timedelta(hours=hours)
        now = self.now

        def operation(session, twin):
            expired = [twin.normalize(book.expire(session, hold_id, now=now), {})
                       # the databases are shared by every example: no limit, so none of this one's is left out
                       for hold_id in book.due_holds(session, now, limit=1_000_000) if hold_id in twin.holds]
            return expired, book.expire_lots(session, twin.account_id, now=now) if write_expiries else None
        self.both(operation)

    @rule(minutes=st.integers(1, 120))
    def a_little_time_passes(self, minutes):
        """Small steps, so that holds taken before a lot's expiry are settled or voided after it."""
        self.now += timedelta(minutes=minutes)

    @rule(user=st.sampled_from([0, 1]), total=st.integers(0, 30_000))
    def allocate(self, user, total):
        now = self.now
        self.both(lambda session, twin: (allocations.update_user(session, twin.account_id, twin.users[user], now=now,
                                                                 total_credits=total), None)[1])

    @rule(flag=st.sampled_from(["rollover_protection", "credit_hold"]), value=st.booleans())
    def flag(self, flag, value):
        now = self.now
        self.both(lambda session, twin: (accounts.update_account(session, twin.account_id, now=now,
                                                                 flags={flag: value}), None)[1])

    @precondition(lambda self: self.calls)
    @rule(data=st.data())
    def replay(self, data):
        """Any earlier operation again, with its key: the same answer as both sides give now, nothing changes."""
        before = [twin.rows() for twin in self.twins]
        self.both(data.draw(st.sampled_from(self.calls), label="replayed"))
        after = [twin.rows() for twin in self.twins]
        assert [rows["entries"] for rows in after] == [rows["entries"] for rows in before]

    @invariant()
    def same_ledger_and_clean(self):
        if not self.twins[0].account_id:
            return
        sqlite_rows, postgres_rows = (twin.rows() for twin in self.twins)
        for table in sqlite_rows:
            assert sqlite_rows[table] == postgres_rows[table], table
        for twin in self.twins:
            with twin.database.unit_of_work() as session:
                assert verify(session, twin.account_id) == []
        now = self.now
        self.both(lambda session, twin: _seen(book.balance(session, twin.account_id, now=now)))


def _seen(view: book.BalanceView) -> tuple:
    """What a customer sees of a balance, without ids."""
    return (view.balance, view.held, view.pool_available, view.expiring_end_of_month,
            [(lot.kind, lot.remaining, lot.expires_at) for lot in view.lots],
            sorted((seat.name, seat.balance, seat.held) for seat in view.users))


def test_the_postgres_functions_keep_the_same_ledger_as_the_python_path(sqlite_database, postgres_database):
    run_state_machine_as_test(lambda: TwinLedgers(sqlite_database, postgres_database),
                              settings=settings(max_examples=60, stateful_step_count=30, deadline=None,
                                                suppress_health_check=list(HealthCheck)))
