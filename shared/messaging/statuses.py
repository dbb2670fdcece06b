"""Twilio's status reports on a message, applied so that order, duplicates and races cannot hurt.

Twilio's callbacks arrive late, twice, or out of order ("sent" after "delivered"). Two vocabularies
are kept apart: `twilio_status` is Twilio's word, `status` is ours (API.md). A report only moves a
message forward, and one conditional UPDATE decides it, so of two concurrent reports of the same
final status exactly one sees `became_final` and enqueues the settlement.

A callback is applied only once it is proven to come from the Twilio account its message was sent
with (`record_callback`, see shared.twilio.signatures): the message's stored AccountSid is read in the
same statement that finds the message, so the proof costs no extra lookup.

A callback may also beat the worker storing the sid (Twilio answers the create and reports at once),
and Twilio does not reliably retry callbacks: such a report is kept as an EarlyStatus, with the
AccountSid whose token verified it, and applied in the unit of work that stores the sid only if the
message was sent with that account. Both sides take a lock on the sid (PostgreSQL: an advisory
transaction lock; SQLite serializes writers anyway), so a report is either seen by the storing
transaction or finds the stored sid itself.
"""

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, case, delete, func, or_, select, text, update
from sqlalchemy.orm import Session

from shared.errors import CallbackRejected
from shared.events.outbox import message_event
from shared.events.types import MESSAGE_EVENT_FOR_FINAL_STATUS
from shared.models import Account, EarlyStatus, Message
from shared.twilio.signatures import Credentials, SignedForm, credentials_of, known_credentials

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


# Prebuilt: they run for every callback. The callback's one lookup also reads the credentials that may
# have sent the message (a message stored before they were recorded counts as sent with its account's).
_MESSAGE_BY_SID = select(Message.id, Message.account_id).where(Message.twilio_sid == bindparam("sid"))
_CALLBACK_OWNER = (
    select(Message.id, Message.account_id,
           func.coalesce(Message.twilio_account_sid, Account.twilio_account_sid).label("sent_with"),
           Account.twilio_account_sid.label("own_sid"), Account.twilio_auth_token.label("own_token"))
    .join(Account, Account.id == Message.account_id)
    .where(Message.twilio_sid == bindparam("sid"))
)


def record_callback(session: Session, form: SignedForm, *, deployment: Credentials, sid: str, status: str,
                    num_segments: int | None = None, price: str | None = None, price_unit: str | None = None,
                    error_code: int | None = None, error_message: str | None = None,
                    now: datetime) -> StatusChange | None:
    """Apply a status callback for the message with this sid, once it is proven to be Twilio's for that message.

    The form must name the Twilio account the message was sent with and be signed with that account's token
    (`deployment` when it went out with the deployment's credentials); else CallbackRejected, and nothing
    changes. A sid not stored yet is normal for a moment (the callback beat the worker): the report is kept
    (EarlyStatus) if it is signed with the token of credentials we know for its AccountSid, and None is
    returned, so callers still answer Twilio with success.
    """
    owner = session.execute(_CALLBACK_OWNER, {"sid": sid}).one_or_none()
    if owner is None:
        _lock_sid(session, sid)  # the worker storing this sid now either committed it or will see our row
        owner = session.execute(_CALLBACK_OWNER, {"sid": sid}).one_or_none()
    reported = dict(num_segments=num_segments, price=price, price_unit=price_unit, error_code=error_code,
                    error_message=error_message)
    if owner is None:
        if not any(map(form.signed_by, known_credentials(session, form.account_sid, deployment=deployment))):
            raise _rejected(sid, form)
        if status in TWILIO_RANK:
            session.add(EarlyStatus(sid=sid, account_sid=form.account_sid, status=status, **reported,
                                    received_at=now))
        log.info("status %r for a sid not stored yet (%r): kept until it is", status, sid)
        return None
    sent_with = credentials_of(owner.sent_with or deployment.account_sid, own_sid=owner.own_sid,
                               own_token=owner.own_token, deployment=deployment)
    if not form.signed_by(sent_with):
        raise _rejected(sid, form)
    return _apply(session, owner.id, owner.account_id, sid, status, reported, now)


