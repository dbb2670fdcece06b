"""The send step: hold the credits, mark the message `sending`, ask Twilio once, store the sid (and the Twilio
account that owns the message, whose token alone may sign its callbacks).

Each database step is its own unit of work keyed by the message id, so a replayed job changes
nothing. The one step that cannot be undone, Twilio's create, happens only after the message is
`sending` in the database; a `sending` message without a sid is never sent again: it waits for
its status callback or for the sweeper's reconciliation with Twilio.
"""

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Boolean, Connection, Integer, Row, bindparam, case, func, or_, select, true, update
from sqlalchemy.orm import Session

from shared.db import ConnectionWork, Database, any_of_parameter, run
from shared.events.outbox import message_event, takes_any
from shared.ledger import book
from shared.ledger.expiry import utc
from shared.messaging.estimate import sender_type_of_message
from shared.messaging.opt_outs import FROM_TWILIO_21610, opt_out
from shared.messaging.parking import blocked_reason, park_account
from shared.messaging.send_policy import gate_message, gated
from shared.messaging.sites import reject_site_credentials
from shared.messaging.statuses import (
    FINAL_STATUSES,
    OUR_STATUS_FOR_TWILIO,
    apply_early_statuses,
    apply_taken_early_statuses,
    sid_lock_key,
)
from shared.models import Account, DunningIntegration, DunningSiteOptOut, Hold, Message, OptOut
from shared.thread_group_commit import ThreadGroupCommit
from shared.twilio.errors import CredentialsRejected, OutcomeUnknown, PermanentTwilioError, TransientTwilioError

log = logging.getLogger(__name__)
messages = Message.__table__
# A throttle wait this short is slept off in the worker; a longer one re-enqueues the job.
MAX_THROTTLE_SLEEP_SECONDS = 1.0
MAX_CLAIM_BATCH = 32  # claims in one transaction at most (a worker process has 16 threads by default)


@dataclass(frozen=True)
class _SlotBooked:
    """The throttle booked this send a slot too far ahead to sleep off; the message row records it."""

    seconds: float
    sender: str


class SendLater(Exception):
    """The job should run again after `delay_seconds` (None: back off).

    `slot_booked` means the sender throttle already booked this send's slot at that delay: the next
    run must not book another.
    """

    def __init__(self, reason: str, delay_seconds: float | None, *, slot_booked: bool = False):
        super().__init__(reason)
        self.delay_seconds = delay_seconds
        self.slot_booked = slot_booked


@dataclass(frozen=True)
class Claim:
    """What the Twilio call needs, read inside the claiming transaction."""

    account_id: str
    to: str
    from_: str
    body: str
    media_urls: list[str] | None
    twilio_account_sid: str | None
    twilio_auth_token: str | None


def utcnow() -> datetime:
    return datetime.now(UTC)


def send_message(database: Database, message_id: str, *, gateway_for: Callable[[str | None, str | None], object],
                 throttle, hold_ttl_seconds: int, slot_booked: bool = False,
                 settle_final: Callable[[Session, str], None] | None = None,
                 now: Callable[[], datetime] = utcnow, claims: "Claims | None" = None) -> str:
    """Send one message; returns the status it is left in. Raises SendLater when it must run again.

    `gateway_for(account_sid, auth_token)` gives the gateway for the account's own Twilio
    credentials (None, None: the deployment's). When reports that beat the sid made the message final,
    `settle_final(session, message_id)` settles it in the transaction that stores the sid (None: the
    caller settles it). `claims`: the process's group-committed claims (None: claimed alone).
    """
    claim = _claimed(database, claims, message_id, None if slot_booked else throttle, hold_ttl_seconds, now)
    if isinstance(claim, _SleepFirst):  # the sender's slot is a moment ahead, booked and recorded: no second one
        time.sleep(claim.seconds)
        claim = _claimed(database, claims, message_id, None, hold_ttl_seconds, now)
    if isinstance(claim, _SlotBooked):  # committed first, so the sweeper knows this message's job is delayed
        raise SendLater(f"sender {claim.sender} is at its throughput limit", claim.seconds, slot_booked=True)
    if isinstance(claim, str):
        return claim
    gateway = gateway_for(claim.twilio_account_sid, claim.twilio_auth_token)
    try:
        sent = gateway.send(to=claim.to, from_=claim.from_, body=claim.body, media_urls=claim.media_urls)
    except OutcomeUnknown as error:  # Twilio may have it: the callback or the sweeper's reconciliation decides
        log.warning("message %s: %s", message_id, error)
        return "sending"
    except TransientTwilioError as error:
        with database.unit_of_work() as session:
            _release(session, message_id, now())
        raise SendLater(f"Twilio is unavailable: {error}", error.retry_after) from error
    except CredentialsRejected as error:
        with database.unit_of_work() as session:
            return _block_account(session, message_id, str(error), now())
    except PermanentTwilioError as error:
        with database.unit_of_work() as session:
            _fail(session, message_id, error, now())
        return "failed"
    return _store(database, message_id, sent, now(), settle_final)


