"""No runaway recharge: 200 settlements racing on a real PostgreSQL make exactly one PaymentIntent at the Stripe
stand-in, through the official client."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.billing import auto_recharge
from tests.stripe_sim_fixtures import background_loop, stripe_stand_in  # noqa: F401  (fixtures)
from tests.unit.billing.test_auto_recharge import NOW, account_with_recharge, spend, state
from tests.unit.billing.test_purchases import balance_of

pytestmark = pytest.mark.postgres


def test_200_concurrent_settlements_trigger_exactly_one_recharge(postgres_database, stripe_stand_in):
    # given an account that recharges 100 credits when under 100, at 90 available, and a Stripe that takes a
    # while to answer (the recharge stays in flight while the other settlements arrive)
    database = postgres_database
    account_id = account_with_recharge(database)
    gateway = stripe_stand_in.gateway()
    stripe_stand_in.configure(response_delay_ms=300)
    start = threading.Barrier(200)

    def settle_then_trigger(i: int):
        # what the settle actor does: settle, check, and (here inline) run the auto_recharge actor
        start.wait()
        spend(database, account_id, 100, f"race-{i}")
        with database.unit_of_work() as session:
            due = auto_recharge.due(session, account_id, now=NOW)
        return auto_recharge.run(database, gateway, account_id, now=NOW) if due else None

    # when 200 settlements land at once
    with ThreadPoolExecutor(max_workers=200) as pool:
        payments = [p for p in pool.map(settle_then_trigger, range(200)) if p is not None]

    # then one payment was made, one PaymentIntent charged once, and nothing is left in flight
    assert len(payments) == 1 and payments[0].status == "succeeded"
    [intent] = stripe_stand_in.payment_intents()
    assert intent["object"]["status"] == "succeeded" and intent["object"]["metadata"]["payment_id"] == payments[0].id
    assert balance_of(database, account_id) == 150_000 - 60_000 - 200 * 100 + 100_000
    assert not state(database, account_id).in_flight
