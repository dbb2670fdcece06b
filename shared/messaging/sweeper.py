"""The sweeper: the periodic safety net that makes every accepted message end final.

- Scheduled messages whose `send_at` has come are released (`accepted`) and enqueued; accepted
  messages whose job was lost (intake's enqueue failed, a worker died holding it) are enqueued
  again. The send step is idempotent, so a spare job is harmless.
- Holds past their TTL are expired and reconciled with Twilio: the message is fetched, its status
  recorded (one whose record Twilio no longer has counts as delivered: `fetch_or_gone`), and it is settled
  or voided (and resent from toll-free when it qualifies, as the settle job does). A `sending` message without
  a sid (the worker died after asking Twilio, or Twilio's answer was lost) is looked up in Twilio's list: found,
  it gets its sid and status; not found, Twilio never took it, so it is `accepted` again and sent afresh (its
  expired hold charged nothing).
- Final messages whose hold is still pending lost their settle job: they are handed back to settle.
- A text charged at `sent` (its hold outlived its TTL before Twilio's final status came) whose final status never
  came (a callback lost, a confirmation job lost with a killed worker) is asked of Twilio: after `stale_after`, then
  each time it has waited as long again as it had since its charge, for a day from the charge (a few asks each;
  Twilio leaves some texts `sent` for good, where the carrier reports no delivery). A final answer is settled as its
  callback would have been: a text carriers filtered gets its toll-free resend.
- Texts charged at `sent` are asked of Twilio for ASKING_SECONDS a sweep at most.
- Once Twilio failed an ask (an overdue hold's or a charged text's) with a "try again later", or refused the
  credentials it was asked with, a sweep asks nothing more about the texts of that tenant's own Twilio account, or
  nothing more at all if it was the deployment's (`shared.asking`): the rest wait for the next sweep. Each sweep
  takes the records it asks about in turns across accounts (every account's oldest first), so that accounts whose
  asks are refused or skipped take a place each in it, not the whole of it.
- Parked messages of accounts that may send again (unlocked by a purchase, credentials fixed) are
  released.
- Status callbacks kept for a sid that never got stored are forgotten after a day.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, case, literal, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from shared.asking import Asking, in_turns
from shared.db import Database, epoch_seconds
from shared.ledger import book
from shared.ledger.expiry import utc
from shared.messaging.credentials import credentials_keeping
from shared.messaging.messages import send_delay_ms
from shared.messaging.parking import accounts_with_parked_messages, release_parked
from shared.messaging.rates import RateCard
from shared.messaging.reprocessing import resend_from_toll_free
from shared.messaging.settlement import CHARGED_STATUSES, VOIDED_STATUSES, settle_message
from shared.messaging.sites import site_credentials
from shared.messaging.statuses import (
    FINAL_STATUSES,
    StatusChange,
    apply_early_statuses,
    purge_early_statuses,
    record_status,
)
from shared.models import Account, Hold, Message
from shared.twilio.errors import NOT_FOUND, CredentialsRejected, PermanentTwilioError, TransientTwilioError
from shared.twilio.gateway import TwilioMessage

log = logging.getLogger(__name__)

BATCH = 500
CLOCK_SKEW = timedelta(minutes=5)  # between our clock and Twilio's, when looking for a message by time
KEEP_EARLY_STATUSES = timedelta(days=1)
KEEP_ASKING = timedelta(days=1)  # how long a text charged at 'sent' is asked of Twilio for its final status
ASKS_PER_SWEEP = 100
# How long one sweep asks Twilio about charged-at-sent texts, at most (the first ask always goes): sweeps come every
# 15 s, and a hundred asks at Twilio's usual latency would outlast that, so that the next sweep asked the same texts.
ASKING_SECONDS = 5.0
RETRY_LATER = "retry later"  # what reconcile and ask_final_status answer when Twilio failed with a "try again later"
CREDENTIALS_REFUSED = "credentials refused"  # how their answer starts when Twilio refused the credentials asked with


@dataclass
class SweepReport:
    enqueued: list[str] = field(default_factory=list)
    reconciled: dict[str, str] = field(default_factory=dict)  # message id -> what reconciliation did
    unparked: list[str] = field(default_factory=list)
    to_settle: list[str] = field(default_factory=list)  # final messages whose settle job was lost: enqueue it
    asked: dict[str, str] = field(default_factory=dict)  # message charged at 'sent' -> what Twilio answered


def sweep(database: Database, *, enqueue: Callable[[str], None],
          gateway_for: Callable[[str | None, str | None], object], rate_card: RateCard, now: datetime,
          stale_after: timedelta) -> SweepReport:
    """One pass. `enqueue(message_id)` sends the send job; `stale_after` is how long a waiting message may wait.

    The caller enqueues the settle job of each message in `report.to_settle`.
    """
    report = SweepReport()
    report.enqueued = _release_due(database, now)
    with database.unit_of_work() as session:
        report.enqueued += _stale_accepted(session, now - stale_after)
        report.to_settle = _final_but_unsettled(session, now - stale_after)
    asking = Asking()
    for hold_id, message_id, owner in asking.each(_overdue_holds(database, now), owner=lambda hold: hold[-1]):
        report.reconciled[message_id] = reconcile(database, message_id, hold_id, gateway_for=gateway_for,
                                                  rate_card=rate_card, now=now, enqueue=enqueue)
        if _ask_no_more(report.reconciled[message_id]):
            asking.struggled(owner)
    with database.unit_of_work() as session:
        account_ids = accounts_with_parked_messages(session)
    for account_id in account_ids:
        with database.unit_of_work() as session:
            report.unparked += release_parked(session, account_id, now=now)
    with database.unit_of_work() as session:
        purge_early_statuses(session, before=now - KEEP_EARLY_STATUSES)
    for message_id in report.enqueued + report.unparked:
        enqueue(message_id)
    with database.unit_of_work() as session:  # last: Twilio stalling here holds up nothing above
        unconfirmed = _charged_before_final(session, now, stale_after)
    for message_id, owner in asking.each(unconfirmed, owner=lambda text: text[-1], seconds=ASKING_SECONDS):
        report.asked[message_id] = ask_final_status(database, message_id, gateway_for=gateway_for,
                                                    rate_card=rate_card, now=now, enqueue=enqueue)
        if _ask_no_more(report.asked[message_id]):
            asking.struggled(owner)
    return report


def _ask_no_more(answer: str) -> bool:
    """Whether an answer says this sweep should ask no more with the same credentials: Twilio asked to try again
    later, or refused the credentials (revoked, say: every other ask with them would be refused too, and hundreds
    of refused requests a sweep is what gets a caller blocked)."""
    return answer == RETRY_LATER or answer.startswith(CREDENTIALS_REFUSED)


def _release_due(database: Database, now: datetime) -> list[str]:
    """Scheduled messages whose time has come, made `accepted`: every one, batch after batch, so that a campaign held
    back by quiet hours goes out when its recipients' window opens, not a batch per sweep.

    A batch is one statement and its own transaction. Its sub-select locks the messages (checking again a row another
    transaction changed meanwhile), which it then names by id alone: named by a list of ids and the status, they were
    taken from the status index, every scheduled message's entry read for each batch, whenever PostgreSQL's
    statistics took scheduled messages to be few (a big table, a campaign scheduled since it was analyzed). Committed,
    a batch's old entries are marked dead by the next batch's scan, which reads each of them once; in one transaction
    every batch read them all again. A batch that fails after others ends the release: those are committed, and
    enqueued by this sweep. A message released but not enqueued (the sweep killed meanwhile) is `accepted` and
    waiting: a later sweep enqueues it as stale.
    """
    due: list[str] = []
    while True:
        try:
            batch = _release_batch(database, now)
        except SQLAlchemyError as error:
            if not due:
                raise
            log.warning("releasing scheduled messages stopped after %d (%r): the rest at the next sweep",
                        len(due), error)
            return due  # committed: enqueued now rather than found stale
        if not batch:
            return due
        due += batch
        database.yield_to_writers()


def _release_batch(database: Database, now: datetime) -> list[str]:
    with database.unit_of_work() as session:
        return list(session.scalars(
            update(Message).where(Message.id.in_(
                select(Message.id).where(Message.status == "scheduled", Message.send_at <= now).limit(BATCH)
                .with_for_update()))
            .values(status="accepted", updated_at=now).returning(Message.id)
            .execution_options(synchronize_session=False)))


def _stale_accepted(session: Session, before: datetime) -> list[str]:
    """Accepted messages waiting since `before`: their send job was lost. A message waiting for a booked sender slot
    is stale only once that slot has passed."""
    return list(session.scalars(
        select(Message.id).where(Message.status == "accepted", Message.updated_at <= before,
                                 or_(Message.slot_at.is_(None), Message.slot_at <= before))
        .order_by(Message.updated_at).limit(BATCH)
    ))


def release_scheduled(session: Session, message_id: str, *, now: datetime) -> int | None:
    """The delayed job of one scheduled message: make it `accepted` once its time has come.

    Returns 0 when released (the caller enqueues its send), the milliseconds still to wait when the job
    came early, and None when there is nothing to do (not scheduled any more, or the sweeper's to release).
    """
    message = session.get(Message, message_id, with_for_update=True)
    if message is None or message.status != "scheduled":
        return None
    wait_ms = send_delay_ms(message.send_at, now)
    if wait_ms == 0:
        message.status = "accepted"
        message.updated_at = now
    return wait_ms


def _final_but_unsettled(session: Session, before: datetime) -> list[str]:
    """Messages final for a while whose hold is still pending: their settle job was never enqueued or was lost."""
    return list(session.scalars(
        select(Message.id).join(Hold, Message.hold_id == Hold.id)
        .where(Hold.status == "pending", Message.status.in_(FINAL_STATUSES), Message.credits_charged.is_(None),
               Message.updated_at <= before)
        .limit(BATCH)
    ))


def _asked_of():
    """Whose Twilio account a text is asked of, as shared.asking takes it: its account's, if that account or the
    text's dunning site has credentials of its own (a tenant's Twilio failing holds up that tenant alone), else None,
    the deployment's."""
    return case((and_(Message.dunning_site_id.is_(None), Account.twilio_account_sid.is_(None)), None),
                else_=Message.account_id)


