"""Toll-free reprocessing: a text carriers filtered on a local number goes once more, from a toll-free number.

The rule (the account's `toll_free_reprocessing` setting, off by default): an outbound SMS sent from a
long code that ends `undelivered` or `failed` with Twilio's 30007 (message filtered) or 30034
(unregistered 10DLC sender) is resent once, to the same recipient with the same body, from the
account's toll-free number (its first, when it has several; a released one is none). An account without
one, an MMS, an original from a toll-free number or a short code, another error, or a resend itself: no
resend.

The original settles as any message does. The resend is a new message (`reprocessed_from` names the
original) that goes through the whole pipeline, so opt-outs, the account's status and its credits
apply at its send step as to any send: one the account cannot pay waits `parked` until credits land,
and the original stays as it is. The resend of an automated text (a campaign's, a scheduled one)
keeps to the account's quiet hours as automated texts do. It holds and is charged TOLL_FREE_RESEND
by its body's length, not segments x rate.

Once only: the resend is made in the settle step's unit of work, with the original's row locked (by the
settlement), and the unique `reprocessed_from` admits one resend per original; a duplicated or reordered
callback, or a replayed job, finds the resend already made and makes none.
"""

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.errors import NotFound
from shared.ids import new_id
from shared.messaging.estimate import sender_type_of
from shared.messaging.rates import TOLL_FREE_RESEND
from shared.messaging.segments import count_segments
from shared.messaging.settlement import Settled
from shared.models import Account, Message, PhoneNumber

# Twilio's errors for a text that a toll-free number may still get through: 30007 message filtered by the
# carrier, 30034 sent from an unregistered 10DLC number.
FILTERED_ON_LOCAL_NUMBER = frozenset({30007, 30034})
FILTERED_STATUSES = ("undelivered", "failed")


def qualifies(original: Message, *, enabled: bool, sender_type: str) -> bool:
    """Whether the rule resends `original` (sent from a `sender_type` number, by an account with the setting
    `enabled`), provided the account has a toll-free number to send it from."""
    return (enabled and original.direction == "outbound" and original.reprocessed_from is None
            and not original.media_urls and sender_type == "long_code"
            and original.status in FILTERED_STATUSES and original.error_code in FILTERED_ON_LOCAL_NUMBER)


def resend_from_toll_free(session: Session, settled: Settled, *, now: datetime) -> str | None:
    """Make the toll-free resend of a qualifying message, once; the id of its resend while that still waits for its
    first send job (the caller enqueues it after the commit, again on a replay), else None.

    Called right after settlement.settle_message in its unit of work, which locked the message."""
    if settled.status not in FILTERED_STATUSES or settled.error_code not in FILTERED_ON_LOCAL_NUMBER:
        return None  # most settlements stop here, without a query (a final status and its code never change)
    message_id = settled.message_id
    original = session.get(Message, message_id)
    resend = session.scalar(select(Message).where(Message.reprocessed_from == message_id))
    if resend is not None:
        return resend.id if resend.status == "accepted" and resend.slot_at is None else None
    account = session.get(Account, original.account_id)
    sender_type = sender_type_of(session, original.from_, account_id=account.id)
    if not qualifies(original, enabled=account.toll_free_reprocessing, sender_type=sender_type):
        return None
    toll_free = session.scalar(select(PhoneNumber.phone).where(  # a released number (account canceled) is no sender
        PhoneNumber.account_id == account.id, PhoneNumber.type == "toll_free", PhoneNumber.released_at.is_(None))
        .order_by(PhoneNumber.id).limit(1))
    if toll_free is None:
        return None
    counted = count_segments(original.body)
    automated = original.campaign_id is not None or original.send_at is not None  # it keeps to quiet hours
    resend = Message(id=new_id("msg"), account_id=account.id, user_id=original.user_id, to=original.to,
                     from_=toll_free, body=original.body, status="accepted", segments=counted.segments,
                     encoding=counted.encoding, credits_estimated=TOLL_FREE_RESEND.price(original.body),
                     send_at=now if automated else None, reprocessed_from=original.id, created_at=now,
                     updated_at=now)
    session.add(resend)
    return resend.id


def resend_of(session: Session, message_id: str) -> str | None:
    """The id of the toll-free resend of `message_id`, if it was resent."""
    return session.scalar(select(Message.id).where(Message.reprocessed_from == message_id))


def set_toll_free_reprocessing(session: Session, account_id: str, *, enabled: bool) -> Account:
    account = session.get(Account, account_id, with_for_update=True)
    if account is None:
        raise NotFound(f"No account {account_id}.")
    account.toll_free_reprocessing = enabled
    return account
