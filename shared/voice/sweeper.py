"""What keeps every call moving when a job or a report is lost.

- `parked` calls of an account that may pay again are made `accepted` and enqueued (the place step parks them
  again if it still cannot pay a minute).
- `accepted` calls left waiting (a place job lost with a killed worker, a failed enqueue) are enqueued again,
  unless their broadcast is paused; the place step skips any that another job took meanwhile.
- `queued` calls without a sid whose create may have been lost are looked for at Twilio by To and From: adopted
  when Twilio has one since the claim, else failed and their hold released (Twilio never placed them).
- placed calls still not final long after their time limit are fetched from Twilio and their status applied,
  so a call whose final report never came is still settled, once (one whose record Twilio no longer has, though
  it answered the create with its sid, as completed after its time limit: `fetch_call_or_gone`).
- inbound calls still talking long after their forwarded leg's time limit are fetched with their legs: what the
  legs talked is charged under the key the <Dial> action uses, so once whichever comes (one whose records the
  tenant deleted from a Twilio account of its own as talked for its whole time limit: `fetch_inbound_or_gone`).
- each call is asked of the Twilio account that has its record (`credentials_keeping`), which is the deployment's
  for one placed or rung before the account brought its own. Once Twilio failed an ask with a "try again later", or
  refused the credentials it was asked with, a sweep asks nothing more about the calls of that tenant's own Twilio
  account, or nothing more at all if it was the deployment's (`shared.asking`): the rest wait for the next sweep.
  Each sweep takes the calls it asks about in turns across accounts (every account's oldest first), so that
  accounts whose asks are refused or skipped take a place each in it, not the whole of it.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import case, func, literal, or_, select, update
from sqlalchemy.orm import Session

from shared.asking import Asking, in_turns
from shared.db import Database, epoch_seconds
from shared.ledger import book
from shared.ledger.expiry import utc
from shared.messaging.credentials import credentials_keeping
from shared.messaging.rates import RateCard
from shared.models import Account, Call, VoiceBroadcast
from shared.twilio.errors import CredentialsRejected, PermanentTwilioError, TransientTwilioError
from shared.voice import inbound
from shared.voice.placing import RING_ALLOWANCE_SECONDS
from shared.voice.progress import (
    apply_report,
    early_report,
    fetch_call_or_gone,
    fetch_inbound_or_gone,
    kept_by_tenant,
)
from shared.voice.twiml import VOICEMAIL_MAX_SECONDS

log = logging.getLogger(__name__)
BATCH = 500
IN_FLIGHT = ("queued", "initiated", "ringing", "in-progress")
NEVER_PLACED = "Twilio has no record of this call: it was never placed, and nothing was charged."


@dataclass
class CallSweep:
    enqueued: list[str] = field(default_factory=list)
    reconciled: dict[str, str] = field(default_factory=dict)


def sweep_calls(database: Database, *, gateway_for: Callable, rate_card: RateCard, now: datetime,
                stale_after: timedelta, placing_takes: timedelta) -> CallSweep:
    """`placing_takes`: how long a create at Twilio may still be under way (connecting and reading may each take the
    whole Twilio timeout): a call without a sid is looked for no sooner than that after its claim."""
    report = CallSweep()
    with database.unit_of_work() as session:
        report.enqueued = _unparked(session, now - stale_after, now) + _waiting(session, now - stale_after)
        overdue = _overdue(session, now, stale_after, placing_takes)
        unreported = _unreported_inbound(session, now, stale_after)
    # One call Twilio will not answer for (an account's credentials revoked, a sid it never had) is logged and
    # left: it must not stop the sweep of every other account's calls behind it; nor must Twilio failing one account.
    asking = Asking()
    for reconcile_one, calls in ((reconcile_inbound, unreported), (reconcile, overdue)):
        for call_id, owner in asking.each(calls, owner=lambda call: call[-1]):
            try:
                report.reconciled[call_id] = reconcile_one(database, call_id, gateway_for=gateway_for,
                                                           rate_card=rate_card, now=now)
            except (TransientTwilioError, CredentialsRejected) as error:  # the next ask with them would fare no better
                log.warning("could not reconcile call %s, nor ask about its account's others now: %s", call_id, error)
                asking.struggled(owner)
            except PermanentTwilioError as error:
                log.warning("could not reconcile call %s: %s", call_id, error)
    return report


def _unparked(session: Session, before: datetime, now: datetime) -> list[str]:
    """Parked calls of accounts that may send again (credits came, the lock lifted) go back to `accepted`."""
    ids = list(session.scalars(
        select(Call.id).join(Account, Account.id == Call.account_id)
        .where(Call.status == "parked", Call.direction == "outbound", Call.updated_at < before,
               Account.status == "active").order_by(Call.updated_at).limit(BATCH)))
    if ids:
        session.execute(update(Call).where(Call.id.in_(ids), Call.status == "parked")
                        .values(status="accepted", error_message=None, updated_at=now))
    return ids


def _waiting(session: Session, before: datetime) -> list[str]:
    paused = select(VoiceBroadcast.id).where(VoiceBroadcast.status != "running").scalar_subquery()
    return list(session.scalars(
        select(Call.id).where(Call.status == "accepted", Call.direction == "outbound", Call.updated_at < before,
                              or_(Call.broadcast_id.is_(None), Call.broadcast_id.not_in(paused)))
        .order_by(Call.updated_at).limit(BATCH)))


def _asked_of():
    """Whose Twilio account a call is asked of, as shared.asking takes it: its account's, if the account has
    credentials of its own (a tenant's Twilio failing holds up that tenant alone), else None, the deployment's."""
    return case((Account.twilio_account_sid.is_(None), None), else_=Call.account_id)


def _overdue(session: Session, now: datetime, stale_after: timedelta,
             placing_takes: timedelta) -> list[tuple[str, str | None]]:
    """Calls without a sid claimed more than `stale_after` and `placing_takes` ago (one looked for while its create
    was still under way would be taken for never placed, its hold voided, and talk uncharged), and placed calls long
    past their time limit: in turns across accounts (`shared.asking.in_turns`), longest claimed first. Whether a call is
    due is decided in the statement: calls not due yet, however many, never stand before those that are."""
    seconds = epoch_seconds(session)
    unplaced_after = max(stale_after, placing_takes).total_seconds()
    talked_after = func.coalesce(Call.time_limit, 0) + RING_ALLOWANCE_SECONDS + stale_after.total_seconds()
    due = (
        select(Call.id, _asked_of().label("owner")).join(Account, Account.id == Call.account_id)
        .where(Call.status.in_(IN_FLIGHT), Call.direction == "outbound", Call.claimed_at < now - stale_after,
               seconds(Call.claimed_at) + case((Call.twilio_sid.is_(None), unplaced_after), else_=talked_after)
               < seconds(literal(now, Call.claimed_at.type))))
    return [tuple(row) for row in session.execute(in_turns(due, Call.account_id, Call.claimed_at, limit=BATCH))]


def _unreported_inbound(session: Session, now: datetime, stale_after: timedelta) -> list[tuple[str, str | None]]:
    """Inbound calls still talking long after their forwarded leg's time limit could have ended: in turns across
    accounts, oldest first, those not due yet left out in the statement."""
    seconds = epoch_seconds(session)
    could_talk = (func.coalesce(Call.time_limit, 0) + RING_ALLOWANCE_SECONDS + VOICEMAIL_MAX_SECONDS
                  + stale_after.total_seconds())
    due = (
        select(Call.id, _asked_of().label("owner")).join(Account, Account.id == Call.account_id)
        .where(Call.status == "in-progress", Call.direction == "inbound", Call.created_at < now - stale_after,
               seconds(Call.created_at) + could_talk < seconds(literal(now, Call.created_at.type))))
    return [tuple(row) for row in session.execute(in_turns(due, Call.account_id, Call.created_at, limit=BATCH))]


def reconcile_inbound(database: Database, call_id: str, *, gateway_for: Callable, rate_card: RateCard,
                      now: datetime) -> str:
    """Fetch an inbound call and its forwarded legs from Twilio; charge what the legs talked (under the key its
    <Dial> action uses, so once whichever comes) and take Twilio's status, as its final report would (its
    `call.completed` event too)."""
    with database.read_only() as session:
        call = session.get(Call, call_id)
        account = session.get(Account, call.account_id)
        gateway = gateway_for(*credentials_keeping(call.twilio_account_sid, account))
        sid, time_limit = call.twilio_sid, call.time_limit
        deletable = kept_by_tenant(call, gateway_for(None, None).account_sid)
    found = fetch_inbound_or_gone(gateway, sid, time_limit, tenant_may_delete=deletable)
    with database.unit_of_work() as session:
        if found is None:  # a ring with the deployment's token that Twilio never had talked nothing
            return inbound.end_unknown(session, call_id, now)
        parent, legs = found
        inbound.charge_forwarded(session, call_id, legs, now)
        return apply_report(session, call_id, early_report(parent), rate_card=rate_card, now=now)


def reconcile(database: Database, call_id: str, *, gateway_for: Callable, rate_card: RateCard, now: datetime) -> str:
    """Ask Twilio what became of the call and apply it; the call's status after it."""
    with database.read_only() as session:
        call = session.get(Call, call_id)
        account = session.get(Account, call.account_id)
        sid, claimed_at, to, from_ = call.twilio_sid, utc(call.claimed_at), call.connect_to or call.to, call.from_
        time_limit = call.time_limit
        gateway = gateway_for(*credentials_keeping(call.twilio_account_sid, account))
    if sid is not None:  # Twilio answered the create with it: placed
        try:
            found = [fetch_call_or_gone(gateway, sid, time_limit)]
        except PermanentTwilioError:
            found = []
    else:  # Twilio's list dates have whole seconds
        found = gateway.find_calls(to=to, from_=from_, placed_after=claimed_at.replace(microsecond=0))
    with database.unit_of_work() as session:
        taken = set(session.scalars(select(Call.twilio_sid).where(Call.twilio_sid.in_([c.sid for c in found]),
                                                                  Call.id != call_id)))
        found = [placed for placed in found if placed.sid not in taken]
        if found:
            return apply_report(session, call_id, early_report(found[0]), rate_card=rate_card, now=now)
        return _never_placed(session, call_id, now)


def _never_placed(session: Session, call_id: str, now: datetime) -> str:
    call = session.get(Call, call_id, with_for_update=True)
    if call.status not in IN_FLIGHT or call.credits_charged is not None:
        return call.status
    if call.hold_id is not None:
        book.void(session, call.hold_id, now=now)
    call.status, call.error_message, call.credits_charged, call.minutes_billed = "failed", NEVER_PLACED, 0, 0
    call.updated_at = now
    return call.status
