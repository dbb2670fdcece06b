"""Settling a message Twilio has finished with: charge what it really cost, or nothing if it never left.

Charged statuses (sent, delivered, undelivered) cost Twilio's actual segment count times the rate,
plus the carrier fee as its own entry (a toll-free resend: TOLL_FREE_RESEND by its body's length, no
fee); `failed` voids the hold. One settlement per message: the ledger key is the message id, so a
replayed job or a duplicate callback charges nothing more. The message keeps the rate card version it was
priced with (rate_card_version). A settlement that takes a prepaid account
below zero locks it; its waiting messages are parked.
"""

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from shared.db import any_of_parameter, run
from shared.events.outbox import account_locked
from shared.ledger import book
from shared.messaging.estimate import Charge, charge_for, sender_type_of_message
from shared.messaging.parking import park_account
from shared.messaging.phone_numbers import country_of
from shared.messaging.rates import TOLL_FREE_RESEND, RateCard
from shared.models import Account, AutoRecharge, Hold, Message

CHARGED_STATUSES = ("sent", "delivered", "undelivered")
VOIDED_STATUSES = ("failed", "canceled")

messages, holds, accounts = Message.__table__, Hold.__table__, Account.__table__
# Prebuilt: it runs for every batch of messages. Locks them (in id order) and reads with each the hold's state and
# the sender's type.
_SETTLING = (
    select(messages.c.id, messages.c.account_id, messages.c.status, messages.c.error_code, messages.c.hold_id,
           messages.c.credits_charged,
           messages.c.reprocessed_from, messages.c.body, messages.c.to, messages.c.media_urls,
           func.coalesce(messages.c.twilio_segments, messages.c.segments).label("segments"),
           holds.c.status.label("hold_status"),
           sender_type_of_message(messages, accounts).label("sender_type"),
           accounts.c.low_balance_threshold,
           select(AutoRecharge.account_id).where(AutoRecharge.account_id == messages.c.account_id)
           .exists().label("has_auto_recharge"))
    .join(accounts, accounts.c.id == messages.c.account_id)
    .outerjoin(holds, holds.c.id == messages.c.hold_id)
    .order_by(messages.c.id)
    .with_for_update(of=messages)
)


@functools.cache
def _settling(dialect: str):
    """_SETTLING for a list of message ids, prebuilt per dialect."""
    return _SETTLING.where(any_of_parameter(messages.c.id, "message_ids", dialect))


_CHARGED = update(messages).where(messages.c.id == bindparam("message_id")).values(
    credits_charged=bindparam("charged"), rate_card_version=bindparam("rate_card_version"), updated_at=bindparam("now"))
# _CHARGED as book.settle's `then` on PostgreSQL, with the hold it settled (`settled`): one round trip for both.
_CHARGED_WITH_SETTLEMENT = ("UPDATE messages SET credits_charged = settled.settled_amount, rate_card_version = %s,"
                            " updated_at = %s FROM settled WHERE messages.id = %s")


@dataclass(frozen=True)
class Settled:
    """What settling a message did (`outcome`: settled, voided or skipped), with what its followers need to know
    of the message, so they need not read it again."""

    outcome: str
    message_id: str
    account_id: str | None = None
    status: str | None = None
    error_code: int | None = None
    low_balance_threshold: int = 0  # 0: the account wants no low-credit notices
    has_auto_recharge: bool = False  # whether the account ever set up auto-recharge


def settle_message(session: Session, message_id: str, *, rate_card: RateCard, now: datetime) -> Settled:
    """Settle or void the message's hold according to its status."""
    return next(settle_messages(session, [message_id], rate_card=rate_card, now=now))


def settle_messages(session: Session, message_ids: list[str], *, rate_card: RateCard,
                    now: datetime) -> Iterator[Settled]:
    """Settle or void each message's hold according to its status, in the order given, one at each step of the
    iteration (what the caller does with one answer comes before the next settlement); the messages are read in
    one statement first."""
    connection = session.connection()
    found = {row.id: row for row in run(connection, _settling(connection.dialect.name),
                                        {"message_ids": list(message_ids)}).all()}
    for message_id in message_ids:
        message = found.get(message_id)
        if message is None:
            yield Settled("skipped", message_id)
            continue
        outcome = _settle(session, connection, message, rate_card, now)
        yield Settled(outcome, message_id, message.account_id, message.status, message.error_code,
                      message.low_balance_threshold, message.has_auto_recharge)


def _settle(session: Session, connection, message, rate_card: RateCard, now: datetime) -> str:
    message_id = message.id
    if message.hold_id is None or message.credits_charged is not None:
        return "skipped"
    if message.status in VOIDED_STATUSES:
        if message.hold_status == "pending":
            book.void(session, message.hold_id, now=now)
        run(connection, _CHARGED, {"message_id": message_id, "charged": 0, "rate_card_version": None, "now": now})
        return "voided"
    if message.status not in CHARGED_STATUSES:
        return "skipped"
    version = None  # a toll-free resend is priced by the product, not by the card
    if message.reprocessed_from is not None:
        charge = Charge(TOLL_FREE_RESEND.price(message.body), carrier_fee=0)
    else:
        version = rate_card.version
        charge = charge_for(message.segments, country=country_of(message.to), sender_type=message.sender_type,
                            channel="mms" if message.media_urls else "sms", rate_card=rate_card)
    # on PostgreSQL the settlement writes the message's charge in its own round trip
    charging = ((_CHARGED_WITH_SETTLEMENT, (version, now, message_id)) if connection.dialect.name == "postgresql"
                else None)
    settlement = book.settle(session, message.hold_id, charge.usage, carrier_fee_mc=charge.carrier_fee,
                             reference=message_id, idempotency_key=f"message:{message_id}:usage", now=now,
                             then=charging)
    if charging is None or settlement.replayed:
        run(connection, _CHARGED, {"message_id": message_id, "charged": settlement.charged,
                                   "rate_card_version": version, "now": now})
    if settlement.status == "locked":
        park_account(session, message.account_id, book.LOCK_REASON, now=now)
        account_locked(session, message.account_id, reason=book.LOCK_REASON, balance=settlement.balance, now=now)
    return "settled"
