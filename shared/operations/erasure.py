"""Erasing one phone number's data on request (`POST /v1/erasures`, `creditq erase PHONE`), across every account.

Redacted at once, whatever their age (as retention would, shared.operations.retention): every finished message
sent to or received from the number (one still on its way is counted as in flight and left: erase again when it is
final), every finished call to, from or forwarded to it (the number, its recording and its transcription; a call
still on its way is counted in flight too), the events that name the number, and the campaign recipients with
that number. Kept: the
number's opt-outs — a suppression list is what keeps the number from ever being texted again, and the law that
grants erasure allows keeping it for that — and every ledger row, which holds no number. Idempotent: erasing a
number twice finds nothing the second time.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import String, case, cast, func, or_, select, update
from sqlalchemy.orm import Session

from shared.errors import ValidationFailed
from shared.messaging.phone_numbers import parse_e164
from shared.models import Call, CampaignRecipient, Message, OptOut, WebhookEvent
from shared.voice.calls import FINAL_STATUSES as FINISHED_CALLS

from .retention import FINISHED, REDACTED, redact_messages


@dataclass(frozen=True)
class Erased:
    phone: str
    messages: int
    calls: int
    in_flight: int  # messages and calls not final yet: left as they are; erase again once they are final
    recipients: int
    events: int
    opt_outs_kept: int


def erase_phone(session: Session, phone: object, *, now: datetime) -> Erased:
    """`phone` as people write it (+1 (415) 555-0100); ValidationFailed naming `phone` when it is not a number."""
    if not isinstance(phone, str) or len(phone) > 40:
        reason = "must be a phone number such as +14155550100"
        raise ValidationFailed(f"phone {reason}", errors={"phone": reason})
    phone = parse_e164(phone, field="phone", drop_extension=True)
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
    calls, calls_in_flight = _erase_calls(session, phone, now)
    kept = session.scalar(select(func.count()).select_from(OptOut).where(OptOut.phone == phone))
    return Erased(phone=phone, messages=len(finished), calls=calls,
                  in_flight=len(theirs) - len(finished) + calls_in_flight, recipients=recipients,
                  events=len(events), opt_outs_kept=kept)


def _erase_calls(session: Session, phone: str, now: datetime) -> tuple[int, int]:
    """(calls redacted, calls in flight left): the number blanked wherever a finished call names it, with what was
    said to or left by it (the recording and its transcription); the ledger keeps what each call cost."""
    naming = or_(Call.to == phone, Call.from_ == phone, Call.connect_to == phone)
    in_flight = session.scalar(select(func.count()).select_from(Call).where(naming,
                                                                           Call.status.not_in(FINISHED_CALLS)))
    redacted = session.execute(update(Call).where(naming, Call.status.in_(FINISHED_CALLS)).values(
        to=case((Call.to == phone, REDACTED), else_=Call.to),
        from_=case((Call.from_ == phone, REDACTED), else_=Call.from_),
        connect_to=case((Call.connect_to == phone, REDACTED), else_=Call.connect_to),
        recording_url=None, transcription=None, updated_at=now)).rowcount
    return redacted, in_flight


def _without(data: dict, phone: str) -> dict:
    """An event's data with the number, and the body of a message to or from it, blanked."""
    blanked = {name: REDACTED if value == phone else value for name, value in data.items()}
    return {**blanked, "body": ""} if "body" in blanked else blanked
