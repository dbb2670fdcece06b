"""Random workloads against the ledger on SQLite; every invariant of `ledger verify` holds after each step."""

import itertools
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, multiple, rule

from shared.db import Database
from shared.errors import AccountLocked, Conflict, InsufficientCredits, ValidationFailed
from shared.ledger import accounts, allocations, book
from shared.ledger.verify import verify
from shared.models import Base

_DIRECTORY = tempfile.TemporaryDirectory(prefix="creditq-stateful-")
DATABASE = Database(f"sqlite:///{Path(_DIRECTORY.name) / 'ledger.db'}")
Base.metadata.create_all(DATABASE.engine)
_keys = itertools.count()
credits = st.integers(min_value=1, max_value=20_000)


class LedgerMachine(RuleBasedStateMachine):
    holds = Bundle("holds")
    replays = Bundle("replays")

    @initialize(policy=st.sampled_from(["prepaid", "overdraft", "postpaid"]))
    def open_account(self, policy):
        self.now = datetime(2021, 1, 1, tzinfo=timezone.utc)
        with DATABASE.unit_of_work() as session:
            account, _ = accounts.create_account(
                session, name="stateful", timezone="America/Chicago", plan_monthly_credits=100_000,
                plan_cycle="monthly", plan_rollover="fifo_12m",
                overdraft=accounts.Overdraft(policy, 5_000 if policy == "overdraft" else 0), low_balance_threshold=0,
                now=self.now)
            self.account_id = account.id
            self.policy = policy
            self.users = [allocations.create_user(session, account.id, name=f"u{n}", email="u@x", phone=None,
                                                  role="user", monthly_credits=10_000, now=self.now).id
                          for n in range(2)]
            self.users.append(allocations.create_user(session, account.id, name="owner", email="o@x", phone=None,
                                                      role="owner", monthly_credits=None, now=self.now).id)

    def key(self, prefix: str) -> str:
        return f"{self.account_id}:{prefix}:{next(_keys)}"

    def snapshot(self) -> tuple:
        with DATABASE.unit_of_work() as session:
            view = book.balance(session, self.account_id, now=self.now)
            return view.balance, view.held, view.status, [(u.id, u.balance, u.held) for u in view.users]

    @rule(target=replays, amount=credits, kind=st.sampled_from(["plan", "rollover", "purchase", "bonus"]),
          to_user=st.booleans())
    def grant(self, amount, kind, to_user):
        key = self.key("grant")
        user_id = self.users[0] if to_user else None
        call = lambda session: book.grant(session, self.account_id, amount, kind, granted_at=self.now,  # noqa: E731
                                            user_id=user_id, idempotency_key=key)
        try:
            with DATABASE.unit_of_work() as session:
                call(session)
        except Conflict:  # plan credits while the account has a credit hold: nothing to replay
            assert kind == "plan"
            return multiple()
        return call

    @rule(target=holds, amount=credits, sender=st.sampled_from([None, 0, 1, 2]))
    def reserve(self, amount, sender):
        key = self.key("hold")
        user_id = None if sender is None else self.users[sender]
        try:
            with DATABASE.unit_of_work() as session:
                hold = book.reserve(session, self.account_id, amount, user_id=user_id, idempotency_key=key,
                                      ttl_seconds=3600, now=self.now)
        except (InsufficientCredits, AccountLocked):
            return multiple()
        # Replaying the reservation returns the same hold and changes nothing.
        before = self.snapshot()
        with DATABASE.unit_of_work() as session:
            again = book.reserve(session, self.account_id, amount, user_id=user_id, idempotency_key=key,
                                   ttl_seconds=3600, now=self.now)
        assert again == hold and self.snapshot() == before
        return hold

    @rule(target=replays, hold=consumes(holds), ratio=st.sampled_from([0, 0.5, 1, 1.5, 3]),
          fee=st.integers(0, 500))
    def settle(self, hold, ratio, fee):
        key = self.key("settle")
        actual = int(hold.amount * ratio)
        call = lambda session: book.settle(session, hold.id, actual, carrier_fee_mc=fee,  # noqa: E731
                                             idempotency_key=key, now=self.now)
        with DATABASE.unit_of_work() as session:
            result = call(session)
        if self.policy == "prepaid" and result.status == "locked":
            with DATABASE.unit_of_work() as session:
                account = book.lock_account(session, self.account_id)
                assert account.balance - account.allocated < 0
        return call

    @rule(hold=consumes(holds))
    def void(self, hold):
        with DATABASE.unit_of_work() as session:
            first = book.void(session, hold.id, now=self.now)  # an expired hold stays expired
            assert first.status in ("voided", "expired")
            assert book.void(session, hold.id, now=self.now) == first

    @rule(hours=st.integers(1, 24 * 45))
    def time_passes(self, hours):
        """Holds past their TTL are swept and lots past their expiry written off."""
        self.now += timedelta(hours=hours)
        with DATABASE.unit_of_work() as session:
            for hold_id in book.due_holds(session, self.now):
                book.expire(session, hold_id, now=self.now)
            book.expire_lots(session, self.account_id, now=self.now)

    @rule(user=st.sampled_from([0, 1]), total=st.integers(0, 30_000))
    def allocate(self, user, total):
        try:
            with DATABASE.unit_of_work() as session:
                allocations.update_user(session, self.account_id, self.users[user], now=self.now, total_credits=total)
        except ValidationFailed:
            pass

    @rule(flag=st.sampled_from(["rollover_protection", "credit_hold"]), value=st.booleans())
    def flag(self, flag, value):
        with DATABASE.unit_of_work() as session:
            accounts.update_account(session, self.account_id, now=self.now, flags={flag: value})

    @rule(call=replays)
    def replay(self, call):
        before = self.snapshot()
        with DATABASE.unit_of_work() as session:
            call(session)
        assert self.snapshot() == before

    @invariant()
    def ledger_is_consistent(self):
        if hasattr(self, "account_id"):
            with DATABASE.unit_of_work() as session:
                assert verify(session, self.account_id) == []


LedgerMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestLedgerStateful = LedgerMachine.TestCase
