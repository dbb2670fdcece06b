"""Erasing one phone number's data on request (`POST /v1/erasures`, `creditq erase PHONE`), across every account.

Redacted at once, whatever their age (as retention would, shared.operations.retention): every finished message
sent to or received from the number (one still on its way is counted as in flight and left: erase again when it is
final), the events that name the number, and the campaign recipients with that number. Kept: the
number's opt-outs — a suppression list is what keeps the number from ever being texted again, and the law that
grants erasure allows keeping it for that — and every ledger row, which holds no number. Idempotent: erasing a
number twice finds nothing the second time.
"""

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import String, cast, func, or_, select, update
from sqlalchemy.orm import Session

from shared.errors import ValidationFailed
from shared.models import CampaignRecipient, Message, OptOut, WebhookEvent

from .retention import FINISHED, REDACTED, redact_messages

E164 = re.compile(r"\+[1-9][0-9]{6,14}")


@dataclass(frozen=True)
class Erased:
    phone: str
    messages: int
    in_flight: int  # not sent or not final yet: left as they are; erase again once they are final
    recipients: int
    events: int
    opt_outs_kept: int


def erase_phone(session: Session, phone: object, *, now: datetime) -> Erased:
    if not isinstance(phone, str) or not E164.fullmatch(phone):
        reason = "must be a phone number in E.164 format, such as +14155550100"
        raise ValidationFailed(f"phone {reason}", errors={"phone": reason})
    theirs = session.execute(select(Message.id, Message.status).where(or_(
        (Message.direction == "outbound") & (Message.to == phone),
        (Message.direction == "inbound") & (Message.from_ == phone)))).all()
    finished = [message_id for message_id, status in theirs if status in FINISHED]
    redact_messages(session, finished, now)
    events = session.scalars(select(WebhookEvent).where(
        cast(WebhookEvent.data, String).contains(phone))).all()  # few rows per number; a scan is fine for a request
    for event in events:
        event.data = _without(event.data, phone)
        event.redacted_at = now
    recipients = session.execute(update(CampaignRecipient).where(CampaignRecipient.to == phone)
                                 .values(to=REDACTED, fields={})).rowcount
    kept = session.scalar(select(func.count()).select_from(OptOut).where(OptOut.phone == phone))
    return Erased(phone=phone, messages=len(finished), in_flight=len(theirs) - len(finished), recipients=recipients,
                  events=len(events), opt_outs_kept=kept)


def _without(data: dict, phone: str) -> dict:
    """An event's data with the number, and the body of a message to or from it, blanked."""
    blanked = {name: REDACTED if value == phone else value for name, value in data.items()}
    return {**blanked, "body": ""} if "body" in blanked else blanked