def _charged_before_final(session: Session, now: datetime, stale_after: timedelta) -> list[tuple[str, str | None]]:
    """Texts charged at 'sent' (their hold resolved then) for less than KEEP_ASKING, left alone since `stale_after`
    and since as long as they had waited when last asked (or charged): ASKS_PER_SWEEP at most, in turns across
    accounts (`shared.asking.in_turns`), longest left alone first. All of it in the statement: texts not due yet,
    however many, never stand before those that are. A text's updated_at is its charge's time or later, so the day's
    bound on it (the index's range) leaves out none that is due."""
    seconds = epoch_seconds(session)
    due = (
        select(Message.id, _asked_of().label("owner"))
        .join(Hold, Hold.id == Message.hold_id).join(Account, Account.id == Message.account_id)
        .where(Message.status == "sent", Message.updated_at.between(now - KEEP_ASKING, now - stale_after),
               Message.credits_charged.is_not(None), Message.twilio_sid.is_not(None),
               Hold.resolved_at >= now - KEEP_ASKING,
               2 * seconds(Message.updated_at) <= seconds(literal(now, Message.updated_at.type))
               + seconds(Hold.resolved_at)))
    return [tuple(row) for row in session.execute(
        in_turns(due, Message.account_id, Message.updated_at, limit=ASKS_PER_SWEEP))]


