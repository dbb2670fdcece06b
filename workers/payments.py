"""Payment actors: auto-recharge, the dunning tick and its steps (shared.billing.auto_recharge, shared.billing.dunning).

Each actor is safe to replay: a recharge resumes its claimed payment, a step its (run, step) row.
"""

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dramatiq

from shared.billing import auto_recharge as recharges
from shared.billing import dunning
from shared.billing.dunning_texts import DunningTexter
from shared.billing.gateways import gateway_from_settings
from shared.billing.payment_events import reconcile_open
from shared.billing.payments import PaymentGateway
from shared.config import load_settings
from shared.email import EmailSender, email_sender
from shared.messaging.send_cap import SendCap

from . import resources
from .sending import send_message

log = logging.getLogger(__name__)


@dataclass
class Billing:
    """What the payment actors need beyond the shared Resources."""

    payments: PaymentGateway
    email: EmailSender
    public_base_url: str
    payment_sweep_after: timedelta = timedelta(minutes=2)
    send_cap: SendCap = SendCap(young_days=0, per_day=0)  # new accounts' daily cap on customers' dunning texts


_billing: Billing | None = None
_lock = threading.Lock()


def billing() -> Billing:
    global _billing
    with _lock:
        if _billing is None:
            settings = load_settings()
            _billing = Billing(gateway_from_settings(settings), email_sender(settings), settings.public_base_url,
                               timedelta(seconds=settings.payment_sweep_seconds), SendCap.from_settings(settings))
        return _billing


def use_billing(value: Billing | None) -> None:
    """Tests install their own gateway and outbox (None forgets them)."""
    global _billing
    with _lock:
        _billing = value


@dramatiq.actor(queue_name="payments", max_retries=20)
def auto_recharge(account_id: str) -> None:
    """Enqueued by the settle path when the account fell under its threshold; a no-op when not due."""
    payment = recharges.run(resources.current().database, billing().payments, account_id, now=datetime.now(UTC))
    if payment is not None:
        log.info("auto-recharge %s for %s: %s", payment.id, account_id, payment.status)


@dramatiq.actor(queue_name="payments", max_retries=20)
def run_dunning_step(run_id: str, step: int) -> None:
    b = billing()
    r = resources.current()
    outcome = dunning.run_step(r.database, gateway=b.payments, email_sender=b.email,
                               texter=DunningTexter(r.gateway_for),
                               pipeline=dunning.Pipeline(r.rate_card, b.send_cap, send_message.send),
                               public_base_url=b.public_base_url,
                               run_id=run_id, step=step, now=datetime.now(UTC))
    log.info("dunning %s step %d: %s", run_id, step, outcome)


@dramatiq.actor(queue_name="payments", max_retries=20)
def retry_dunning_payment(run_id: str) -> None:
    """After the card was updated: pay the run's amount now instead of waiting for its next step."""
    dunning.retry_payment(resources.current().database, billing().payments, run_id, now=datetime.now(UTC))


@dramatiq.actor(queue_name="default", max_retries=0, time_limit=300_000)
def dunning_tick() -> None:
    """Every minute: due dunning steps, due or stale recharges, and payments left open (a lost webhook, a crash
    between "PaymentIntent created" and "recorded") reconciled with the gateway. Not retried: the next tick does
    the same work."""
    database = resources.current().database
    now = datetime.now(UTC)
    with database.unit_of_work() as session:
        steps = dunning.due_steps(session, now=now)
        accounts = recharges.accounts_due(session, now=now)
    for run_id, step in steps:
        run_dunning_step.send(run_id, step)
    for account_id in accounts:
        auto_recharge.send(account_id)
    reconcile_open(database, billing().payments, now=now, older_than=billing().payment_sweep_after)
