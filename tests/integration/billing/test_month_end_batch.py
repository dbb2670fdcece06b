"""Set-wise month-end on PostgreSQL over a few hundred varied accounts: the ledger verifies clean, a replay
changes nothing, and closing them in one batch gives exactly what closing each alone gives."""

import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from shared.billing import month_end
from shared.billing.calendar import Period
from shared.db import Database
from shared.ledger import book
from shared.ledger.verify import verify
from shared.models import Account, AutoRecharge, Base, BillingRun, Entry, Lot, PhoneNumber, User

pytestmark = pytest.mark.postgres

CREDIT = 1000
ZONES = ("UTC", "Pacific/Auckland", "America/Los_Angeles", "Europe/Berlin")
THROUGH = Period(2021, 3)
NOW = datetime(2021, 4, 2, 12, tzinfo=UTC)  # March has ended in every zone


def populate(database: Database, accounts: int, seed: int = 7) -> list[str]:
    """Accounts of every kind, built through the ledger: plans and cycles, rollover, debt, locks, credit holds,
    plan changes, users' allocations and their own lots, pending holds, phone numbers, missed month-ends."""
    rng = random.Random(seed)
    ids = []
    for i in range(accounts):
        account_id = f"acct_{i:05d}"
        ids.append(account_id)
        created = datetime(2020, rng.choice((6, 11, 12)), rng.randint(1, 28), tzinfo=UTC) if i % 7 == 0 \
            else datetime(2021, 3, rng.randint(1, 28), tzinfo=UTC)
        policy = rng.choice(("prepaid", "prepaid", "overdraft", "postpaid"))
        with database.unit_of_work() as session:
            session.add(Account(
                id=account_id, name="Acme", timezone=rng.choice(ZONES),
                plan_monthly_credits=rng.choice((0, 100, 300, 1000)) * CREDIT,
                plan_cycle=rng.choice(("monthly", "monthly", "quarterly", "yearly")),
                plan_rollover=rng.choice(("none", "fifo_12m")), overdraft_policy=policy,
                overdraft_limit=50 * CREDIT if policy == "overdraft" else 0, status="active",
                credit_hold=rng.random() < 0.05, rollover_protection=rng.random() < 0.1,
                next_plan_monthly_credits=rng.choice((None,) * 8 + (0, 50 * CREDIT)),
                balance=0, held=0, allocated=0, allocated_held=0, created_at=created))
            if policy != "prepaid" and rng.random() < 0.8:
                session.add(AutoRecharge(account_id=account_id, enabled=False, updated_at=created,
                                         payment_method=rng.choice(("pm_card_visa", "pm_card_chargeDeclined"))))
            for n in range(rng.choice((0, 0, 1, 2))):
                session.add(PhoneNumber(account_id=account_id, phone=f"+1415{i:05d}{n:02d}", type="long_code",
                                        monthly_cost=rng.choice((500, 1000, 2500))))
            seats = [f"user_{i:05d}_{n}" for n in range(rng.choice((0, 0, 1, 3)))]
            for seat in seats:
                session.add(User(id=seat, account_id=account_id, name="Seat", email=f"{seat}@example.com",
                                 role=rng.choice(("user", "user", "admin")), balance=0, held=0, created_at=created,
                                 monthly_credits=rng.choice((None, 20 * CREDIT, 400 * CREDIT)),
                                 deleted_at=created + timedelta(days=1) if rng.random() < 0.1 else None))
        with database.unit_of_work() as session:
            at = created + timedelta(hours=1)
            for n in range(rng.choice((0, 1, 2, 3))):
                kind = rng.choice(("plan", "rollover", "purchase", "bonus"))
                expires = rng.choice((book.DEFAULT_EXPIRY, created + timedelta(days=rng.randint(2, 200))))
                if kind == "plan" and session.get(Account, account_id).credit_hold:
                    kind = "bonus"
                book.grant(session, account_id, rng.choice((10, 75, 200)) * CREDIT, kind, granted_at=at,
                             expires_at=expires, idempotency_key=f"setup:{account_id}:grant:{n}")
            own = [seat for seat in seats if session.get(User, seat).role == "user" and session.get(User, seat).deleted_at is None]
            pool = book.balance(session, account_id, now=at).pool_available
            if own and pool >= 10 * CREDIT:
                book.transfer(session, account_id, own[0], 10 * CREDIT, now=at,
                                idempotency_key=f"setup:{account_id}:transfer")
            if rng.random() < 0.4:  # usage beyond the balance: debt, and a lock for prepaid accounts
                book.charge_pool(session, account_id, rng.choice((5, 150, 400)) * CREDIT, kind="usage",
                                   idempotency_key=f"setup:{account_id}:usage", now=at)
            if rng.random() < 0.2 and session.get(Account, account_id).status == "active":
                try:
                    book.reserve(session, account_id, 3 * CREDIT, idempotency_key=f"setup:{account_id}:hold",
                                   ttl_seconds=10**8, now=at)
                except book.InsufficientCredits:
                    pass
    return ids