def _store(database: Database, message_id: str, sent, now: datetime,
           settle_final: Callable[[Session, str], None] | None) -> str:
    """Store the sid Twilio answered: on PostgreSQL as one statement of its own when nothing comes with it (the
    message still `sending`, no report beat the sid, no endpoint of the account takes message.sent, Twilio's status
    not final), nearly always; else in a transaction with all that comes with it. The status the message is left in."""
    parameters = _store_parameters(message_id, sent, now)
    if database.is_postgres and parameters["ours"] not in FINAL_STATUSES:
        with database.one_statement() as connection:
            stored = run(connection, _STORE_SID_ALONE, parameters).one_or_none()
        if stored is not None:
            return stored.status
    with database.connection_unit_of_work() as work:
        status = _store_sid(work, message_id, sent, now)
        if status in FINAL_STATUSES and settle_final is not None:
            settle_final(work.session, message_id)
    return status


accounts, holds, sites = Account.__table__, Hold.__table__, DunningIntegration.__table__
# Prebuilt: it runs for every message. The message (locked), what the send step needs of its account, whether
# the recipient opted out, and the state of a hold a campaign chunk already reserved: one statement. A message
# from a dunning site goes with the site's credentials, and its recipient's STOP to that site counts too.
_CLAIMING = (
    select(messages.c.id, messages.c.account_id, messages.c.user_id, messages.c.status, messages.c.twilio_sid,
           messages.c.to, messages.c["from"].label("from_"), messages.c.body, messages.c.media_urls,
           messages.c.campaign_id, messages.c.send_at, messages.c.slot_at, messages.c.hold_id, messages.c.attempts,
           messages.c.segments, messages.c.credits_estimated,
           accounts.c.status.label("account_status"), accounts.c.status_reason, accounts.c.sending_blocked_reason,
           accounts.c.quiet_hours_scope, accounts.c.timezone, accounts.c.quiet_start, accounts.c.quiet_end,
           case((sites.c.id.is_not(None), sites.c.account_sid), else_=accounts.c.twilio_account_sid)
           .label("twilio_account_sid"),
           case((sites.c.id.is_not(None), sites.c.auth_token), else_=accounts.c.twilio_auth_token)
           .label("twilio_auth_token"),
           holds.c.status.label("hold_status"), sender_type_of_message(messages, accounts).label("sender_type"),
           or_(select(OptOut.id).where(OptOut.account_id == messages.c.account_id, OptOut.phone == messages.c.to)
               .exists(),
               select(DunningSiteOptOut.phone).where(DunningSiteOptOut.site_id == messages.c.dunning_site_id,
                                                     DunningSiteOptOut.phone == messages.c.to).exists())
           .label("opted_out"))
    .join(accounts, accounts.c.id == messages.c.account_id)
    .outerjoin(sites, sites.c.id == messages.c.dunning_site_id)
    .outerjoin(holds, holds.c.id == messages.c.hold_id)
    .order_by(messages.c.id)
    .with_for_update(of=messages)
)


@functools.cache
def _claiming(dialect: str):
    """Prebuilt per dialect: the messages of a list of ids, read and locked in one statement."""
    return _CLAIMING.where(any_of_parameter(messages.c.id, "message_ids", dialect))


