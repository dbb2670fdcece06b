"""Every money rule at once: random interleavings of grants, holds, settlements, clock jumps across expiries,
month-end runs (on time, late, twice, for periods before the account existed), plan changes, rollover
protection, cancel, reactivate and mark-spam, on SQLite (the Python path) and on PostgreSQL (the ledger functions).

After every step:
- reads never count an expired lot: what a balance shows equals what it shows once every due expiry is
  written, and an expired lot is only still visible for the pending holds that took it before it expired;
- never-expiring credits (purchased, bonus) never expire, and only the spam flag takes them back (what pending
  holds took from them stays for those holds, and lapses as they end);
- `ledger verify` is clean;
and a month-end, however late, leaves every credit a customer could already see exactly as it was.
"""

import itertools
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

from shared.billing import month_end
from shared.billing.calendar import Period, last_ended
from shared.errors import AccountLocked, Conflict, InsufficientCredits, ValidationFailed
from shared.ledger import accounts, allocations, book
from shared.ledger.expiry import NEVER_EXPIRING_KINDS, can_lapse
from shared.ledger.verify import verify
from shared.lifecycle import account_life
from shared.models import Account, Entry, Lot

CREDIT = 1_000
TZ = "America/Chicago"
_examples = itertools.count()


class _Rollback(Exception):
    pass


