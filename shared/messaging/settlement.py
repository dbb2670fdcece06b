"""Settling a message Twilio has finished with: charge what it really cost, or nothing if it never left.

Charged statuses (sent, delivered, undelivered) cost Twilio's actual segment count times the rate,
plus the carrier fee as its own entry (a toll-free resend: TOLL_FREE_RESEND by its body's length, no
fee); `failed` voids the hold. One settlement per message: the ledger key is the message id, so a
replayed job or a duplicate callback charges nothing more. The message keeps the rate card version it was
priced with (rate_card_version). A settlement that takes a prepaid account
below zero locks it; its waiting messages are parked.
"""

import functools
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Row, bindparam, func, select, update
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
# _CHARGED for every hold a batch settled, as book.settle_many's `then` on PostgreSQL: one round trip for all. Its
# parameters: the time, then the batch's hold ids, message ids and rate card versions, as arrays.
_CHARGED_WITH_SETTLEMENTS = (
    "UPDATE messages SET credits_charged = settled.settled_amount, rate_card_version = charged.version,"
    " updated_at = %s FROM settled JOIN unnest(%s::bigint[], %s::text[], %s::int[]) AS charged(hold_id, message_id,"
    " version) ON charged.hold_id = settled.id WHERE messages.id = charged.message_id")


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


@dataclass(frozen=True)
class _Charging:
    """A message to charge, and what for."""

    message: Row
    charge: Charge
    rate_card_version: int | None


def settle_message(session: Session, message_id: str, *, rate_card: RateCard, now: datetime) -> Settled:
    """Settle or void the message's hold according to its status."""
    return settle_messages(session, [message_id], rate_card=rate_card, now=now)[0]


def settle_messages(session: Session, message_ids: list[str], *, rate_card: RateCard,
                    now: datetime) -> list[Settled]:
    """Settle or void each message's hold according to its status, in the order given (the order in which the
    account rows are locked): the messages are read in one statement, and each run of messages to charge is settled
    in one more (book.settle_many), with their charges written."""
    connection = session.connection()
    found = {row.id: row for row in run(connection, _settling(connection.dialect.name),
                                        {"message_ids": list(message_ids)}).all()}
    outcomes: dict[str, str] = {}
    charging: list[_Charging] = []
    for message_id in message_ids:
        message = found.get(message_id)
        if message is None or message.hold_id is None or message.credits_charged is not None:
            outcomes[message_id] = "skipped"
        elif message.status in VOIDED_STATUSES:
            _charge(session, connection, charging, outcomes, now)  # those before it first: the lock order holds
            charging = []
            outcomes[message_id] = _void(session, connection, message, now)
        elif message.status not in CHARGED_STATUSES:
            outcomes[message_id] = "skipped"
        else:
            charging.append(_charging(message, rate_card))
    _charge(session, connection, charging, outcomes, now)
    settled = []
    for message_id in message_ids:
        message = found.get(message_id)
        settled.append(Settled(outcomes[message_id], message_id) if message is None else Settled(
            outcomes[message_id], message_id, message.account_id, message.status, message.error_code,
            message.low_balance_threshold, message.has_auto_recharge))
    return settled


def _void(session: Session, connection, message: Row, now: datetime) -> str:
    if message.hold_status == "pending":
        book.void(session, message.hold_id, now=now)
    run(connection, _CHARGED, {"message_id": message.id, "charged": 0, "rate_card_version": None, "now": now})
    return "voided"


def _charging(message: Row, rate_card: RateCard) -> _Charging:
    if message.reprocessed_from is not None:  # a toll-free resend is priced by the product, not by the card
        return _Charging(message, Charge(TOLL_FREE_RESEND.price(message.body), carrier_fee=0), None)
    charge = charge_for(message.segments, country=country_of(message.to), sender_type=message.sender_type,
                        channel="mms" if message.media_urls else "sms", rate_card=rate_card)
    return _Charging(message, charge, rate_card.version)


def _charge(session: Session, connection, charging: list[_Charging], outcomes: dict[str, str],
            now: datetime) -> None:
    """Settle the messages' holds in one batch and write what each was charged; lock and park an account a
    settlement took below zero."""
    if not charging:
        return
    requests = [book.SettleRequest(item.message.hold_id, item.charge.usage, carrier_fee_mc=item.charge.carrier_fee,
                                   reference=item.message.id, idempotency_key=f"message:{item.message.id}:usage")
                for item in charging]
    # on PostgreSQL the batch writes the messages' charges in its own round trip
    writing = None if connection.dialect.name != "postgresql" else (_CHARGED_WITH_SETTLEMENTS, (
        now, [item.message.hold_id for item in charging], [item.message.id for item in charging],
        [item.rate_card_version for item in charging]))
    settlements = book.settle_many(session, requests, now=now, then=writing)
    locked = {}
    for item, settlement in zip(charging, settlements):
        if writing is None or settlement.replayed:
            run(connection, _CHARGED, {"message_id": item.message.id, "charged": settlement.charged,
                                       "rate_card_version": item.rate_card_version, "now": now})
        if settlement.status == "locked":
            locked.setdefault(item.message.account_id, settlement.balance)
        outcomes[item.message.id] = "settled"
    for account_id, balance in locked.items():
        park_account(session, account_id, book.LOCK_REASON, now=now)
        account_locked(session, account_id, reason=book.LOCK_REASON, balance=balance, now=now)