def ask_final_status(database: Database, message_id: str, *, gateway_for, rate_card: RateCard, now: datetime,
                     enqueue: Callable[[str], None]) -> str:
    """Record what Twilio says of a text charged at 'sent' (a record Twilio no longer has counts as delivered). Its
    charge stands; a final status is settled all the same, as its callback would have been, for what follows it: a
    text carriers filtered gets its toll-free resend (`enqueue` sends its job). When the answer changes nothing the
    text is marked asked (its updated_at), so that it waits as long again before the next ask."""
    with database.read_only() as session:
        message = session.get(Message, message_id)
        sid, credentials = message.twilio_sid, owner_credentials(session, message)
    try:
        fetched = fetch_or_gone(gateway_for(*credentials), sid)
        answer = fetched.status
    except TransientTwilioError:
        return RETRY_LATER
    except CredentialsRejected as error:
        fetched, answer = None, f"{CREDENTIALS_REFUSED}: {error}"
    except PermanentTwilioError as error:
        fetched, answer = None, f"fetch refused: {error}"
    resend = None
    with database.unit_of_work() as session:
        change = None if fetched is None else record_fetched(session, fetched, now)
        if change is None or not change.changed:
            session.execute(update(Message).where(Message.id == message_id, Message.status == "sent")
                            .values(updated_at=now).execution_options(synchronize_session=False))
        elif change.became_final:
            settled = settle_message(session, message_id, rate_card=rate_card, now=now)
            resend = resend_from_toll_free(session, settled, now=now)
    if resend is not None:
        enqueue(resend)
    return answer