_SENDING = update(messages).where(messages.c.id == bindparam("message_id")).values(
    status="sending", hold_id=bindparam("hold_id"), attempts=messages.c.attempts + 1, error_code=None,
    error_message=None, slot_at=func.coalesce(bindparam("slot_at", type_=messages.c.slot_at.type), messages.c.slot_at),
    updated_at=bindparam("now"))
# _SENDING as book.reserve_each's `then` on PostgreSQL, with the holds it answers (`held`, each referring to its
# message): one round trip for both. Its parameters: the time, the messages' ids and the slots they took.
_SENDING_EACH = (
    "UPDATE messages SET status = 'sending', hold_id = held.id, attempts = messages.attempts + 1, error_code = NULL,"
    " error_message = NULL, slot_at = coalesce(m.slot_at, messages.slot_at), updated_at = %s"
    " FROM held JOIN unnest(%s::text[], %s::timestamptz[]) AS m(message_id, slot_at) ON m.message_id = held.reference"
    " WHERE messages.id = m.message_id"
)
_SLOT_BOOKED = update(messages).where(messages.c.id == bindparam("message_id")).values(slot_at=bindparam("slot_at"))
_ACCOUNT_STATUS = select(accounts.c.status, accounts.c.status_reason).where(accounts.c.id == bindparam("account_id"))


@dataclass(frozen=True)
class _Account:
    """The account columns the send policy and `blocked_reason` read, from the claiming row."""

    status: str
    status_reason: str | None
    sending_blocked_reason: str | None
    quiet_hours_scope: str
    timezone: str
    quiet_start: str | None
    quiet_end: str | None


def _claimed(database: Database, claims: "Claims | None", message_id: str, throttle, hold_ttl_seconds: int,
             clock: Callable[[], datetime]) -> "Claim | _SlotBooked | _SleepFirst | str":
    if claims is not None:
        return claims.claim(message_id, throttle)
    return _claim_together(database, [(message_id, throttle)], hold_ttl_seconds, clock())[0]


def _claim_together(database: Database, requests: list[tuple[str, object]], hold_ttl_seconds: int,
                    now: datetime) -> list:
    with database.connection_unit_of_work() as work:
        return _claim_all(work, requests, hold_ttl_seconds, now)


class Claims:
    """The claims of one process's send threads, group-committed (shared.thread_group_commit): those that come while
    a batch is claimed are claimed together in the next, in one transaction, their holds in one call of the ledger
    (book.reserve_each). Under load the account rows they share are then locked once a batch, not once a message."""

    def __init__(self, database: Database, *, hold_ttl_seconds: int, max_batch: int = MAX_CLAIM_BATCH,
                 clock: Callable[[], datetime] = utcnow):
        self._database, self._hold_ttl_seconds, self._clock = database, hold_ttl_seconds, clock
        self._group = ThreadGroupCommit(self._claim_batch, max_batch=max_batch)

    def claim(self, message_id: str, throttle) -> "Claim | _SlotBooked | _SleepFirst | str":
        """`throttle` None: the message's sender slot is booked already."""
        return self._group.submit((message_id, throttle))

    def _claim_batch(self, requests: list[tuple[str, object]]) -> list:
        return _claim_together(self._database, requests, self._hold_ttl_seconds, self._clock())


@dataclass(frozen=True)
class _SleepFirst:
    """The throttle booked this send's slot a moment ahead (recorded on the message): the job sleeps it off, outside
    any transaction, then claims the message again without booking another."""

    seconds: float


@dataclass(frozen=True)
class _Claimable:
    """A message past every check: its hold is reserved (or a campaign chunk's, renewed: `hold_id`), then it is
    marked `sending`."""

    message: Row
    slot_at: datetime | None
    hold_id: int | None