class MoneyRules(RuleBasedStateMachine):
    def __init__(self, database):
        super().__init__()
        self.database = database
        self.example = next(_examples)
        self.keys = itertools.count()
        self.holds: list[int] = []
        self.spam = False

    def key(self, what: str) -> str:
        return f"rules{self.example}:{what}:{next(self.keys)}"

    @initialize(policy=st.sampled_from(["prepaid", "overdraft", "postpaid"]), monthly=st.sampled_from([0, 100, 300]),
                rollover=st.sampled_from(["none", "fifo_12m"]), day=st.integers(0, 27), hour=st.integers(0, 23))
    def open_account(self, policy, monthly, rollover, day, hour):
        self.now = datetime(2021, 1, 1, tzinfo=timezone.utc) + timedelta(days=day, hours=hour)
        self.created = self.now
        with self.database.unit_of_work() as session:
            account, _ = accounts.create_account(
                session, name="rules", timezone=TZ, plan_monthly_credits=monthly * CREDIT, plan_cycle="monthly",
                plan_rollover=rollover,
                overdraft=accounts.Overdraft(policy, 50 * CREDIT if policy == "overdraft" else 0),
                low_balance_threshold=0, now=self.now)
            self.account_id = account.id
            self.agent = allocations.create_user(session, account.id, name="agent", email="a@example.com", phone=None,
                                                 role="user", monthly_credits=0, now=self.now).id

    def view(self, session=None) -> book.BalanceView:
        if session is not None:
            return book.balance(session, self.account_id, now=self.now)
        with self.database.unit_of_work() as session:
            return book.balance(session, self.account_id, now=self.now)

    # --- credits in ------------------------------------------------------------------------------------

    @rule(credits=st.integers(1, 400), kind=st.sampled_from(["plan", "rollover", "purchase", "bonus"]))
    def grant(self, credits, kind):
        with self.database.unit_of_work() as session:
            try:
                book.grant(session, self.account_id, credits * CREDIT, kind, granted_at=self.now,
                           idempotency_key=self.key("grant"))
            except Exception as error:  # plan credits while on a credit hold: the only refusal
                assert type(error).__name__ == "Conflict" and kind == "plan"

    @rule(credits=st.integers(0, 200))
    def allocate_to_the_agent(self, credits):
        try:
            with self.database.unit_of_work() as session:
                allocations.update_user(session, self.account_id, self.agent, now=self.now,
                                        total_credits=credits * CREDIT)
        except ValidationFailed:
            pass

    # --- sends -----------------------------------------------------------------------------------------

    @rule(credits=st.integers(1, 120), by_agent=st.booleans())
    def reserve(self, credits, by_agent):
        try:
            with self.database.unit_of_work() as session:
                hold = book.reserve(session, self.account_id, credits * CREDIT,
                                    user_id=self.agent if by_agent else None, idempotency_key=self.key("hold"),
                                    ttl_seconds=6 * 3600, now=self.now)
        except (InsufficientCredits, AccountLocked):
            return
        self.holds.append(hold.id)

    @precondition(lambda self: self.holds)
    @rule(data=st.data(), ratio=st.sampled_from([0, 0.5, 1, 2]))
    def settle(self, data, ratio):
        hold_id = self.holds.pop(data.draw(st.integers(0, len(self.holds) - 1), label="hold"))
        with self.database.unit_of_work() as session:
            hold = book.get_hold(session, hold_id)
            if hold.status in ("pending", "expired"):
                book.settle(session, hold_id, int(hold.amount * ratio), idempotency_key=self.key("settle"),
                            now=self.now)

    @precondition(lambda self: self.holds)
    @rule(data=st.data())
    def void(self, data):
        hold_id = self.holds.pop(data.draw(st.integers(0, len(self.holds) - 1), label="hold"))
        with self.database.unit_of_work() as session:
            book.void(session, hold_id, now=self.now)

    # --- the clock -------------------------------------------------------------------------------------

    @rule(minutes=st.integers(1, 180))
    def minutes_pass(self, minutes):
        self.now += timedelta(minutes=minutes)

    @rule(days=st.integers(1, 75), sweep=st.booleans())
    def days_pass(self, days, sweep):
        """Nothing else happens: no month-end, unless a rule runs one. The sweeper may run."""
        self.now += timedelta(days=days)
        if sweep:
            with self.database.unit_of_work() as session:
                for hold_id in book.due_holds(session, self.now, limit=1_000_000):
                    if hold_id in self.holds:
                        book.expire(session, hold_id, now=self.now)

    # --- the calendar ----------------------------------------------------------------------------------

    @rule(which=st.sampled_from(["last_ended", "last_ended", "before_creation", "older"]), twice=st.booleans())
    def month_end(self, which, twice):
        """Whenever it runs (on time or weeks late), it changes no credit a customer could already see."""
        through = {"last_ended": last_ended(self.now, TZ), "before_creation": Period(2020, 6),
                   "older": last_ended(self.now, TZ).shift(-2)}[which]
        before = self.view()
        summary = month_end.close_accounts(self.database, [self.account_id], through, now=self.now)
        assert summary.failed == []
        if twice:
            again = month_end.close_accounts(self.database, [self.account_id], through, now=self.now)
            assert again.closed == 0
        after = self.view()
        seen_after = {lot.id: lot.remaining for lot in after.lots}
        for lot in before.lots:
            assert seen_after.get(lot.id) == lot.remaining, (lot, which)
        assert after.held == before.held
        assert [(seat.balance, seat.held) for seat in after.users] == [(seat.balance, seat.held)
                                                                       for seat in before.users]

    @rule(monthly=st.sampled_from([0, 50, 300]))
    def change_plan(self, monthly):
        with self.database.unit_of_work() as session:
            accounts.update_account(session, self.account_id, now=self.now, plan_monthly_credits=monthly * CREDIT)

    @rule(value=st.booleans())
    def rollover_protection(self, value):
        with self.database.unit_of_work() as session:
            accounts.update_account(session, self.account_id, now=self.now, flags={"rollover_protection": value})

    @rule()
    def cancel(self):
        """Plan and rollover credits expire at once (but for what pending holds took); never-expiring ones stay."""
        before = self.never_expiring()
        with self.database.unit_of_work() as session:
            account_life.cancel_account(session, self.account_id, actor="operator", now=self.now)
        assert self.never_expiring() == before
        assert self.view().status == "canceled"

    @rule(monthly=st.sampled_from([0, 100]))
    def reactivate(self, monthly):
        """Only a canceled account reopens; its first cycle comes with the plan (which repays the pool's debt first,
        as every grant does), never-expiring credits are back."""
        before, start = self.never_expiring(), self.view()
        try:
            with self.database.unit_of_work() as session:
                account_life.reactivate_account(session, self.account_id, plan_monthly_credits=monthly * CREDIT,
                                                plan_cycle="monthly", plan_rollover="none", actor="operator",
                                                now=self.now)
        except Conflict:
            assert self.view().status != "canceled"
            return
        view = self.view()
        assert view.status == "active"
        # a spam account keeps only what pending holds took, and the new plan credits burn before it
        assert self.never_expiring() <= before if self.spam else self.never_expiring() == before
        debt = max(0, sum(seat.balance for seat in start.users) - start.balance)
        if monthly * CREDIT > debt and not self.spam:
            assert any(lot.kind == "plan" and lot.granted_at == self.now and lot.remaining == monthly * CREDIT - debt
                       for lot in view.lots)

    @precondition(lambda self: not self.spam)
    @rule()
    def mark_spam(self):
        with self.database.unit_of_work() as session:
            account_life.mark_spam(session, self.account_id, actor="operator", now=self.now)
        assert self.never_expiring() <= self.view().held  # only what pending holds took stays, for them
        self.spam = True

    def never_expiring(self) -> int:
        """What is left of the purchased and bonus credits (pool and users)."""
        return sum(lot.remaining for lot in self.view().lots if lot.kind in NEVER_EXPIRING_KINDS)

    # --- the rules, after every step ---------------------------------------------------------------------

    @invariant()
    def reads_never_count_an_expired_lot(self):
        if not hasattr(self, "account_id"):
            return
        try:
            with self.database.unit_of_work() as session:
                seen = self.view(session)
                book.expire_lots(session, self.account_id, now=self.now)
                assert _customer_view(self.view(session)) == _customer_view(seen)
                protected = session.get(Account, self.account_id).rollover_protection
                pool_held = seen.held - sum(seat.held for seat in seen.users)
                held_by = {None: pool_held, **{seat.id: seat.held for seat in seen.users}}
                expired_seen: dict[str | None, int] = {}
                for lot in seen.lots:
                    if can_lapse(lot, protected) and lot.expires_at <= self.now:
                        expired_seen[lot.user_id] = expired_seen.get(lot.user_id, 0) + lot.remaining
                for wallet, amount in expired_seen.items():
                    assert amount <= held_by[wallet], "an expired lot is visible beyond what pending holds took"
                raise _Rollback
        except _Rollback:
            pass

    @invariant()
    def never_expiring_credits_survive_everything_but_spam(self):
        if not hasattr(self, "account_id"):
            return
        with self.database.unit_of_work() as session:
            memos = session.scalars(select(Entry.memo).where(Entry.account_id == self.account_id,
                                                             Entry.kind == "expiry"))
            lapsed = {int(memo.rsplit(" ", 1)[1]) for memo in memos}
            kinds = set(session.scalars(select(Lot.kind).where(Lot.id.in_(lapsed)))) if lapsed else set()
            assert not kinds & set(NEVER_EXPIRING_KINDS) or self.spam  # spam: what holds kept lapses as they end
            taken_back = session.scalar(select(Entry.id).where(Entry.account_id == self.account_id,
                                                               Entry.kind == "adjustment").limit(1))
            assert taken_back is None or self.spam

    @invariant()
    def ledger_is_consistent(self):
        if hasattr(self, "account_id"):
            with self.database.unit_of_work() as session:
                assert verify(session, self.account_id) == []


def _customer_view(view: book.BalanceView) -> tuple:
    return (view.balance, view.held, view.pool_available, view.expiring_end_of_month,
            sorted((lot.id, lot.remaining) for lot in view.lots), [(seat.balance, seat.held) for seat in view.users])


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_every_money_rule_holds_whatever_happens_in_between(backend, request):
    database = request.getfixturevalue(f"{backend}_database")
    run_state_machine_as_test(lambda: MoneyRules(database),
                              settings=settings(max_examples=40, stateful_step_count=30, deadline=None,
                                                suppress_health_check=list(HealthCheck)))
