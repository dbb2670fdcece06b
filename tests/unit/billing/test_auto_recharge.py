"""Auto-recharge: one recharge per need, backoff after a decline, disabled after repeated declines."""

from datetime import UTC, datetime, timedelta

import pytest

from shared.billing import auto_recharge
from shared.billing.payments import SimulatedGateway
from shared.errors import ValidationFailed
from shared.ledger import book
from shared.models import DunningRun
from tests.unit.billing.test_purchases import CrashAfterCharge, balance_of, new_account

NOW = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)


def spend(database, account_id, credits_mc, key):
    """A send that settled: the settlement that may leave the account under its threshold."""
    with database.unit_of_work() as session:
        hold = book.reserve(session, account_id, credits_mc, idempotency_key=f"hold:{key}", ttl_seconds=900, now=NOW)
        book.settle(session, hold.id, credits_mc, idempotency_key=f"settle:{key}", now=NOW)


def account_with_recharge(database, payment_method="pm_card_visa", *, credits=150_000) -> str:
    """150 credits, recharge 100 when under 100 — then 60 credits spent: 90 available, under the threshold."""
    account_id = new_account(database)
    with database.unit_of_work() as session:
        book.grant(session, account_id, credits, "bonus", granted_at=NOW, idempotency_key=f"seed:{account_id}")
        auto_recharge.configure(session, account_id, enabled=True, threshold_mc=100_000, credits_mc=100_000,
                                payment_method=payment_method, now=NOW)
    spend(database, account_id, 60_000, "first")
    return account_id


def state(database, account_id) -> auto_recharge.AutoRechargeView:
    with database.unit_of_work() as session:
        return auto_recharge.get_settings(session, account_id)


def test_falling_under_the_threshold_buys_the_bucket_once(database):
    account_id = account_with_recharge(database)
    gateway = SimulatedGateway()
    with database.unit_of_work() as session:
        assert auto_recharge.due(session, account_id, now=NOW)

    first = auto_recharge.run(database, gateway, account_id, now=NOW)
    second = auto_recharge.run(database, gateway, account_id, now=NOW)

    assert first.status == "succeeded" and second is None  # back above the threshold: nothing more to do
    assert balance_of(database, account_id) == 190_000
    assert len(gateway.charges(account_id)) == 1
    assert state(database, account_id).consecutive_failures == 0


def test_a_claim_in_flight_blocks_a_second_recharge(database):
    account_id = account_with_recharge(database)
    with database.unit_of_work() as session:
        payment = auto_recharge.claim(session, account_id, now=NOW)
    with database.unit_of_work() as session:
        assert payment is not None
        assert auto_recharge.claim(session, account_id, now=NOW) is None
        assert not auto_recharge.due(session, account_id, now=NOW)


def test_a_recharge_whose_worker_died_is_resumed_without_a_second_charge(database):
    account_id = account_with_recharge(database)
    gateway = CrashAfterCharge()
    with pytest.raises(ConnectionError):
        auto_recharge.run(database, gateway, account_id, now=NOW)
    assert state(database, account_id).in_flight

    later = NOW + auto_recharge.STALE_CLAIM_AFTER
    with database.unit_of_work() as session:
        assert auto_recharge.accounts_due(session, now=later) == [account_id]
    payment = auto_recharge.run(database, gateway, account_id, now=later)

    assert payment.status == "succeeded"
    assert len(gateway.charges(account_id)) == 1
    assert balance_of(database, account_id) == 190_000
    assert not state(database, account_id).in_flight


def test_a_decline_backs_off_and_starts_dunning(database):
    account_id = account_with_recharge(database, "pm_card_chargeDeclinedInsufficientFunds")
    gateway = SimulatedGateway()

    payment = auto_recharge.run(database, gateway, account_id, now=NOW)

    assert payment.status == "declined"
    view = state(database, account_id)
    assert view.consecutive_failures == 1 and view.next_attempt_at == NOW + auto_recharge.BACKOFF[0]
    assert auto_recharge.run(database, gateway, account_id, now=NOW + timedelta(minutes=5)) is None  # backing off
    with database.unit_of_work() as session:
        [run] = session.query(DunningRun).all()
    assert (run.reason, run.status, run.amount_cents, run.credits) == ("auto_recharge", "open", 500, 100_000)


def test_repeated_declines_disable_it_until_the_payment_method_is_updated(database):
    account_id = account_with_recharge(database, "pm_card_chargeDeclined")
    gateway = SimulatedGateway()
    at = NOW
    for _ in range(auto_recharge.MAX_FAILURES):
        assert auto_recharge.run(database, gateway, account_id, now=at).status == "declined"
        at += timedelta(days=1)

    view = state(database, account_id)
    assert view.disabled_reason and "update the payment method" in view.disabled_reason
    assert auto_recharge.run(database, gateway, account_id, now=at) is None
    with database.unit_of_work() as session:
        assert session.query(DunningRun).count() == 1  # one run for the unpaid recharge, not one per decline

    with database.unit_of_work() as session:
        auto_recharge.configure(session, account_id, enabled=True, threshold_mc=100_000, credits_mc=100_000,
                                payment_method="pm_card_visa", now=at)
    assert state(database, account_id).disabled_reason is None
    assert auto_recharge.run(database, gateway, account_id, now=at).status == "succeeded"


def test_a_gateway_error_retries_soon_without_counting_as_a_decline(database):
    account_id = account_with_recharge(database, "pm_card_chargeDeclinedProcessingError")
    payment = auto_recharge.run(database, SimulatedGateway(), account_id, now=NOW)
    view = state(database, account_id)
    assert payment.status == "error"
    assert view.consecutive_failures == 0 and view.next_attempt_at == NOW + auto_recharge.ERROR_RETRY_AFTER


def test_the_recharge_bucket_must_be_on_the_price_list(database):
    account_id = new_account(database)
    with database.unit_of_work() as session, pytest.raises(ValidationFailed):
        auto_recharge.configure(session, account_id, enabled=True, threshold_mc=1, credits_mc=7_000,
                                payment_method="pm_card_visa", now=NOW)


def test_enabling_needs_a_payment_method(database):
    account_id = new_account(database)
    with database.unit_of_work() as session, pytest.raises(ValidationFailed):
        auto_recharge.configure(session, account_id, enabled=True, threshold_mc=1, credits_mc=100_000,
                                payment_method=None, now=NOW)


def test_a_card_number_is_never_saved_as_the_card_on_file(database):
    # given an account with a token on file
    account_id = account_with_recharge(database)

    # when the settings are saved with a card number instead
    with pytest.raises(ValidationFailed) as refused, database.unit_of_work() as session:
        auto_recharge.configure(session, account_id, enabled=True, threshold_mc=100_000, credits_mc=100_000,
                                payment_method="4000 0566 5566 5556", now=NOW)

    # then nothing changed and the refusal does not repeat it
    assert "5556" not in str(refused.value) and set(refused.value.errors) == {"payment_method"}
    assert state(database, account_id).payment_method == "pm_card_visa"