def _claim_all(work: ConnectionWork, requests: list[tuple[str, object]], hold_ttl_seconds: int,
               now: datetime) -> list[Claim | _SlotBooked | _SleepFirst | str]:
    """Claim each (message id, throttle) of `requests` in the caller's unit of work: book its sender's throughput
    (unless throttle is None: booked already), hold the estimate and mark it `sending`. Else the status it stays in
    (or is parked in), or when its job is to run.

    The messages are read and locked in one statement, in their ids' order; their holds are reserved in one call
    (book.reserve_each), which on PostgreSQL marks them `sending` in the same round trip. A message asked for twice
    is claimed once: the second finds it taken (`skipped`), as it would have after the first's commit.

    A booked slot is recorded on the message (`slot_at`). Too far ahead to sleep off, nothing else changes: the job
    runs again then, and the sweeper leaves the message alone until that slot has passed. A spare job (a
    redelivery, a second enqueue) that finds the slot still ahead waits for it too instead of booking another, so a
    message holds at most one future slot of its sender.
    """
    connection = work.connection  # an ORM session (work.session) only where a rarer branch needs one
    rows = {row.id: row for row in run(connection, _claiming(connection.dialect.name),
                                       {"message_ids": sorted({message_id for message_id, _ in requests})}).all()}
    outcomes: list = [None] * len(requests)
    claimable: list[tuple[int, _Claimable]] = []
    for i in sorted(range(len(requests)), key=lambda i: requests[i][0]):
        message_id, throttle = requests[i]
        decided = _decide(work, rows.pop(message_id, None), throttle, hold_ttl_seconds, now)
        if isinstance(decided, _Claimable):
            claimable.append((i, decided))
        else:
            outcomes[i] = decided
    fresh = [(i, claim) for i, claim in claimable if claim.hold_id is None]
    on_postgres = connection.dialect.name == "postgresql"
    marking = (_SENDING_EACH, (now, [claim.message.id for _, claim in fresh], [claim.slot_at for _, claim in fresh]))
    holds = book.reserve_each(connection, [book.Reservation(
        claim.message.account_id, claim.message.credits_estimated,
        f"message:{claim.message.id}:hold:{claim.message.attempts}", hold_ttl_seconds, user_id=claim.message.user_id,
        reference=claim.message.id) for _, claim in fresh], now=now, then=marking if on_postgres else None)
    to_mark = [claim for _, claim in claimable if claim.hold_id is not None]
    for (i, claim), hold in zip(fresh, holds):
        if isinstance(hold, book.HoldView):
            if not on_postgres:
                to_mark.append(replace(claim, hold_id=hold.id))
        else:
            outcomes[i] = _refused(work, claim.message, hold, now)
    if to_mark:
        connection.execute(_SENDING, [{"message_id": claim.message.id, "hold_id": claim.hold_id,
                                       "slot_at": claim.slot_at, "now": now} for claim in to_mark])
    for i, claim in claimable:
        if outcomes[i] is None:
            message = claim.message
            outcomes[i] = Claim(account_id=message.account_id, to=message.to, from_=message.from_, body=message.body,
                                media_urls=message.media_urls, twilio_account_sid=message.twilio_account_sid,
                                twilio_auth_token=message.twilio_auth_token)
    return outcomes


