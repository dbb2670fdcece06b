"""No runaway recharge: 200 settlements racing on a real PostgreSQL make exactly one payment."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.billing import auto_recharge
from shared.billing.payments import SimulatedGateway
from tests.unit.billing.test_auto_recharge import NOW, account_with_recharge, spend, state
from tests.unit.billing.test_purchases import balance_of

pytestmark = pytest.mark.postgres


class SlowGateway(SimulatedGateway):
    """A card network that takes a while: the recharge stays in flight while the other settlements arrive."""

    def charge(self, **kwargs):
        time.sleep(0.3)
        return super().charge(**kwargs)


def test_200_concurrent_settlements_trigger_exactly_one_recharge(postgres_database):
    # given an account that recharges 100 credits when under 100, at 90 available
    database = postgres_database
    account_id = account_with_recharge(database)
    gateway = SlowGateway()
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

    # then one payment was made and charged once, and nothing is left in flight
    assert len(payments) == 1 and payments[0].status == "succeeded"
    assert len(gateway.charges(account_id)) == 1
    assert balance_of(database, account_id) == 150_000 - 60_000 - 200 * 100 + 100_000
    assert not state(database, account_id).in_flight
