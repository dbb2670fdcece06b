"""Twilio's status reports on a message, applied so that order, duplicates and races cannot hurt.

Twilio's callbacks arrive late, twice, or out of order ("sent" after "delivered"). Two vocabularies
are kept apart: `twilio_status` is Twilio's word, `status` is ours (API.md). A report only moves a
message forward, and one conditional UPDATE decides it, so of two concurrent reports of the same
final status exactly one sees `became_final` and enqueues the settlement.

A callback may also beat the worker storing the sid (Twilio answers the create and reports at once),
and Twilio does not reliably retry callbacks: such a report is kept as an EarlyStatus and applied in
the unit of work that stores the sid. Both sides take a lock on the sid (PostgreSQL: an advisory
transaction lock; SQLite serializes writers anyway), so a report is either seen by the storing
transaction or finds the stored sid itself.
"""

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, delete, or_, select, text, update
from sqlalchemy.orm import Session

from shared.models import EarlyStatus, Message

log = logging.getLogger(__name__)

FINAL_STATUSES = frozenset({"delivered", "undelivered", "failed", "canceled"})
INBOUND_STATUS = "received"  # ours for a message someone sent to one of the account's numbers

# Our statuses (API.md), by how far along a message is. Before Twilio has it: accepted, scheduled,
# parked, queued; then sending (the create is under way); sent (Twilio has it); then final.
STATUS_RANK: dict[str, int] = {
    "accepted": 0, "scheduled": 0, "parked": 0, "queued": 0,
    "sending": 1,
    "sent": 2,
    **{status: 3 for status in FINAL_STATUSES},
}

# Twilio's message statuses, ranked the same way, and the status of ours each one means.
TWILIO_RANK: dict[str, int] = {
    "accepted": 0, "scheduled": 0, "queued": 0,
    "sending": 1,
    "sent": 2,
    "delivered": 3, "undelivered": 3, "failed": 3, "canceled": 3, "read": 3,
}
OUR_STATUS_FOR_TWILIO: dict[str, str] = {
    "accepted": "queued", "scheduled": "queued", "queued": "queued",
    "sending": "sending",
    "sent": "sent",
    "delivered": "delivered", "read": "delivered",
    "undelivered": "undelivered", "failed": "failed", "canceled": "canceled",
}


@dataclass(frozen=True)
class StatusChange:
    message_id: str
    account_id: str
    became_final: bool  # True for exactly one report per message: the one that made it final
    changed: bool  # False for a duplicate, a late (out-of-order) or an unknown-to-us status


def record_status(session: Session, *, sid: str, status: str, num_segments: int | None = None,
                  price: str | None = None, price_unit: str | None = None, error_code: int | None = None,
                  error_message: str | None = None, now: datetime) -> StatusChange | None:
    """Apply one report of Twilio's `status` for the message with this sid; None when no message has the sid.

    An unknown sid is normal for a moment: the callback may beat the worker storing the sid. The report
    is then kept (EarlyStatus) for `apply_early_statuses`, so callers still answer Twilio with success.
    """
    row = _message_with_sid(session, sid)
    if row is None:
        _lock_sid(session, sid)  # the worker storing this sid now either committed it or will see our row
        row = _message_with_sid(session, sid)
    if row is None:
        if status in TWILIO_RANK:
            session.add(EarlyStatus(sid=sid, status=status, num_segments=num_segments, price=price,
                                    price_unit=price_unit, error_code=error_code, error_message=error_message,
                                    received_at=now))
        log.info("status %r for a sid not stored yet (%s): kept until it is", status, sid)
        return None
    message_id, account_id = row
    if status not in TWILIO_RANK:
        log.warning("unknown Twilio status %r for %s (%s): ignored", status, sid, message_id)
        return StatusChange(message_id, account_id, became_final=False, changed=False)

    rank = TWILIO_RANK[status]
    ours = OUR_STATUS_FOR_TWILIO[status]
    earlier_twilio_statuses = [name for name, r in TWILIO_RANK.items() if r < rank]
    our_rank = case(STATUS_RANK, value=Message.status, else_=0)
    values = {
        "twilio_status": status,
        # Twilio may be behind us (we say "sent" once the create returned; it still says "queued").
        "status": case((our_rank < STATUS_RANK[ours], ours), else_=Message.status),
        "updated_at": now,
    }
    # None means "not in this report" (callbacks carry no price): keep what an earlier report said.
    reported = {"twilio_segments": num_segments, "twilio_price": price, "twilio_price_unit": price_unit,
                "error_code": error_code, "error_message": error_message}
    values.update({column: value for column, value in reported.items() if value is not None})
    result = session.execute(
        update(Message)
        .where(
            Message.id == message_id,
            Message.status.not_in(FINAL_STATUSES),
            or_(Message.twilio_status.is_(None), Message.twilio_status.in_(earlier_twilio_statuses)),
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    changed = result.rowcount == 1
    return StatusChange(message_id, account_id, became_final=changed and ours in FINAL_STATUSES, changed=changed)


def apply_early_statuses(session: Session, sid: str, *, now: datetime) -> str | None:
    """Apply the reports that arrived before `sid` was stored; call it in the unit of work that stores the sid.

    Returns the message's status afterwards, or None when no report was waiting. A final status returned
    here was reached in this unit of work alone (as `became_final`): its caller enqueues the settlement.
    """
    session.flush()  # the sid must be in the database for the reports to find it
    _lock_sid(session, sid)
    reports = session.execute(
        delete(EarlyStatus).where(EarlyStatus.sid == sid)
        .returning(EarlyStatus.status, EarlyStatus.num_segments, EarlyStatus.price, EarlyStatus.price_unit,
                   EarlyStatus.error_code, EarlyStatus.error_message)
        .execution_options(synchronize_session=False)
    ).all()
    if not reports:
        return None
    for report in sorted(reports, key=lambda report: TWILIO_RANK[report.status]):
        record_status(session, sid=sid, **report._asdict(), now=now)
    return session.scalar(select(Message.status).where(Message.twilio_sid == sid))


def purge_early_statuses(session: Session, *, before: datetime) -> int:
    """Forget reports no stored sid claimed (texts sent outside the pipeline); returns how many."""
    result = session.execute(delete(EarlyStatus).where(EarlyStatus.received_at < before)
                             .execution_options(synchronize_session=False))
    return result.rowcount


def _message_with_sid(session: Session, sid: str):
    return session.execute(select(Message.id, Message.account_id).where(Message.twilio_sid == sid)).one_or_none()


def _lock_sid(session: Session, sid: str) -> None:
    """Serialize the storing of `sid` with reports of it, until the transaction ends (PostgreSQL only)."""
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.blake2b(sid.encode(), digest_size=8).digest(), "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