def _overdue_holds(database: Database, now: datetime) -> list[tuple[int, str, str | None]]:
    """(hold, message, whose Twilio account it is asked of: `_asked_of`) of the holds that outlived their TTL and
    whose message is not settled yet, that reconcile has something to do for, in turns across accounts
    (`shared.asking.in_turns`), oldest first. A hold already expired whose message waits unsent (a paused campaign's
    text, a parked one) is left out: reconcile would only answer "waiting" again, and 500 of them at the front of the
    queue kept every sweep from reaching a lost send behind them."""
    overdue = (
        select(Hold.id.label("hold_id"), Message.id.label("message_id"), _asked_of().label("owner"))
        .join(Message, Message.hold_id == Hold.id).join(Account, Account.id == Hold.account_id)
        .where(Hold.status.in_(("pending", "expired")), Hold.expires_at <= now, Message.credits_charged.is_(None),
               or_(Hold.status == "pending", Message.twilio_sid.is_not(None),
                   Message.status.in_(("sending", *CHARGED_STATUSES, *VOIDED_STATUSES)))))
    with database.unit_of_work() as session:
        return [tuple(row) for row in session.execute(
            in_turns(overdue, Hold.account_id, Hold.expires_at, limit=BATCH))]


def reconcile(database: Database, message_id: str, hold_id: int, *, gateway_for, rate_card: RateCard,
              now: datetime, enqueue: Callable[[str], None]) -> str:
    """Expire the hold, ask Twilio what became of the message, then settle or void it; `enqueue` sends the job of
    its toll-free resend, if it gets one."""
    with database.unit_of_work() as session:
        hold = book.expire(session, hold_id, now=now)
        message = session.get(Message, message_id)
        if not _overdue_claim(message, hold, now):
            return "moved on: claimed again since"  # resent by another sweep, or a campaign hold renewed by its send
        sid, status, credentials = message.twilio_sid, message.status, owner_credentials(session, message)
        lookup = dict(to=message.to, from_=message.from_, body=message.body,
                      sent_after=utc(message.updated_at) - CLOCK_SKEW)  # updated when it was claimed for sending
    if status not in CHARGED_STATUSES + VOIDED_STATUSES:
        if sid is None:
            if status != "sending":
                return "waiting"
            try:
                found = gateway_for(*credentials).find(**lookup)
            except TransientTwilioError:
                return RETRY_LATER
            except CredentialsRejected as error:
                return f"{CREDENTIALS_REFUSED}: {error}"
            except PermanentTwilioError as error:
                return f"find refused: {error}"
            with database.unit_of_work() as session:
                adopted = _adopt(session, message_id, hold_id, found, now)
            if not adopted:
                enqueue(message_id)
                return "sent again: Twilio never took it"
        else:
            try:
                fetched = fetch_or_gone(gateway_for(*credentials), sid)
            except TransientTwilioError:
                return RETRY_LATER
            except CredentialsRejected as error:
                return f"{CREDENTIALS_REFUSED}: {error}"
            except PermanentTwilioError as error:
                return f"fetch refused: {error}"
            with database.unit_of_work() as session:
                record_fetched(session, fetched, now)
    with database.unit_of_work() as session:
        settled = settle_message(session, message_id, rate_card=rate_card, now=now)
        resend = resend_from_toll_free(session, settled, now=now)
    if resend is not None:
        enqueue(resend)
    return settled.outcome


