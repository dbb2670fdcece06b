"""Billing calendar actors: month-end per batch of accounts, the tick that finds what is due, notices.

The scheduler only enqueues `billing_tick` (every minute) and `send_low_balance_notices` (every 5 minutes:
the notices settlements wrote and could not send); the tick reads the database for month-ends that are
due and not closed, so a month-end missed while everything was down runs when the tick next runs
(catch-up comes from the database, not APScheduler).
"""

import logging
from datetime import UTC, datetime

import dramatiq

from shared.billing import low_balance, month_end
from shared.billing.calendar import Period

from . import resources
from .payments import billing

log = logging.getLogger(__name__)

BATCH = 1000  # accounts per month-end message: one transaction each, closed set-wise


@dramatiq.actor(queue_name="billing", max_retries=10, time_limit=600_000)
def run_month_end(period: str, account_ids: list[str]) -> None:
    """Close `period` (and any earlier period missed) for each account, then collect their bills."""
    database, now = resources.current().database, datetime.now(UTC)
    summary = month_end.close_accounts(database, account_ids, Period.parse(period), now=now)
    if summary.billed or summary.credit_hold_fee_cents:
        month_end.collect_batch(database, billing().payments, account_ids, now=now)
    if summary.failed:
        log.error("month-end %s failed for %s", period, ", ".join(summary.failed))
        raise RuntimeError(f"month-end {period} failed for {len(summary.failed)} accounts")  # retried


@dramatiq.actor(queue_name="billing", max_retries=3, time_limit=600_000)
def collect_bill(account_id: str) -> None:
    month_end.collect_bills(resources.current().database, billing().payments, account_id, now=datetime.now(UTC))


@dramatiq.actor(queue_name="billing", max_retries=0, time_limit=600_000)
def billing_tick() -> None:
    """Enqueue month-end for every account whose last local month is not closed, in batches; and pending bills.

    Not retried: the next tick does the same. A batch enqueued twice is harmless (closing is idempotent).
    """
    database, now = resources.current().database, datetime.now(UTC)
    after, enqueued = "", 0
    while True:
        with database.unit_of_work() as session:
            due = month_end.due_accounts(session, now, after=after, limit=BATCH)
        if not due:
            break
        by_period: dict[Period, list[str]] = {}
        for account_id, period in due:
            by_period.setdefault(period, []).append(account_id)
        for period, account_ids in by_period.items():
            run_month_end.send(str(period), account_ids)
            enqueued += len(account_ids)
        after = due[-1][0]
    with database.unit_of_work() as session:
        bills = month_end.pending_bills(session)
    for account_id in sorted({account_id for account_id, _ in bills}):
        collect_bill.send(account_id)
    if enqueued or bills:
        log.info("billing tick: month-end for %d accounts, %d pending bills", enqueued, len(bills))


@dramatiq.actor(queue_name="billing", max_retries=3, time_limit=600_000)
def send_low_balance_notices(message_id: str | None = None) -> None:
    """The notices `message_id`'s settlement wrote, enqueued after its commit; without one, the catch-up of every
    notice not sent yet (a failed send, a killed worker)."""
    sent = low_balance.send_pending(resources.current().database, billing().email, now=datetime.now(UTC),
                                    message_id=message_id)
    if sent and message_id is None:
        log.info("low-balance notices: %d sent by the catch-up", sent)