def snapshot(database: Database) -> dict:
    """Everything month-end writes, without generated ids (two databases number their rows differently)."""
    with database.unit_of_work() as session:
        lot_keys = dict(session.execute(select(Lot.id, Lot.idempotency_key)).all())

        def renumbered(key):  # "...:lot:<id>" (an expiry's "...:lot:<id>:<left>") names the lot by its key instead
            head, _, tail = key.rpartition(":lot:")
            lot_id, _, left = tail.partition(":")
            if not (head and lot_id.isdigit()):
                return key
            return f"{head}:lot:{renumbered(lot_keys.get(int(lot_id)) or '')}" + (f":{left}" if left else "")

        def unnumbered(memo):
            if memo and " lot " in memo:
                head, lot_id = memo.rsplit(" lot ", 1)
                return f"{head} lot {renumbered(lot_keys.get(int(lot_id)) or '')}"
            return memo

        return {
            "accounts": session.execute(select(Account.id, Account.balance, Account.allocated, Account.held,
                                               Account.status, Account.plan_monthly_credits,
                                               Account.next_plan_monthly_credits).order_by(Account.id)).all(),
            "users": session.execute(select(User.id, User.balance).order_by(User.id)).all(),
            "entries": [(e.account_id, e.user_id, e.kind, e.amount, e.balance_after, e.reference, e.at,
                         renumbered(e.idempotency_key), unnumbered(e.memo))
                        for e in session.scalars(select(Entry).order_by(Entry.account_id, Entry.id))],
            "lots": sorted(((renumbered(lot.idempotency_key), lot.account_id, lot.user_id, lot.kind, lot.amount,
                             lot.remaining, lot.priority, lot.granted_at, lot.expires_at, lot.reference)
                            for lot in session.scalars(select(Lot).where(Lot.idempotency_key.like("month-end:%")))),
                           key=lambda lot: lot[0]),
            "runs": session.execute(select(BillingRun.account_id, BillingRun.period, BillingRun.step,
                                           BillingRun.status, BillingRun.amount, BillingRun.amount_cents)
                                    .order_by(BillingRun.account_id, BillingRun.period, BillingRun.step)).all(),
        }


@pytest.fixture
def two_databases(postgres_server):
    databases = [Database(postgres_server.create_database(f"month_end_{name}_{random.randrange(10**9)}"))
                 for name in ("batch", "single")]
    for database in databases:
        Base.metadata.create_all(database.engine)
    yield databases
    for database in databases:
        database.dispose()


def test_a_batch_of_varied_accounts_verifies_clean_and_a_replay_changes_nothing(two_databases):
    batched, _ = two_databases
    # given a few hundred accounts of every kind, some with months of missed month-ends
    ids = populate(batched, 300)
    with batched.unit_of_work() as session:
        assert verify(session) == []

    # when month-end closes them in batches, one transaction each
    summary = month_end.run(batched, None, THROUGH, now=NOW, batch_size=120)

    # then every account is closed through March, nothing failed, and the ledger's invariants hold
    assert summary.failed == [] and summary.accounts == len(ids)
    assert summary.closed > len(ids)  # the missed months were caught up
    with batched.unit_of_work() as session:
        assert verify(session) == []
        assert session.scalar(select(func.count()).select_from(BillingRun).where(
            BillingRun.step == "close", BillingRun.period == str(THROUGH))) == len(ids)
    before = snapshot(batched)

    # and a replay of the whole run changes nothing
    again = month_end.run(batched, None, THROUGH, now=NOW, batch_size=120)
    assert (again.closed, again.already_closed, again.failed) == (0, len(ids), [])
    assert snapshot(batched) == before


def test_closing_accounts_together_or_one_by_one_gives_the_same_ledger(two_databases):
    batched, single = two_databases
    # given the same accounts in two databases
    ids = populate(batched, 150, seed=11)
    populate(single, 150, seed=11)

    # when one closes them in one batch and the other one account per transaction
    month_end.close_accounts(batched, ids, THROUGH, now=NOW)
    for account_id in ids:
        month_end.close_accounts(single, [account_id], THROUGH, now=NOW)

    # then balances, users, entries (with their running balances and keys), lots and runs are the same
    assert snapshot(batched) == snapshot(single)
    for database in (batched, single):
        with database.unit_of_work() as session:
            assert verify(session) == []
