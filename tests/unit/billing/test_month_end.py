"""Month-end on SQLite and PostgreSQL with a controlled clock: expiry, billing, fees, grants, allocations."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from shared.billing import month_end
from shared.billing.calendar import Period, period_end
from shared.billing.payments import SimulatedGateway
from shared.billing.price_list import default_price_list, parse_price_list
from shared.events.endpoints import create_endpoint
from shared.ids import new_id
from shared.ledger import book
from shared.ledger.expiry import utc
from shared.ledger.verify import verify
from shared.models import Account, AutoRecharge, BillingRun, DunningRun, Entry, PhoneNumber, User, WebhookEvent

CREDIT = 1000


def local(tz: str, *args) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(tz)).astimezone(UTC)


def make_account(database, *, tz="UTC", created=None, monthly=0, cycle="monthly", rollover="none",
                 policy="prepaid", limit=0, card=None, **flags) -> str:
    created = created or local(tz, 2020, 8, 15)
    account_id = new_id("acct")
    with database.unit_of_work() as session:
        session.add(Account(id=account_id, name="Acme", timezone=tz, plan_monthly_credits=monthly * CREDIT,
                            plan_cycle=cycle, plan_rollover=rollover, overdraft_policy=policy, overdraft_limit=limit,
                            status="active", balance=0, held=0, allocated=0, allocated_held=0, created_at=created,
                            **flags))
        if card:
            session.add(AutoRecharge(account_id=account_id, enabled=False, payment_method=card, updated_at=created))
    return account_id


TEST_PRICES = parse_price_list({  # not the bundled list: the bills below come from these numbers
    "currency": "usd", "credit_hold_monthly_fee_cents": 100, "shared_short_code_monthly_fee_cents": 700,
    "plans": [{"name": "small", "min_monthly_credits": "0", "debt_cents_per_credit": "2.5",
               "buckets": [{"credits": "100", "price_cents": 300}]},
              {"name": "large", "min_monthly_credits": "1000", "debt_cents_per_credit": "0.75",
               "buckets": [{"credits": "100", "price_cents": 100}]}],
})


def close(database, account_id, period: str, now: datetime) -> month_end.Summary:
    return month_end.close_accounts(database, [account_id], Period.parse(period), now=now)


def balance(database, account_id, now: datetime) -> book.BalanceView:
    with database.unit_of_work() as session:
        return book.balance(session, account_id, now=now)


def entry_count(database) -> int:
    with database.unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(Entry))


def assert_ledger_consistent(database):
    with database.unit_of_work() as session:
        assert verify(session) == []


def test_rollover_credits_granted_sep_1_are_usable_until_aug_31_and_gone_at_sep_1_local(database):
    tz = "America/Los_Angeles"
    # given a 300-credit rollover plan whose August 2020 month-end granted 300 credits on 2020-09-01
    account_id = make_account(database, tz=tz, monthly=300, rollover="fifo_12m")
    close(database, account_id, "2020-08", local(tz, 2020, 9, 1))
    with database.unit_of_work() as session:  # later months grant nothing, so only that lot is left
        session.get(Account, account_id).next_plan_monthly_credits = 0
    close(database, account_id, "2021-07", local(tz, 2021, 8, 1))

    # then at 2021-08-31 23:59 local the 300 credits are still usable, and expire at the end of the month
    just_before = local(tz, 2021, 8, 31, 23, 59)
    view = balance(database, account_id, just_before)
    assert view.balance == 300 * CREDIT and view.expiring_end_of_month == 300 * CREDIT
    with database.unit_of_work() as session:
        assert book.available_for(session, account_id, now=just_before) == 300 * CREDIT

    # when August 2021 closes at 2021-09-01 00:00 local
    summary = close(database, account_id, "2021-08", local(tz, 2021, 9, 1))

    # then they are gone
    assert summary.expired == 300 * CREDIT
    assert balance(database, account_id, local(tz, 2021, 9, 1)).balance == 0
    assert_ledger_consistent(database)


def test_auckland_closes_august_hours_before_los_angeles(database):
    auckland = make_account(database, tz="Pacific/Auckland", monthly=100, created=datetime(2021, 8, 2, tzinfo=UTC))
    los_angeles = make_account(database, tz="America/Los_Angeles", monthly=100, created=datetime(2021, 8, 2, tzinfo=UTC))
    assert auckland < los_angeles
    instant = datetime(2021, 8, 31, 12, 30, tzinfo=UTC)  # Sep 1 00:30 in Auckland, Aug 31 05:30 in LA

    summary = month_end.run(database, None, Period(2021, 8), now=instant)

    assert (summary.closed, summary.not_ended) == (1, 1)
    assert balance(database, auckland, instant).balance == 100 * CREDIT
    assert balance(database, los_angeles, instant).balance == 0
    with database.unit_of_work() as session:
        assert month_end.due_accounts(session, instant) == []
        later = period_end(Period(2021, 8), "America/Los_Angeles")
        assert month_end.due_accounts(session, later) == [(los_angeles, Period(2021, 8))]


def test_a_period_before_the_account_existed_is_never_closed(database):
    # given an account created in November 2026 with a 1,000-credit plan and a number
    created = local("UTC", 2026, 11, 10)
    account_id = make_account(database, monthly=1000, rollover="fifo_12m", created=created)
    with database.unit_of_work() as session:
        session.add(PhoneNumber(account_id=account_id, phone="+14155550111", type="long_code",
                                monthly_cost=1 * CREDIT, created_at=created))
    entries_before = entry_count(database)

    # when an operator runs month-end for January 2025
    summary = month_end.run(database, None, Period(2025, 1), now=local("UTC", 2026, 11, 28))

    # then nothing was closed, granted or charged, and no close is recorded for it
    assert (summary.closed, summary.not_opened, summary.granted, summary.number_fees) == (0, 1, 0, 0)
    assert entry_count(database) == entries_before
    assert balance(database, account_id, local("UTC", 2026, 11, 28)).balance == 0
    with database.unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(BillingRun)) == 0


def test_a_catch_up_after_a_mistaken_old_period_starts_at_the_month_the_account_was_created(database):
    # given an account created on 2026-10-15 with a 1,000-credit plan, and a month-end run by mistake for 2025-01
    account_id = make_account(database, monthly=1000, created=local("UTC", 2026, 10, 15))
    close(database, account_id, "2025-01", local("UTC", 2026, 10, 20))

    # when month-end runs through October 2026
    summary = close(database, account_id, "2026-10", local("UTC", 2026, 11, 1, 0, 5))

    # then only October closed: one cycle's grant, not one for every month since 2025
    assert (summary.closed, summary.granted) == (1, 1000 * CREDIT)
    with database.unit_of_work() as session:
        periods = session.scalars(select(BillingRun.period).where(BillingRun.account_id == account_id,
                                                                  BillingRun.step == "close")).all()
    assert periods == ["2026-10"]
    assert_ledger_consistent(database)


def test_running_month_end_twice_changes_nothing_the_second_time(database):
    account_id = make_account(database, monthly=100, policy="postpaid", card="pm_card_visa")
    gateway = SimulatedGateway()
    with database.unit_of_work() as session:
        book.charge_pool(session, account_id, 40 * CREDIT, kind="usage", idempotency_key="use", now=local("UTC", 2020, 8, 20))
    now = local("UTC", 2020, 9, 1, 0, 5)

    first = month_end.run(database, gateway, Period(2020, 8), now=now)
    entries_after_first = entry_count(database)
    second = month_end.run(database, gateway, Period(2020, 8), now=now)

    assert (first.closed, first.billed, first.granted) == (1, 40 * CREDIT, 100 * CREDIT)
    assert (second.closed, second.already_closed, second.billed, second.granted) == (0, 1, 0, 0)
    assert entry_count(database) == entries_after_first
    assert len(gateway.charges(account_id)) == 1
    assert balance(database, account_id, now).balance == 100 * CREDIT
    assert_ledger_consistent(database)


def test_postpaid_debt_is_billed_reset_and_charged_once(database):
    account_id = make_account(database, policy="overdraft", limit=100 * CREDIT, card="pm_card_visa")
    gateway = SimulatedGateway()
    with database.unit_of_work() as session:
        book.charge_pool(session, account_id, 12500, kind="usage", idempotency_key="use", now=local("UTC", 2020, 8, 20))

    summary = month_end.run(database, gateway, Period(2020, 8), now=local("UTC", 2020, 9, 1), price_list=TEST_PRICES)

    assert summary.billed == 12500 and summary.payments_succeeded == 1
    assert balance(database, account_id, local("UTC", 2020, 9, 1)).balance == 0
    [charge] = gateway.charges(account_id)
    assert charge.amount_cents == 32  # 12.5 credits at the small tier's 2.5 cents: 31.25, rounded up once
    with database.unit_of_work() as session:
        bill = session.scalar(select(BillingRun).where(BillingRun.step == "bill"))
        assert (bill.status, bill.amount) == ("paid", 12500)


def test_debt_is_billed_at_the_plan_tiers_rate_rounded_up_once_per_bill(database):
    # given a postpaid account on the large tier (1,000 credits a month) that used 1,001 credits past its pool
    account_id = make_account(database, monthly=1000, policy="postpaid", card="pm_card_visa")
    gateway = SimulatedGateway()
    with database.unit_of_work() as session:
        for n in range(7):  # seven uses of 143 credits: 1,001 credits of debt, billed as one amount
            book.charge_pool(session, account_id, 143 * CREDIT, kind="usage", idempotency_key=f"use-{n}",
                             now=local("UTC", 2020, 8, 20))

    # when August closes with the test price list
    month_end.run(database, gateway, Period(2020, 8), now=local("UTC", 2020, 9, 1), price_list=TEST_PRICES)

    # then the bill is 1,001 credits x 0.75 cents = 750.75, rounded up once to 751
    assert [charge.amount_cents for charge in gateway.charges(account_id)] == [751]


def test_the_bundled_credit_hold_plan_costs_a_dollar_a_month():
    assert default_price_list().credit_hold_monthly_fee_cents == 100


def test_the_credit_hold_plan_keeps_credits_usable_for_a_monthly_fee_charged_once(database):
    # given an account on the credit hold plan with 70 accumulated credits and a card on file
    account_id = make_account(database, monthly=100, credit_hold=True, card="pm_card_visa")
    with database.unit_of_work() as session:
        book.grant(session, account_id, 70 * CREDIT, "purchase", granted_at=local("UTC", 2020, 8, 16),
                     idempotency_key="bought")
    gateway = SimulatedGateway()

    # when August closes, twice
    summary = month_end.run(database, gateway, Period(2020, 8), now=local("UTC", 2020, 9, 1), price_list=TEST_PRICES)
    month_end.run(database, gateway, Period(2020, 8), now=local("UTC", 2020, 9, 1, 1), price_list=TEST_PRICES)

    # then no plan credits came, the 70 stay usable, and the price list's $1 fee was charged once
    assert (summary.granted, summary.credit_hold_fee_cents, summary.payments_succeeded) == (0, 100, 1)
    assert balance(database, account_id, local("UTC", 2020, 9, 1, 1)).available == 70 * CREDIT
    assert [charge.amount_cents for charge in gateway.charges(account_id)] == [100]
    assert_ledger_consistent(database)


def test_a_canceled_account_on_the_credit_hold_plan_pays_no_monthly_fee(database):
    # given an account on the credit hold plan with a card on file, canceled in August
    account_id = make_account(database, monthly=100, credit_hold=True, card="pm_card_visa")
    with database.unit_of_work() as session:
        account = session.get(Account, account_id)
        account.status, account.canceled_at = "canceled", local("UTC", 2020, 8, 20)
    gateway = SimulatedGateway()

    # when August closes
    summary = month_end.run(database, gateway, Period(2020, 8), now=local("UTC", 2020, 9, 1), price_list=TEST_PRICES)

    # then the plan ended with the account: no fee, no charge
    assert (summary.closed, summary.credit_hold_fee_cents) == (1, 0)
    assert gateway.charges(account_id) == []


def test_a_declined_bill_is_left_for_dunning_and_not_charged_again(database):
    account_id = make_account(database, policy="postpaid", card="pm_card_chargeDeclined")
    gateway = SimulatedGateway()
    with database.unit_of_work() as session:
        book.charge_pool(session, account_id, 5 * CREDIT, kind="usage", idempotency_key="use", now=local("UTC", 2020, 8, 20))

    summary = month_end.run(database, gateway, Period(2020, 8), now=local("UTC", 2020, 9, 1), price_list=TEST_PRICES)
    month_end.collect_bills(database, gateway, account_id, now=local("UTC", 2020, 9, 2))

    assert summary.payments_declined == 1
    assert len(gateway.charges(account_id)) == 1
    with database.unit_of_work() as session:
        assert session.scalar(select(BillingRun.status).where(BillingRun.step == "bill")) == "declined"
        run = session.scalar(select(DunningRun).where(DunningRun.account_id == account_id))
        assert (run.reason, run.amount_cents, run.status) == ("month_end", 13, "open")  # 5 credits x 2.5 cents


def test_a_transient_gateway_error_leaves_the_bill_pending_for_a_retry(database):
    account_id = make_account(database, policy="postpaid", card="pm_card_chargeDeclinedProcessingError")
    gateway = SimulatedGateway()
    with database.unit_of_work() as session:
        book.charge_pool(session, account_id, 5 * CREDIT, kind="usage", idempotency_key="use", now=local("UTC", 2020, 8, 20))

    summary = month_end.run(database, gateway, Period(2020, 8), now=local("UTC", 2020, 9, 1))

    assert summary.payments_pending == 1
    with database.unit_of_work() as session:
        assert month_end.pending_bills(session) == [(account_id, "2020-08")]
        session.get(AutoRecharge, account_id).payment_method = "pm_card_visa"
    retried = month_end.collect_bills(database, gateway, account_id, now=local("UTC", 2020, 9, 1, 1))
    assert retried.payments_succeeded == 1
    assert len(gateway.charges(account_id, status="succeeded")) == 1


def test_plan_credits_expire_with_their_cycle_unless_rollover_protected(database):
    plain = make_account(database, monthly=100)
    protected = make_account(database, monthly=100, rollover_protection=True)
    for period, now in (("2020-08", local("UTC", 2020, 9, 1)), ("2020-09", local("UTC", 2020, 10, 1))):
        for account_id in (plain, protected):
            close(database, account_id, period, now)

    assert balance(database, plain, local("UTC", 2020, 10, 1)).balance == 100 * CREDIT  # September's expired, October's granted
    assert balance(database, protected, local("UTC", 2020, 10, 1)).balance == 200 * CREDIT
    assert_ledger_consistent(database)


def test_rollover_protection_keeps_twelve_month_rollover_lots_at_month_end(database):
    # given a protected fifo_12m plan whose August 2020 month-end granted 300 rollover credits
    account_id = make_account(database, monthly=300, rollover="fifo_12m", rollover_protection=True)
    close(database, account_id, "2020-08", local("UTC", 2020, 9, 1))
    with database.unit_of_work() as session:
        session.get(Account, account_id).next_plan_monthly_credits = 0

    # when month-end runs through August 2021, when those credits' 12 months are up
    summary = close(database, account_id, "2021-08", local("UTC", 2021, 9, 1))

    # then nothing expired
    assert summary.expired == 0
    assert balance(database, account_id, local("UTC", 2021, 9, 1)).balance == 300 * CREDIT
    assert_ledger_consistent(database)


def test_credit_hold_grants_nothing_and_a_downgrade_takes_effect_at_the_next_cycle(database):
    held = make_account(database, monthly=100, credit_hold=True)
    downgraded = make_account(database, monthly=100)
    with database.unit_of_work() as session:
        session.get(Account, downgraded).next_plan_monthly_credits = 40 * CREDIT

    month_end.run(database, None, Period(2020, 8), now=local("UTC", 2020, 9, 1))

    assert balance(database, held, local("UTC", 2020, 9, 1)).balance == 0
    assert balance(database, downgraded, local("UTC", 2020, 9, 1)).balance == 40 * CREDIT
    with database.unit_of_work() as session:
        account = session.get(Account, downgraded)
        assert (account.plan_monthly_credits, account.next_plan_monthly_credits) == (40 * CREDIT, None)


def test_a_quarterly_plan_grants_three_months_when_its_cycle_ends(database):
    # created in August 2020: cycles Aug-Oct, Nov-Jan, ...
    account_id = make_account(database, monthly=100, cycle="quarterly", created=local("UTC", 2020, 8, 3))

    granted = [close(database, account_id, p, local("UTC", 2021, 2, 1)).granted
               for p in ("2020-08", "2020-09", "2020-10", "2020-11", "2020-12", "2021-01")]

    assert granted == [0, 0, 300 * CREDIT, 0, 0, 300 * CREDIT]
    assert balance(database, account_id, local("UTC", 2021, 2, 1)).balance == 300 * CREDIT  # Nov-Jan's credits expired on Feb 1
    assert_ledger_consistent(database)


def test_phone_numbers_are_charged_and_users_get_their_monthly_credits(database):
    account_id = make_account(database, monthly=100)
    with database.unit_of_work() as session:
        session.add(PhoneNumber(account_id=account_id, phone="+14155550100", type="long_code", monthly_cost=2 * CREDIT))
        for name, monthly in (("ana", 30), ("bo", 10)):
            session.add(User(id=f"user_{name}", account_id=account_id, name=name, email=f"{name}@example.com",
                             role="user", monthly_credits=monthly * CREDIT, balance=0, held=0,
                             created_at=local("UTC", 2020, 8, 1)))

    summary = close(database, account_id, "2020-08", local("UTC", 2020, 9, 1))

    assert (summary.number_fees, summary.granted, summary.allocated) == (2 * CREDIT, 100 * CREDIT, 40 * CREDIT)
    view = balance(database, account_id, local("UTC", 2020, 9, 1))
    assert view.balance == 98 * CREDIT
    assert {u.id: u.balance for u in view.users} == {"user_ana": 30 * CREDIT, "user_bo": 10 * CREDIT}
    assert_ledger_consistent(database)


def test_a_user_below_zero_is_repaid_first_from_its_monthly_credits_and_unlocked(database):
    # given a user given 10 credits a month whose send overran its last 1 credit by 4 (it is locked)
    account_id = make_account(database, monthly=100)
    with database.unit_of_work() as session:
        session.add(User(id="user_ana", account_id=account_id, name="ana", email="ana@example.com", role="user",
                         monthly_credits=10 * CREDIT, balance=0, held=0, created_at=local("UTC", 2020, 8, 1)))
        session.flush()
        book.grant(session, account_id, 1 * CREDIT, "bonus", granted_at=local("UTC", 2020, 8, 15),
                   user_id="user_ana", idempotency_key="ana's credit")
        hold = book.reserve(session, account_id, 1 * CREDIT, user_id="user_ana", idempotency_key="h", ttl_seconds=900,
                            now=local("UTC", 2020, 8, 20))
        book.settle(session, hold.id, 5 * CREDIT, idempotency_key="s", now=local("UTC", 2020, 8, 20))

    # when August closes and September's 100 plan credits are granted
    close(database, account_id, "2020-08", local("UTC", 2020, 9, 1))

    # then her 10 monthly credits repay the 4 she owes first: she holds 6 and may send again
    view = balance(database, account_id, local("UTC", 2020, 9, 1))
    assert {user.id: user.balance for user in view.users} == {"user_ana": 6 * CREDIT}
    assert view.pool_available == 90 * CREDIT
    with database.unit_of_work() as session:
        assert book.available_for(session, account_id, "user_ana", now=local("UTC", 2020, 9, 1)) == 6 * CREDIT
    assert_ledger_consistent(database)


def test_a_users_monthly_credits_never_come_from_what_a_message_in_flight_at_midnight_kept_of_an_expired_lot(
        database):
    # given August's 100 plan credits expiring at midnight, a 10-credit send held at 23:59, a user given 30 a month
    account_id = make_account(database, monthly=100)
    with database.unit_of_work() as session:
        session.add(User(id="user_ana", account_id=account_id, name="ana", email="ana@example.com", role="user",
                         monthly_credits=30 * CREDIT, balance=0, held=0, created_at=local("UTC", 2020, 8, 1)))
        session.flush()
        book.grant(session, account_id, 100 * CREDIT, "plan", granted_at=local("UTC", 2020, 8, 15),
                   expires_at=local("UTC", 2020, 9, 1), idempotency_key="august")
        hold = book.reserve(session, account_id, 10 * CREDIT, idempotency_key="in-flight", ttl_seconds=900,
                            now=local("UTC", 2020, 8, 31, 23, 59))

    # when August closes just after midnight, and the send then settles in full
    close(database, account_id, "2020-08", local("UTC", 2020, 9, 1, 0, 1))
    with database.unit_of_work() as session:
        book.settle(session, hold.id, 10 * CREDIT, idempotency_key="settled", now=local("UTC", 2020, 9, 1, 0, 2))

    # then the user has its 30 credits of September, spendable, and the pool the other 70
    view = balance(database, account_id, local("UTC", 2020, 9, 1, 0, 3))
    assert {user.id: user.balance for user in view.users} == {"user_ana": 30 * CREDIT}
    assert view.balance == 100 * CREDIT
    assert_ledger_consistent(database)


def test_a_missed_month_end_is_caught_up_in_order(database):
    account_id = make_account(database, monthly=100)
    close(database, account_id, "2020-08", local("UTC", 2020, 9, 1))

    # when the scheduler comes back in December and closes November
    summary = close(database, account_id, "2020-11", local("UTC", 2020, 12, 3))

    # then September and October were closed first
    assert summary.closed == 3 and summary.granted == 300 * CREDIT and summary.expired == 300 * CREDIT
    with database.unit_of_work() as session:
        periods = session.scalars(select(BillingRun.period).where(BillingRun.step == "close")
                                  .order_by(BillingRun.id)).all()
    assert periods == ["2020-08", "2020-09", "2020-10", "2020-11"]
    assert balance(database, account_id, local("UTC", 2020, 12, 3)).balance == 100 * CREDIT


def test_a_period_before_the_account_existed_closes_nothing_so_the_next_month_end_closes_one_month(database):
    # given an account created in August 2020
    account_id = make_account(database, monthly=100)

    # when month-end runs for a period centuries before it (the API and the CLI refuse one before 1970: this is
    # the domain's own guard)
    ancient = month_end.close_accounts(database, [account_id], Period(216, 10), now=local("UTC", 2020, 9, 1))

    # then nothing is closed for it, and August's month-end closes August alone, not 1,800 years of months
    assert ancient.closed == 0
    assert close(database, account_id, "2020-08", local("UTC", 2020, 9, 1)).closed == 1
    with database.unit_of_work() as session:
        assert session.scalars(select(BillingRun.period).where(BillingRun.step == "close")).all() == ["2020-08"]


def test_a_dry_run_reports_without_writing(database):
    account_id = make_account(database, monthly=100)

    dry = month_end.run(database, None, Period(2020, 8), now=local("UTC", 2020, 9, 1), dry_run=True)

    assert (dry.closed, dry.granted) == (1, 100 * CREDIT)
    assert balance(database, account_id, local("UTC", 2020, 9, 1)).balance == 0
    assert entry_count(database) == 0
    real = month_end.run(database, None, Period(2020, 8), now=local("UTC", 2020, 9, 1))
    assert real.closed == 1


def test_month_end_over_a_dst_change_and_a_leap_day(database):
    # Berlin's October ends on a day of 25 hours; a grant on 2024-02-29 (leap) expires on Mar 1 local
    tz = "Europe/Berlin"
    account_id = make_account(database, tz=tz, monthly=10, created=local(tz, 2024, 1, 10))
    close(database, account_id, "2024-01", local(tz, 2024, 2, 1))
    assert balance(database, account_id, local(tz, 2024, 2, 29, 23, 59)).expiring_end_of_month == 10 * CREDIT

    summary = close(database, account_id, "2024-02", local(tz, 2024, 3, 1))

    assert summary.expired == 10 * CREDIT
    with database.unit_of_work() as session:
        lot = session.execute(select(book.lots).where(book.lots.c.remaining > 0)).one()
    assert lot.expires_at.replace(tzinfo=UTC) == local(tz, 2024, 4, 1) == datetime(2024, 3, 31, 22, tzinfo=UTC)


def test_a_month_end_a_week_late_changes_no_balance_a_customer_saw(database):
    tz = "America/Chicago"
    # given 300 rollover credits granted 2020-09-01 in Chicago and 50 purchased ones, and no month-end since
    account_id = make_account(database, tz=tz, created=local(tz, 2020, 8, 20))
    with database.unit_of_work() as session:
        book.grant(session, account_id, 300 * CREDIT, "rollover", granted_at=local(tz, 2020, 9, 1),
                   idempotency_key="rollover")
        book.grant(session, account_id, 50 * CREDIT, "purchase", granted_at=local(tz, 2020, 9, 1),
                   idempotency_key="purchase")
    week_late = local(tz, 2021, 9, 8)
    seen = balance(database, account_id, week_late)
    assert (seen.balance, seen.available) == (50 * CREDIT, 50 * CREDIT)

    # when August 2021's month-end runs a week late
    summary = close(database, account_id, "2021-08", week_late)

    # then it wrote the expiry, dated when the lot expired, and the customer sees exactly what they saw
    assert summary.expired == 300 * CREDIT
    after = balance(database, account_id, week_late)
    assert (after.balance, after.available, after.lots) == (seen.balance, seen.available, seen.lots)
    with database.unit_of_work() as session:
        assert [(utc(row.at), row.amount) for row in session.execute(
            select(Entry.at, Entry.amount).where(Entry.account_id == account_id, Entry.kind == "expiry"))] == [
            (local(tz, 2021, 9, 1), -300 * CREDIT)]
    assert_ledger_consistent(database)


def test_a_month_end_that_locks_accounts_tells_it_only_to_the_endpoints_that_take_the_lock_pair(database):
    # given three prepaid accounts whose number fee will take them below zero: one with an endpoint taking
    # account.unlocked (the pair counts as one), one taking only message.delivered, one with no endpoint
    accounts = {}
    for name, events in (("pair", ["account.unlocked"]), ("other", ["message.delivered"]), ("none", None)):
        accounts[name] = make_account(database)
        with database.unit_of_work() as session:
            session.add(PhoneNumber(account_id=accounts[name], phone=f"+1415555{len(accounts):04d}", type="long_code",
                                    monthly_cost=2 * CREDIT))
            if events:
                create_endpoint(session, accounts[name], url="https://hooks.example.com/creditq", events=events,
                                description=None, now=local("UTC", 2020, 8, 20))

    # when month-end closes them together
    month_end.close_accounts(database, list(accounts.values()), Period.parse("2020-08"), now=local("UTC", 2020, 9, 1))

    # then each is locked, and only the account whose endpoint takes the pair has its account.locked
    with database.unit_of_work() as session:
        assert {session.get(Account, account_id).status for account_id in accounts.values()} == {"locked"}
        told = session.execute(select(WebhookEvent.account_id, WebhookEvent.type)).all()
    assert told == [(accounts["pair"], "account.locked")]
