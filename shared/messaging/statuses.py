"""Twilio's status reports on a message, applied so that order, duplicates and races cannot hurt.

Twilio's callbacks arrive late, twice, or out of order ("sent" after "delivered"). Two vocabularies
are kept apart: `twilio_status` is Twilio's word, `status` is ours (API.md). A report only moves a
message forward, and one conditional UPDATE decides it, so of two concurrent reports of the same
final status exactly one sees `became_final` and enqueues the settlement.

A callback is applied only once it is proven to come from the Twilio account its message was sent
with (`record_callback`, see shared.twilio.signatures): the message's stored AccountSid is read in the
same statement that finds the message, so the proof costs no extra lookup. That proves less when the
account is a tenant's own subaccount (or a dunning site's): the tenant holds its token too, and could sign
"failed" or "delivered, 0 segments" for a text Twilio delivered in full. Such a report moves only a status
that decides no money; a final one is `ToConfirm`: Twilio is asked (shared.billing.confirmation).

A callback may also beat the worker storing the sid (Twilio answers the create and reports at once),
and Twilio does not reliably retry callbacks: such a report is kept as an EarlyStatus, with the
AccountSid whose token verified it, and applied in the unit of work that stores the sid only if the
message was sent with that account. Both sides take a lock on the sid (PostgreSQL: an advisory
transaction lock; SQLite serializes writers anyway), so a report is either seen by the storing
transaction or finds the stored sid itself.
"""

import functools
import hashlib
import logging
from dataclasses import dataclass, replace
from datetime import datetime