def _decide(work: ConnectionWork, message: Row | None, throttle, hold_ttl_seconds: int,
            now: datetime) -> _Claimable | _SlotBooked | _SleepFirst | str:
    """What the send policy, the account and the sender's throughput say of a message read for claiming."""
    connection = work.connection
    if message is None or message.status != "accepted" or message.twilio_sid is not None:
        return "skipped"  # only `accepted` messages are sent; the sweeper makes scheduled ones `accepted`
    account = _Account(message.account_status, message.status_reason, message.sending_blocked_reason,
                       message.quiet_hours_scope, message.timezone, message.quiet_start, message.quiet_end)
    if account.status == "canceled":
        return _cancel(work.session, message, account, now)
    reason = blocked_reason(account)
    if reason:
        return _park(connection, message.id, reason, now)
    if gated(message, account, recipient_opted_out=message.opted_out) and (waiting := gate_message(
            work.session, message, account, recipient_opted_out=message.opted_out, now=now)):
        return _write(connection, message.id, waiting)
    slot_at = None  # the sender's slot this send took, recorded with it (None: booked by an earlier run)
    if throttle is not None:
        if message.slot_at is not None and utc(message.slot_at) > now:  # booked by another job: no second slot
            return _SlotBooked((utc(message.slot_at) - now).total_seconds(), message.from_)
        wait = throttle.reserve(message.from_, message.sender_type, message.segments)
        slot_at = now + timedelta(seconds=wait)
        if wait > 0:  # recorded at once, so a spare job of this message waits for this slot instead of another
            connection.execute(_SLOT_BOOKED, {"message_id": message.id, "slot_at": slot_at})
            return _SlotBooked(wait, message.from_) if wait > MAX_THROTTLE_SLEEP_SECONDS else _SleepFirst(wait)
    hold_id = None  # a hold a campaign chunk reserved is used if still pending, its TTL counted from now
    if message.hold_status == "pending" and book.renew(connection, message.hold_id,
                                                       expires_at=now + timedelta(seconds=hold_ttl_seconds)):
        hold_id = message.hold_id
    return _Claimable(message, slot_at, hold_id)


def _refused(work: ConnectionWork, message: Row, refusal: Exception, now: datetime) -> str:
    """No room for the message's hold: parked until the account may pay again, or canceled with its account."""
    latest = work.connection.execute(_ACCOUNT_STATUS, {"account_id": message.account_id}).one()
    if latest.status == "canceled":  # canceled while this claim waited for the account's lock
        return _cancel(work.session, message, latest, now)
    return _park(work.connection, message.id, str(refusal), now)


def _write(connection: Connection, message_id: str, changes: dict) -> str:
    """Write a decision about the claimed message (its status and why); returns the status."""
    connection.execute(update(messages).where(messages.c.id == message_id).values(**changes))
    return changes["status"]


def _cancel(session: Session, message: Row, account, now: datetime) -> str:
    """The account was canceled after this message was accepted: it is never sent nor charged."""
    if message.hold_status == "pending":
        book.void(session, message.hold_id, now=now)
    return _write(session.connection(), message.id, dict(
        status="canceled", error_message=f"Account is canceled: {account.status_reason or 'no reason given'}."[:500],
        credits_charged=0 if message.hold_id else None, updated_at=now))


def _park(connection: Connection, message_id: str, reason: str, now: datetime) -> str:
    return _write(connection, message_id, dict(status="parked", error_message=reason, updated_at=now))


def _sending(session: Session, message_id: str) -> Message | None:
    """The message if it is still `sending` with no sid: the only state the outcome steps may change."""
    message = session.get(Message, message_id, with_for_update=True)
    if message is None or message.status != "sending" or message.twilio_sid is not None:
        return None
    return message


def _release(session: Session, message_id: str, now: datetime) -> None:
    """Twilio did not take the message: give the hold back and let the retry claim it afresh."""
    message = _sending(session, message_id)
    if message is None:
        return
    _void_hold(session, message, now)
    message.status = "accepted"
    message.updated_at = now


def _fail(session: Session, message_id: str, error: PermanentTwilioError, now: datetime) -> None:
    """A permanent refusal: nothing is charged, nothing is retried; 21610 also records the opt-out."""
    message = _sending(session, message_id)
    if message is None:
        return
    _void_hold(session, message, now)
    message.status = "failed"
    message.error_code = error.code
    message.error_message = error.message[:500]
    message.credits_charged = 0
    message.updated_at = now
    message_event(session, "message.failed", message_id, now=now)
    if error.recipient_opted_out:
        opt_out(session, message.account_id, message.to, FROM_TWILIO_21610)


