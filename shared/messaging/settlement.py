"""Settling a message Twilio has finished with: charge what it really cost, or nothing if it never left.

Charged statuses (sent, delivered, undelivered) cost Twilio's actual segment count times the rate,
plus the carrier fee as its own entry (a toll-free resend: TOLL_FREE_RESEND by its body's length, no
fee); `failed` voids the hold. One settlement per message: the ledger key is the message id, so a
replayed job or a duplicate callback charges nothing more. A settlement that takes a prepaid account
below zero locks it; its waiting messages are parked.
"""

from datetime import datetime

from sqlalchemy.orm import Session

from shared.events.outbox import account_locked
from shared.ledger import book
from shared.messaging.estimate import Charge, charge_for, sender_type_of
from shared.messaging.parking import park_account
from shared.messaging.phone_numbers import country_of
from shared.messaging.rates import TOLL_FREE_RESEND, RateCard
from shared.models import Hold, Message

CHARGED_STATUSES = ("sent", "delivered", "undelivered")
VOIDED_STATUSES = ("failed", "canceled")


def settle_message(session: Session, message_id: str, *, rate_card: RateCard, now: datetime) -> str:
    """Settle or void the message's hold according to its status; returns what happened."""
    message = session.get(Message, message_id, with_for_update=True)
    if message is None or message.hold_id is None or message.credits_charged is not None:
        return "skipped"
    if message.status in VOIDED_STATUSES:
        hold = session.get(Hold, message.hold_id)
        if hold.status == "pending":
            book.void(session, hold.id, now=now)
        message.credits_charged = 0
        message.updated_at = now
        return "voided"
    if message.status not in CHARGED_STATUSES:
        return "skipped"
    if message.reprocessed_from is not None:
        charge = Charge(TOLL_FREE_RESEND.price(message.body), carrier_fee=0)
    else:
        charge = charge_for(
            message.twilio_segments or message.segments,
            country=country_of(message.to),
            sender_type=sender_type_of(session, message.from_, account_id=message.account_id),
            channel="mms" if message.media_urls else "sms",
            rate_card=rate_card,
        )
    settlement = book.settle(session, message.hold_id, charge.usage, carrier_fee_mc=charge.carrier_fee,
                               reference=message.id, idempotency_key=f"message:{message.id}:usage", now=now)
    message.credits_charged = settlement.charged
    message.updated_at = now
    if settlement.status == "locked":
        park_account(session, message.account_id, book.LOCK_REASON, now=now)
        account_locked(session, message.account_id, reason=book.LOCK_REASON, balance=settlement.balance, now=now)
    return "settled"

