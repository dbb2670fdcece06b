"""A message someone sent to one of an account's numbers: stored, free, and obeyed when it is STOP/START/HELP.

Inbound is never charged (no ledger entry), so it is stored even for a locked account. Twilio retries a
webhook it got no answer to: the message's sid makes the second delivery a no-op apart from the reply.
"""

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.ids import new_id
from shared.messaging.opt_outs import FROM_STOP_KEYWORD, Keyword, classify_inbound, opt_in, opt_out
from shared.messaging.segments import count_segments
from shared.messaging.statuses import INBOUND_STATUS
from shared.models import Account, Message, PhoneNumber

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inbound:
    sid: str
    from_: str
    to: str
    body: str
    num_segments: int | None = None
    media_urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Received:
    account_id: str
    message_id: str | None  # None when Twilio delivered this sid before
    keyword: Keyword | None
    reply: str | None  # what to answer the sender with, through TwiML


def receive_inbound(session: Session, inbound: Inbound, *, now: datetime) -> Received | None:
    """Store the message on the account that owns `To`; None when no account has that number."""
    owner = session.execute(
        select(Account.id, Account.help_text).join(PhoneNumber, PhoneNumber.account_id == Account.id)
        .where(PhoneNumber.phone == inbound.to).order_by(PhoneNumber.id.desc()).limit(1)
    ).one_or_none()
    if owner is None:
        log.warning("inbound %s to %s: no account has that number", inbound.sid, inbound.to)
        return None
    account_id, help_text = owner
    counted = count_segments(inbound.body)
    message_id = new_id("msg")
    row = dict(
        id=message_id, account_id=account_id, direction="inbound", to=inbound.to, from_=inbound.from_,
        body=inbound.body, media_urls=list(inbound.media_urls) or None, status=INBOUND_STATUS,
        segments=inbound.num_segments or counted.segments, encoding=counted.encoding,
        credits_estimated=0, credits_charged=0, twilio_sid=inbound.sid, twilio_status="received",
        created_at=now, updated_at=now,
    )
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[session.get_bind().dialect.name]
    first_delivery = session.scalar(
        insert(Message).values(**row).on_conflict_do_nothing(index_elements=[Message.twilio_sid]).returning(Message.id)
    ) is not None
    keyword = classify_inbound(inbound.body)
    if first_delivery:
        # Only the first delivery acts: a retried STOP arriving after a START must not opt out again.
        if keyword == "opt_out":
            opt_out(session, account_id, inbound.from_, FROM_STOP_KEYWORD)
        elif keyword == "opt_in":
            opt_in(session, account_id, inbound.from_, by_recipient=True)
    return Received(
        account_id=account_id,
        message_id=message_id if first_delivery else None,
        keyword=keyword,
        reply=help_text if keyword == "help" and help_text else None,
    )