from psycopg.rows import tuple_row
from sqlalchemy import (
    Connection,
    Integer,
    Row,
    String,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from shared.db import any_of_parameter, prepared, run
from shared.errors import CallbackRejected
from shared.events.outbox import message_event, takes_any
from shared.events.types import MESSAGE_EVENT_FOR_FINAL_STATUS
from shared.models import Account, DunningIntegration, EarlyStatus, Message
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
TWILIO_FINAL = frozenset(status for status, rank in TWILIO_RANK.items() if rank == TWILIO_RANK["delivered"])
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


@dataclass(frozen=True)
class ToConfirm:
    """A final report signed with a token the message's account holds too: nothing of it applied; what Twilio says
    of the message `sid` is asked and applied instead (shared.billing.confirmation)."""

    sid: str


@dataclass(frozen=True)
class Callback:
    """A status callback as Twilio posted it: the signed form, and what it reports (None: not in this report)."""

    form: SignedForm
    sid: str
    status: str
    num_segments: int | None = None
    price: str | None = None
    price_unit: str | None = None
    error_code: int | None = None
    error_message: str | None = None

    def reported(self) -> dict:
        return dict(num_segments=self.num_segments, price=self.price, price_unit=self.price_unit,
                    error_code=self.error_code, error_message=self.error_message)

    def status_only(self) -> "Callback":
        """The report without what it says of segments, price and errors."""
        return replace(self, num_segments=None, price=None, price_unit=None, error_code=None, error_message=None)


messages = Message.__table__
# Prebuilt Core statements: they run for every callback, so they are compiled once and skip the ORM. The
# callback's one lookup also reads the credentials that may have sent the message (a message stored
# before they were recorded counts as sent with its account's).
_MESSAGE_BY_SID = select(messages.c.id, messages.c.account_id).where(messages.c.twilio_sid == bindparam("sid"))
_SENDER_SID = case((DunningIntegration.id.is_not(None), DunningIntegration.account_sid),
                   else_=Account.twilio_account_sid)  # a dunning site's message: the site's credentials
# The messages of a callback batch's sids, each with the credentials that may have sent it and whether an endpoint
# of its account takes a final message event; locked in their ids' order, so that every batch takes its messages'
# rows in one order, whichever of its reports then changes one (a report that changes nothing locks nothing).
_OWNERS = (
    select(messages.c.twilio_sid, messages.c.id, messages.c.account_id,
           func.coalesce(messages.c.twilio_account_sid, _SENDER_SID).label("sent_with"), _SENDER_SID.label("own_sid"),
           case((DunningIntegration.id.is_not(None), DunningIntegration.auth_token),
                else_=Account.twilio_auth_token).label("own_token"),
           takes_any(messages.c.account_id, list(MESSAGE_EVENT_FOR_FINAL_STATUS.values())).label("takes_events"))
    .join(Account, Account.id == messages.c.account_id)
    .outerjoin(DunningIntegration, DunningIntegration.id == messages.c.dunning_site_id)
    .order_by(messages.c.id)
    .with_for_update(of=messages)
)


@functools.cache
def _callback_owners(dialect: str):
    """Prebuilt per dialect: the messages of a list of sids in one statement."""
    return _OWNERS.where(any_of_parameter(messages.c.twilio_sid, "sids", dialect))


# A report moves the message forward only: its Twilio status must rank above the stored one (none ranks
# lowest), and a final message never changes. Our status follows when it is behind (we say "sent" once the
# create returned; Twilio may still say "queued"). A field the report lacks keeps what an earlier one said.
def _rank_of(column, ranks: dict[str, int], otherwise: int):
    """CASE column WHEN 'name' THEN rank ... END with the names and ranks as constants in the SQL: the statement
    then has only the report's own parameters, and is the same text every time."""
    return case({literal_column(f"'{name}'"): literal_column(str(rank)) for name, rank in ranks.items()},
                value=column, else_=literal_column(str(otherwise)))


_APPLY_REPORT = (
    update(messages)
    .where(messages.c.id == bindparam("message_id"),
           _rank_of(messages.c.status, STATUS_RANK, 0) < literal_column(str(STATUS_RANK["delivered"])),  # not final
           _rank_of(messages.c.twilio_status, TWILIO_RANK, -1) < bindparam("rank"))
    .values(
        twilio_status=bindparam("twilio_status"),
        status=case((_rank_of(messages.c.status, STATUS_RANK, 0) < bindparam("our_rank"), bindparam("ours")),
                    else_=messages.c.status),
        twilio_segments=func.coalesce(bindparam("num_segments", type_=Integer), messages.c.twilio_segments),
        twilio_price=func.coalesce(bindparam("price", type_=String), messages.c.twilio_price),
        twilio_price_unit=func.coalesce(bindparam("price_unit", type_=String), messages.c.twilio_price_unit),
        error_code=func.coalesce(bindparam("error_code", type_=Integer), messages.c.error_code),
        error_message=func.coalesce(bindparam("error_message", type_=String), messages.c.error_message),
        updated_at=bindparam("now"),
    )
)
_KEEP_EARLY = insert(EarlyStatus.__table__)


def _rank_sql(column: str, ranks: dict[str, int], otherwise: int) -> str:
    """_rank_of as SQL text, for a statement written out."""
    return str(_rank_of(literal_column(column), ranks, otherwise).compile(dialect=postgresql.dialect()))


# _APPLY_REPORT for many messages in one statement (PostgreSQL): one report each, its rules applied row by row. It
# answers the ids of the messages it changed.
_APPLY_REPORTS = (
    "UPDATE messages AS m SET twilio_status = r.twilio_status,"
    f" status = CASE WHEN {_rank_sql('m.status', STATUS_RANK, 0)} < r.our_rank THEN r.ours ELSE m.status END,"
    " twilio_segments = coalesce(r.num_segments, m.twilio_segments), twilio_price = coalesce(r.price, m.twilio_price),"
    " twilio_price_unit = coalesce(r.price_unit, m.twilio_price_unit),"
    " error_code = coalesce(r.error_code, m.error_code), error_message = coalesce(r.error_message, m.error_message),"
    " updated_at = %(now)s"
    " FROM unnest(%(message_id)s::text[], %(rank)s::int[], %(twilio_status)s::text[], %(our_rank)s::int[],"
    " %(ours)s::text[], %(num_segments)s::int[], %(price)s::text[], %(price_unit)s::text[], %(error_code)s::int[],"
    " %(error_message)s::text[])"
    " AS r(message_id, rank, twilio_status, our_rank, ours, num_segments, price, price_unit, error_code, error_message)"
    f" WHERE m.id = r.message_id AND {_rank_sql('m.status', STATUS_RANK, 0)} < {STATUS_RANK['delivered']}"
    f" AND {_rank_sql('m.twilio_status', TWILIO_RANK, -1)} < r.rank"
    " RETURNING m.id"
)


def record_callbacks(session: Session, callbacks: list[Callback], *, deployment: Credentials,
                     now: datetime) -> list[StatusChange | None | ToConfirm | CallbackRejected]:
    """Apply many status callbacks in one unit of work, each meeting its own fate: its StatusChange, None (a sid
    not stored yet), ToConfirm (a final report the message's account could have signed itself: its caller has
    Twilio asked), or CallbackRejected (nothing of it applied). A report signed with a tenant's token is applied
    as its status alone.

    The batch's messages are read, and locked, in one statement, in their ids' order: two batches that share
    messages never deadlock, whichever of their reports change them. The reports are verified in sid order, each
    sid's in the order they came. On PostgreSQL the first report of each message is then applied in one statement (a
    statement for each cost the web about 0.15 ms of CPU a report), and a later report of the same message after it,
    alone; elsewhere each report is a statement of its own, in sid order.
    """
    order = sorted(range(len(callbacks)), key=lambda i: callbacks[i].sid)
    connection = session.connection()
    sids = sorted({callback.sid for callback in callbacks})
    owners = {row.twilio_sid: row for row in run(connection, _callback_owners(connection.dialect.name),
                                                 {"sids": sids}).all()}
    outcomes: list = [None] * len(callbacks)
    verified: list[tuple[int, Row]] = []  # the reports to apply, in sid order, each with its message
    reports = list(callbacks)  # as they are applied: a tenant's reports without segments, price and errors
    for i in order:
        try:
            owner, signer = _verified_owner(session, callbacks[i], owners.get(callbacks[i].sid), deployment)
        except CallbackRejected as rejected:
            outcomes[i] = rejected
            continue
        if signer != deployment:
            if callbacks[i].status in TWILIO_FINAL:
                outcomes[i] = ToConfirm(callbacks[i].sid)
                continue
            reports[i] = callbacks[i].status_only()
        if owner is None:
            _keep_early(connection, reports[i], signer, now)
        else:
            verified.append((i, owner))
    together: dict[str, int] = {}  # on PostgreSQL each message's first report, by message: in one statement
    if connection.dialect.name == "postgresql":
        for i, owner in verified:
            if reports[i].status in TWILIO_RANK:
                together.setdefault(owner.id, i)
    changed = _apply_together(connection, [(reports[i], message_id) for message_id, i in together.items()], now)
    for i, owner in verified:
        if together.get(owner.id) == i:
            outcomes[i] = _applied(session, owner.id, owner.account_id, reports[i].status, owner.id in changed,
                                   now, takes_events=owner.takes_events)
        else:
            outcomes[i] = _apply(session, owner.id, owner.account_id, reports[i].sid, reports[i].status,
                                 reports[i].reported(), now, takes_events=owner.takes_events)
    return outcomes


def _apply_together(connection: Connection, reports: list[tuple[Callback, str]], now: datetime) -> set[str]:
    """Apply each (report, message id), one per message, in one statement (its messages already locked); the ids of
    the messages it changed."""
    if not reports:
        return set()
    columns = {name: [] for name in ("message_id", "rank", "twilio_status", "our_rank", "ours", "num_segments",
                                     "price", "price_unit", "error_code", "error_message")}
    for callback, message_id in reports:
        row = _report_parameters(message_id, callback.status, callback.reported())
        for name, values in columns.items():
            values.append(row[name])
    with prepared(connection, _APPLY_REPORTS, {"now": now, **columns}, row_factory=tuple_row) as cursor:
        return {row[0] for row in cursor.fetchall()}


def record_callback(session: Session, form: SignedForm, *, deployment: Credentials, sid: str, status: str,
                    num_segments: int | None = None, price: str | None = None, price_unit: str | None = None,
                    error_code: int | None = None, error_message: str | None = None,
                    now: datetime) -> StatusChange | ToConfirm | None:
    """Apply one status callback (see `record_callbacks`); raises CallbackRejected."""
    outcome = record_callbacks(session, [Callback(form, sid, status, num_segments, price, price_unit, error_code,
                                                  error_message)], deployment=deployment, now=now)[0]
    if isinstance(outcome, CallbackRejected):
        raise outcome
    return outcome


def _verified_owner(session: Session, callback: Callback, owner: Row | None,
                    deployment: Credentials) -> tuple[Row | None, Credentials]:
    """The message a status callback is about, once the callback is proven to be Twilio's for that message, and the
    credentials that signed it.

    The form must name the Twilio account the message was sent with and be signed with that account's token
    (`deployment` when it went out with the deployment's credentials); else CallbackRejected, and nothing
    changes. A sid not stored yet is normal for a moment (the callback beat the worker): None, with the
    credentials we know for its AccountSid whose token signed it (CallbackRejected when none did). `owner` is the
    message as the batch found it by its sid (None: not found then).
    """
    sid, form = callback.sid, callback.form
    connection = session.connection()
    if owner is None:
        _lock_sid(connection, sid)  # the worker storing this sid now either committed it or will see our row
        owner = run(connection, _callback_owners(connection.dialect.name), {"sids": [sid]}).one_or_none()
    if owner is None:
        signer = next(filter(form.signed_by, known_credentials(connection, form.account_sid, deployment=deployment)),
                      None)
        if signer is None:
            raise _rejected(sid, form)
        return None, signer
    sent_with = credentials_of(owner.sent_with or deployment.account_sid, own_sid=owner.own_sid,
                               own_token=owner.own_token, deployment=deployment)
    if not form.signed_by(sent_with):
        raise _rejected(sid, form)
    return owner, sent_with


def _keep_early(connection: Connection, callback: Callback, signer: Credentials, now: datetime) -> None:
    """Keep a verified report of a sid not stored yet, with the account that signed it, until the sid is stored."""
    if callback.status in TWILIO_RANK:
        connection.execute(_KEEP_EARLY, dict(sid=callback.sid, account_sid=signer.account_sid, status=callback.status,
                                             **callback.reported(), received_at=now))
    log.info("status %r for a sid not stored yet (%r): kept until it is", callback.status, callback.sid)


def record_status(session: Session, *, sid: str, status: str, num_segments: int | None = None,
                  price: str | None = None, price_unit: str | None = None, error_code: int | None = None,
                  error_message: str | None = None, now: datetime) -> StatusChange | None:
    """Apply a report known to be Twilio's (fetched from Twilio, or a callback verified when it was kept) for the
    message with this sid; None when no message has the sid."""
    connection = session.connection()
    row = run(connection, _MESSAGE_BY_SID, {"sid": sid}).one_or_none()
    if row is None:
        return None
    reported = dict(num_segments=num_segments, price=price, price_unit=price_unit, error_code=error_code,
                    error_message=error_message)
    return _apply(session, row.id, row.account_id, sid, status, reported, now)


def _apply(session: Session, message_id: str, account_id: str, sid: str, status: str, reported: dict,
           now: datetime, *, takes_events: bool = True) -> StatusChange:
    """Apply the report; `takes_events`: False when the account's endpoints were found to take no final message
    event, in this transaction, so none is written."""
    if status not in TWILIO_RANK:
        log.warning("unknown Twilio status %r for %r (%s): ignored", status, sid, message_id)
        return StatusChange(message_id, account_id, became_final=False, changed=False)
    result = run(session.connection(), _APPLY_REPORT, {**_report_parameters(message_id, status, reported), "now": now})
    return _applied(session, message_id, account_id, status, result.rowcount == 1, now, takes_events=takes_events)


def _report_parameters(message_id: str, status: str, reported: dict) -> dict:
    """A report of a status Twilio documents, as _APPLY_REPORT and _APPLY_REPORTS take it."""
    ours = OUR_STATUS_FOR_TWILIO[status]
    return dict(message_id=message_id, rank=TWILIO_RANK[status], twilio_status=status, our_rank=STATUS_RANK[ours],
                ours=ours, **reported)


def _applied(session: Session, message_id: str, account_id: str, status: str, changed: bool, now: datetime, *,
             takes_events: bool) -> StatusChange:
    """What a report did, with its final message event written when it is the one that made the message final."""
    ours = OUR_STATUS_FOR_TWILIO[status]
    if changed and takes_events and ours in MESSAGE_EVENT_FOR_FINAL_STATUS:
        message_event(session, MESSAGE_EVENT_FOR_FINAL_STATUS[ours], message_id, now=now)
    return StatusChange(message_id, account_id, became_final=changed and ours in FINAL_STATUSES, changed=changed)


def _rejected(sid: str, form: SignedForm) -> CallbackRejected:
    log.warning("rejected a status callback for %r naming AccountSid %r: not signed by the credentials it was "
                "sent with", sid, form.account_sid)
    return CallbackRejected("The callback is not signed by the Twilio account of the message it is about.")


def apply_early_statuses(session: Session, sid: str, *, now: datetime) -> str | None:
    """Apply the reports that arrived before `sid` was stored; call it in the unit of work that stores the sid
    (and the message's twilio_account_sid). It takes the sid's lock, then the reports (apply_taken_early_statuses).
    """
    session.flush()  # the sid must be in the database for the reports to find it
    connection = session.connection()
    _lock_sid(connection, sid)
    return apply_taken_early_statuses(
        session, sid, [report._asdict() for report in run(connection, _CLAIM_EARLY, {"sid": sid}).all()], now=now)


def apply_taken_early_statuses(session: Session, sid: str, reports: list[dict], *, now: datetime) -> str | None:
    """Apply `reports`, the early_statuses rows of `sid` (without id, sid and received_at) that this unit of work
    deleted under the sid's lock, after storing the sid: on PostgreSQL the send step takes them in the statement
    that stores it (models.TAKE_EARLY_STATUSES).

    Only reports verified with the token of the account the message was sent with are applied; the others
    are dropped. Returns the message's status afterwards, or None when no report was waiting. A final status
    returned here was reached in this unit of work alone (as `became_final`): its caller settles it.
    """
    if not reports:
        return None
    connection = session.connection()
    sent_with = connection.scalar(select(messages.c.twilio_account_sid).where(messages.c.twilio_sid == sid))
    for report in sorted(reports, key=lambda report: TWILIO_RANK[report["status"]]):
        fields = dict(report)
        if fields.pop("account_sid") != sent_with:
            log.warning("dropped an early %r report for %s: verified for AccountSid %s, sent with %s",
                        report["status"], sid, report["account_sid"], sent_with)
            continue
        record_status(session, sid=sid, **fields, now=now)
    return connection.scalar(select(messages.c.status).where(messages.c.twilio_sid == sid))


_early = EarlyStatus.__table__
_CLAIM_EARLY = delete(_early).where(_early.c.sid == bindparam("sid")).returning(
    _early.c.account_sid, _early.c.status, _early.c.num_segments, _early.c.price, _early.c.price_unit,
    _early.c.error_code, _early.c.error_message)


def purge_early_statuses(session: Session, *, before: datetime) -> int:
    """Forget reports no stored sid claimed (texts sent outside the pipeline); returns how many."""
    result = session.execute(delete(EarlyStatus).where(EarlyStatus.received_at < before)
                             .execution_options(synchronize_session=False))
    return result.rowcount


def _lock_sid(connection: Connection, sid: str) -> None:
    """Serialize the storing of `sid` with reports of it, until the transaction ends (PostgreSQL only)."""
    if connection.dialect.name == "postgresql":
        run(connection, _ADVISORY_LOCK, {"key": sid_lock_key(sid)})


def sid_lock_key(sid: str) -> int:
    """The key of the sid's advisory transaction lock (PostgreSQL's pg_advisory_xact_lock)."""
    return int.from_bytes(hashlib.blake2b(sid.encode(), digest_size=8).digest(), "big", signed=True)


_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