def owner_credentials(session: Session, message: Message) -> tuple[str | None, str | None]:
    """The credentials of the Twilio account that owns the message, as `gateway_for` takes them: the account's own
    unless the message records another (it went out with the deployment's before the account brought its own:
    (None, None)); a dunning site's message is the site's Twilio account's."""
    if message.dunning_site_id is not None:
        return site_credentials(session, message.dunning_site_id)
    return credentials_keeping(message.twilio_account_sid, session.get(Account, message.account_id))


def fetch_or_gone(gateway, sid: str) -> TwilioMessage:
    """Twilio's record of a message whose sid it gave us. One it no longer has was deleted by the Twilio account that
    owns it (creditq deletes none), after Twilio took the text: taken as delivered, at the segments known (Twilio's
    answer to the create, else the estimate), so that deleting a record never makes a text free."""
    try:
        return gateway.fetch(sid)
    except PermanentTwilioError as error:
        if error.code != NOT_FOUND:
            raise
    log.warning("Twilio has no record of %s, which it took: charged as delivered, at the segments known", sid)
    return TwilioMessage(sid=sid, account_sid="", status="delivered", num_segments=None, price=None, price_unit=None,
                         error_code=None, error_message=None)


def record_fetched(session: Session, fetched: TwilioMessage, now: datetime) -> StatusChange | None:
    """Apply Twilio's record of a message, as a fetch or its list answered it."""
    return record_status(session, sid=fetched.sid, status=fetched.status, num_segments=fetched.num_segments,
                  error_code=fetched.error_code, error_message=fetched.error_message,
                  price=fetched.price, price_unit=fetched.price_unit, now=now)


def _overdue_claim(message: Message, hold: book.HoldView, now: datetime) -> bool:
    """The message is still in the claim whose hold outlived its TTL: a claim since (a resend, a new hold) or a
    campaign hold its send renewed (same hold, later expiry) may be on its way to Twilio, missing from its list but
    not lost."""
    return message.hold_id == hold.id and utc(hold.expires_at) <= now


def _adopt(session: Session, message_id: str, hold_id: int, found: list[TwilioMessage], now: datetime) -> bool:
    """Give a `sending` message without a sid the first of Twilio's matches no other message has; False when
    there is none: Twilio never took it (the create stalled or failed unanswered, or the worker died before it
    left), so the message is `accepted` again for a fresh send, its expired hold having charged nothing.

    Only the claim whose hold expired is judged (`_overdue_claim`).
    """
    message = session.get(Message, message_id, with_for_update=True)
    if (message.status != "sending" or message.twilio_sid is not None
            or not _overdue_claim(message, book.get_hold(session, hold_id), now)):
        return True  # something else settled its fate meanwhile
    taken = set(session.scalars(select(Message.twilio_sid).where(Message.twilio_sid.in_([m.sid for m in found]))))
    match = next((candidate for candidate in found if candidate.sid not in taken), None)
    if match is None:
        message.status = "accepted"
        message.updated_at = now
        return False
    message.twilio_sid = match.sid
    message.twilio_account_sid = match.account_sid
    message.updated_at = now
    apply_early_statuses(session, match.sid, now=now)  # the callbacks that came while no sid was stored
    record_fetched(session, match, now)
    return True