def record_status(session: Session, *, sid: str, status: str, num_segments: int | None = None,
                  price: str | None = None, price_unit: str | None = None, error_code: int | None = None,
                  error_message: str | None = None, now: datetime) -> StatusChange | None:
    """Apply a report known to be Twilio's (fetched from Twilio, or a callback verified when it was kept) for the
    message with this sid; None when no message has the sid."""
    row = session.execute(_MESSAGE_BY_SID, {"sid": sid}).one_or_none()
    if row is None:
        return None
    reported = dict(num_segments=num_segments, price=price, price_unit=price_unit, error_code=error_code,
                    error_message=error_message)
    return _apply(session, row.id, row.account_id, sid, status, reported, now)


def _apply(session: Session, message_id: str, account_id: str, sid: str, status: str, reported: dict,
           now: datetime) -> StatusChange:
    if status not in TWILIO_RANK:
        log.warning("unknown Twilio status %r for %r (%s): ignored", status, sid, message_id)
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
    columns = {"num_segments": "twilio_segments", "price": "twilio_price", "price_unit": "twilio_price_unit",
               "error_code": "error_code", "error_message": "error_message"}
    values.update({columns[name]: value for name, value in reported.items() if value is not None})
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
    if changed and ours in MESSAGE_EVENT_FOR_FINAL_STATUS:  # the one report that made it final
        message_event(session, MESSAGE_EVENT_FOR_FINAL_STATUS[ours], message_id, now=now)
    return StatusChange(message_id, account_id, became_final=changed and ours in FINAL_STATUSES, changed=changed)


def _rejected(sid: str, form: SignedForm) -> CallbackRejected:
    log.warning("rejected a status callback for %r naming AccountSid %r: not signed by the credentials it was "
                "sent with", sid, form.account_sid)
    return CallbackRejected("The callback is not signed by the Twilio account of the message it is about.")


def apply_early_statuses(session: Session, sid: str, *, now: datetime) -> str | None:
    """Apply the reports that arrived before `sid` was stored; call it in the unit of work that stores the sid
    (and the message's twilio_account_sid).

    Only reports verified with the token of the account the message was sent with are applied; the others
    are dropped. Returns the message's status afterwards, or None when no report was waiting. A final status
    returned here was reached in this unit of work alone (as `became_final`): its caller enqueues the settlement.
    """
    session.flush()  # the sid must be in the database for the reports to find it
    _lock_sid(session, sid)
    reports = session.execute(
        delete(EarlyStatus).where(EarlyStatus.sid == sid)
        .returning(EarlyStatus.account_sid, EarlyStatus.status, EarlyStatus.num_segments, EarlyStatus.price,
                   EarlyStatus.price_unit, EarlyStatus.error_code, EarlyStatus.error_message)
        .execution_options(synchronize_session=False)
    ).all()
    if not reports:
        return None
    sent_with = session.scalar(select(Message.twilio_account_sid).where(Message.twilio_sid == sid))
    for report in sorted(reports, key=lambda report: TWILIO_RANK[report.status]):
        fields = report._asdict()
        if fields.pop("account_sid") != sent_with:
            log.warning("dropped an early %r report for %s: verified for AccountSid %s, sent with %s",
                        report.status, sid, report.account_sid, sent_with)
            continue
        record_status(session, sid=sid, **fields, now=now)
    return session.scalar(select(Message.status).where(Message.twilio_sid == sid))


def purge_early_statuses(session: Session, *, before: datetime) -> int:
    """Forget reports no stored sid claimed (texts sent outside the pipeline); returns how many."""
    result = session.execute(delete(EarlyStatus).where(EarlyStatus.received_at < before)
                             .execution_options(synchronize_session=False))
    return result.rowcount


def _lock_sid(session: Session, sid: str) -> None:
    """Serialize the storing of `sid` with reports of it, until the transaction ends (PostgreSQL only)."""
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.blake2b(sid.encode(), digest_size=8).digest(), "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