def _block_account(session: Session, message_id: str, reason: str, now: datetime) -> str:
    """20003: the account's Twilio credentials are wrong; nothing of it sends until they are replaced. A dunning
    site's message fails instead, uncharged, and marks only that site broken (shared.messaging.sites)."""
    message = _sending(session, message_id)
    if message is None:
        return "parked"
    _void_hold(session, message, now)
    if message.dunning_site_id is not None:
        site = session.get(DunningIntegration, message.dunning_site_id, with_for_update=True)
        reject_site_credentials(session, site.id, site.credential_version, now=now)
        message.status, message.error_code, message.credits_charged, message.updated_at = "failed", 20003, 0, now
        message.error_message = f"Twilio rejected the site's credentials (20003: {reason})."[:500]
        message_event(session, "message.failed", message_id, now=now)
        return "failed"
    message.status = "accepted"
    account = session.get(Account, message.account_id, with_for_update=True)
    account.sending_blocked_reason = (f"Twilio rejected the account's credentials (20003: {reason})."
                                      " Sending resumes when they are updated.")[:500]
    park_account(session, account.id, account.sending_blocked_reason, now=now)
    return "parked"


_STORE_SID = (
    update(messages).where(messages.c.id == bindparam("message_id"), messages.c.twilio_sid.is_(None))
    .values(twilio_sid=bindparam("sid"), twilio_account_sid=bindparam("account_sid"),
            twilio_status=func.coalesce(messages.c.twilio_status, bindparam("twilio_status")),
            twilio_segments=func.coalesce(messages.c.twilio_segments, bindparam("num_segments", type_=Integer)),
            status=case((messages.c.status == "sending", bindparam("ours")), else_=messages.c.status),
            updated_at=bindparam("now"))
)
# On PostgreSQL it also answers whether an endpoint of the account takes message.sent (if none does, no event
# statement follows), and the row it stored takes the sid's lock and the reports that beat it
# (models.TAKE_EARLY_STATUSES): one round trip, not four. SQLite names RETURNING's columns without their tables,
# which the check's subquery cannot do with: there the event's own statement checks, and apply_early_statuses
# reads the reports.
_STORE_SID_RETURNING = {
    "postgresql": _STORE_SID.returning(messages.c.status,
                                       takes_any(messages.c.account_id, ["message.sent"]).label("takes_sent"),
                                       func.take_early_statuses(bindparam("sid"), bindparam("lock_key"))
                                       .label("early")),
    "sqlite": _STORE_SID.returning(messages.c.status, true().label("takes_sent")),
}


# _STORE_SID as a statement of its own (autocommit, PostgreSQL), where nothing comes with it: it stores nothing, and
# answers no row, if the message is no longer `sending`, if an endpoint of the account takes message.sent, or if
# reports beat the sid (models.EARLY_STATUSES_WAITING, under the sid's lock, which it holds until it commits).
_STORE_SID_ALONE = _STORE_SID.where(
    messages.c.status == "sending", ~takes_any(messages.c.account_id, ["message.sent"]),
    ~func.early_statuses_waiting(bindparam("sid"), bindparam("lock_key"), type_=Boolean),
).returning(messages.c.status)


def _store_parameters(message_id: str, sent, now: datetime) -> dict:
    return dict(message_id=message_id, sid=sent.sid, account_sid=sent.account_sid, twilio_status=sent.status,
                num_segments=sent.num_segments or None, ours=OUR_STATUS_FOR_TWILIO.get(sent.status, "queued"),
                now=now, lock_key=sid_lock_key(sent.sid))


def _store_sid(work: ConnectionWork, message_id: str, sent, now: datetime) -> str:
    """Store the sid and the Twilio account that owns the message (its callbacks must come signed by it), then
    apply the reports that beat it; the status the message is left in (final: the caller settles it)."""
    connection = work.connection
    stored = run(connection, _STORE_SID_RETURNING[connection.dialect.name],
                 _store_parameters(message_id, sent, now)).one_or_none()
    if stored is None:
        return "skipped"
    if stored.takes_sent:
        message_event(work.session, "message.sent", message_id, now=now)
    if connection.dialect.name != "postgresql":
        return apply_early_statuses(work.session, sent.sid, now=now) or stored.status
    if stored.early:
        return apply_taken_early_statuses(work.session, sent.sid, stored.early, now=now) or stored.status
    return stored.status


def _void_hold(session: Session, message: Message, now: datetime) -> None:
    hold = session.get(Hold, message.hold_id) if message.hold_id else None
    if hold is not None and hold.status == "pending":
        book.void(session, hold.id, now=now)

