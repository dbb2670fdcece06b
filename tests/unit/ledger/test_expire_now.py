"""book.expire_now: plan and rollover credits written off at once, but for what pending holds still need."""

from datetime import datetime, timezone

from shared.ledger import accounts, allocations, book
from shared.ledger.verify import verify
from shared.models import Entry

UTC = timezone.utc
NOW = datetime(2021, 3, 10, 12, tzinfo=UTC)
LATER = datetime(2021, 3, 12, 9, tzinfo=UTC)
EXPIRING = ("plan", "rollover")


def account_with(database, *lots: tuple[str, int]) -> str:
    with database.unit_of_work() as session:
        account, _ = accounts.create_account(
            session, name="Acme", timezone="UTC", plan_monthly_credits=0, plan_cycle="monthly", plan_rollover="none",
            overdraft=accounts.Overdraft("prepaid"), low_balance_threshold=0, now=NOW)
        for index, (kind, amount) in enumerate(lots):
            book.grant(session, account.id, amount, kind, granted_at=NOW, idempotency_key=f"seed-{account.id}-{index}")
        return account.id


def remaining_by_kind(database, account_id) -> dict[str, int]:
    with database.unit_of_work() as session:
        view = book.balance(session, account_id, now=LATER)
    totals: dict[str, int] = {}
    for lot in view.lots:
        totals[lot.kind] = totals.get(lot.kind, 0) + lot.remaining
    return totals


def expiry_entries(database, account_id) -> list[tuple[int, str]]:
    with database.unit_of_work() as session:
        return [(entry.amount, entry.memo) for entry in session.query(Entry).filter_by(account_id=account_id,
                                                                                       kind="expiry")
                .order_by(Entry.id)]


def test_plan_and_rollover_credits_go_at_once_and_purchased_ones_stay(sqlite_database):
    # given 5 plan, 3 rollover and 10 purchased credits, nothing held
    account_id = account_with(sqlite_database, ("plan", 5_000), ("rollover", 3_000), ("purchase", 10_000))

    # when plan and rollover credits are written off now
    with sqlite_database.unit_of_work() as session:
        written_off = book.expire_now(session, account_id, kinds=EXPIRING, now=LATER)

    # then 8 credits went, one expiry entry per lot, and the purchased 10 stay
    assert written_off == 8_000
    assert remaining_by_kind(sqlite_database, account_id) == {"purchase": 10_000}
    assert [amount for amount, _ in expiry_entries(sqlite_database, account_id)] == [-5_000, -3_000]
    assert all(memo.startswith("expired: ") for _, memo in expiry_entries(sqlite_database, account_id))
    with sqlite_database.unit_of_work() as session:
        assert verify(session) == []


def test_what_a_pending_hold_needs_is_kept_in_the_lots_it_will_burn_and_settles_afterwards(sqlite_database):
    # given 5 plan, 3 rollover, 10 purchased credits and a 6-credit hold of a message already with Twilio
    account_id = account_with(sqlite_database, ("plan", 5_000), ("rollover", 3_000), ("purchase", 10_000))
    with sqlite_database.unit_of_work() as session:
        hold = book.reserve(session, account_id, 6_000, reference="msg_1", idempotency_key="h1", ttl_seconds=600,
                            now=NOW)

    # when plan and rollover credits are written off
    with sqlite_database.unit_of_work() as session:
        written_off = book.expire_now(session, account_id, kinds=EXPIRING, now=LATER)

    # then the hold's 6 credits stay where it will burn them (5 plan, then 1 rollover); 2 rollover credits go
    assert written_off == 2_000
    assert remaining_by_kind(sqlite_database, account_id) == {"plan": 5_000, "rollover": 1_000, "purchase": 10_000}
    assert [amount for amount, _ in expiry_entries(sqlite_database, account_id)] == [-2_000]

    # and the message settles as usual from the kept credits, leaving the purchased ones whole
    with sqlite_database.unit_of_work() as session:
        book.settle(session, hold.id, 6_000, idempotency_key="s1", now=LATER)
    assert remaining_by_kind(sqlite_database, account_id) == {"purchase": 10_000}
    with sqlite_database.unit_of_work() as session:
        assert verify(session) == []


def test_a_users_own_credits_keep_what_its_own_holds_need(sqlite_database):
    # given a pool of 10 plan credits of which a user holds 4, with a 3-credit hold on them
    account_id = account_with(sqlite_database, ("plan", 10_000))
    with sqlite_database.unit_of_work() as session:
        accounts.get_account(session, account_id).plan_monthly_credits = 10_000  # the plan that allows the seat
        session.flush()
        user = allocations.create_user(session, account_id, name="U", email="u@x", phone=None, role="user",
                                       monthly_credits=4_000, now=NOW)
        allocations.update_user(session, account_id, user.id, now=NOW, total_credits=4_000)
        book.reserve(session, account_id, 3_000, user_id=user.id, idempotency_key="u1", ttl_seconds=600, now=NOW)

    # when plan credits are written off
    with sqlite_database.unit_of_work() as session:
        written_off = book.expire_now(session, account_id, kinds=EXPIRING, now=LATER)
        seat = allocations.get_user(session, account_id, user.id)
        account = accounts.get_account(session, account_id)

        # then the pool's 6 go and the user keeps the 3 its hold needs, its 1 spare credit gone
        assert written_off == 7_000
        assert (seat.balance, seat.held) == (3_000, 3_000)
        assert (account.balance, account.allocated) == (3_000, 3_000)
        assert verify(session) == []


def test_writing_off_again_finds_nothing_more(sqlite_database):
    account_id = account_with(sqlite_database, ("plan", 5_000))
    with sqlite_database.unit_of_work() as session:
        assert book.expire_now(session, account_id, kinds=EXPIRING, now=LATER) == 5_000
    with sqlite_database.unit_of_work() as session:
        assert book.expire_now(session, account_id, kinds=EXPIRING, now=LATER) == 0
    assert len(expiry_entries(sqlite_database, account_id)) == 1
