"""The shared short code's monthly fee: from the price list, on the month-end bill, charged once."""

from datetime import UTC, datetime

from sqlalchemy import select

from shared.billing import month_end
from shared.billing.calendar import Period
from shared.billing.payments import SimulatedGateway
from shared.billing.price_list import default_price_list, parse_price_list
from shared.ledger import book
from shared.models import Account, AutoRecharge, BillingRun

CREATED = datetime(2020, 8, 15, tzinfo=UTC)
CLOSED = datetime(2020, 9, 1, tzinfo=UTC)
# Not the bundled list: the bills below come from these numbers.
TEST_PRICES = parse_price_list({
    "currency": "usd", "credit_hold_monthly_fee_cents": 100, "shared_short_code_monthly_fee_cents": 700,
    "plans": [{"name": "small", "min_monthly_credits": "0", "debt_cents_per_credit": "2.5",
               "buckets": [{"credits": "100", "price_cents": 300}]}],
})


def make_account(database, account_id: str, *, keyword: str | None, policy: str = "prepaid") -> str:
    with database.unit_of_work() as session:
        session.add(Account(id=account_id, name=account_id, timezone="UTC", overdraft_policy=policy,
                            shared_short_code="12345" if keyword else None, shared_short_code_keyword=keyword,
                            created_at=CREATED))
        session.add(AutoRecharge(account_id=account_id, enabled=False, payment_method="pm_card_visa",
                                 updated_at=CREATED))
    return account_id


def bills(database) -> dict[str, int]:
    with database.unit_of_work() as session:
        return {run.account_id: run.amount_cents
                for run in session.scalars(select(BillingRun).where(BillingRun.step == "bill"))}


def test_the_bundled_shared_short_code_costs_five_dollars_a_month():
    assert default_price_list().shared_short_code_monthly_fee_cents == 500


def test_a_keyword_on_the_shared_short_code_lands_its_monthly_fee_on_the_bill_once(database):
    # given an account with a keyword on the shared short code and one without, both with a card on file
    make_account(database, "acct_keyword", keyword="ACME")
    make_account(database, "acct_plain", keyword=None)
    gateway = SimulatedGateway()

    # when August closes with the test price list, twice
    summary = month_end.run(database, gateway, Period(2020, 8), now=CLOSED, price_list=TEST_PRICES)
    month_end.run(database, gateway, Period(2020, 8), now=CLOSED, price_list=TEST_PRICES)

    # then the keyword's account was billed the list's 700 cents, once; the other account owes nothing
    assert (summary.shared_short_code_fee_cents, summary.payments_succeeded) == (700, 1)
    assert bills(database) == {"acct_keyword": 700}
    assert [charge.amount_cents for charge in gateway.charges("acct_keyword")] == [700]
    assert gateway.charges("acct_plain") == []


def test_the_fee_adds_to_the_debt_billed_on_the_same_bill(database):
    # given a postpaid account with a keyword that used 10 credits past zero (2.5 cents a credit)
    make_account(database, "acct_keyword", keyword="ACME", policy="postpaid")
    with database.unit_of_work() as session:
        book.charge_pool(session, "acct_keyword", 10_000, kind="usage", idempotency_key="use",
                         now=datetime(2020, 8, 20, tzinfo=UTC))
    gateway = SimulatedGateway()

    # when August closes
    month_end.run(database, gateway, Period(2020, 8), now=CLOSED, price_list=TEST_PRICES)

    # then one bill holds both: 25 cents of debt and the 700-cent fee
    assert [charge.amount_cents for charge in gateway.charges("acct_keyword")] == [725]


def test_a_canceled_account_keeping_its_keyword_pays_no_fee(database):
    # given an account canceled in August that still holds its keyword (inbound texts naming it still land there)
    make_account(database, "acct_canceled", keyword="ACME")
    with database.unit_of_work() as session:
        account = session.get(Account, "acct_canceled")
        account.status, account.canceled_at = "canceled", datetime(2020, 8, 20, tzinfo=UTC)
    gateway = SimulatedGateway()

    # when August closes
    summary = month_end.run(database, gateway, Period(2020, 8), now=CLOSED, price_list=TEST_PRICES)

    # then, as for its released numbers, no monthly fee: nothing billed, nothing charged to its card
    assert summary.shared_short_code_fee_cents == 0
    assert bills(database) == {}
    assert gateway.charges("acct_canceled") == []
