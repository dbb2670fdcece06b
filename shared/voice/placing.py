"""The place step: hold what the account can pay for, mark the call `queued`, ask Twilio once, store the sid.

Each database step is its own unit of work keyed by the call id, so a replayed job changes nothing. The one step
that cannot be undone, Twilio's create, happens only after the call is `queued` with its hold and `claimed_at`; a
`queued` call without a sid is never placed again: its status callback or the sweeper's reconciliation decides.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from shared.db import Database
from shared.errors import AccountLocked, InsufficientCredits
from shared.ledger import book
from shared.messaging.opt_outs import is_opted_out
from shared.messaging.phone_numbers import time_zones_of
from shared.messaging.quiet_hours import Window, next_allowed, parse_window, zones
from shared.messaging.rates import RateCard
from shared.models import Account, Call, VoiceBroadcast
from shared.twilio.errors import CredentialsRejected, OutcomeUnknown, PermanentTwilioError, TransientTwilioError
from shared.voice import twiml
from shared.voice.pricing import SECONDS_PER_MINUTE, CallPrice
from shared.voice.progress import apply_report, call_price_of, early_report

CALL_STATUS_PATH = "/webhooks/twilio/call-status"
RING_ALLOWANCE_SECONDS = 120  # a hold also outlives the ringing and Twilio's queue before its TTL is reached


class PlaceLater(Exception):
    """The job should run again after `delay_seconds` (None: back off)."""

    def __init__(self, reason: str, delay_seconds: float | None):
        super().__init__(reason)
        self.delay_seconds = delay_seconds


@dataclass(frozen=True)
class _Claim:
    to: str
    from_: str
    twiml: str
    time_limit: int
    machine_detection: bool


def place_call(database: Database, call_id: str, *, gateway_for: Callable, rate_card: RateCard,
               hold_ttl_seconds: int, now: Callable[[], datetime]) -> str:
    """Place one call; returns the status it is left in. Raises PlaceLater when it must run again.

    `gateway_for(account_sid, auth_token)` gives the gateway for the account's own Twilio credentials (None, None:
    the deployment's).
    """
    with database.unit_of_work() as session:
        claim = _claim(session, call_id, gateway_for, rate_card, hold_ttl_seconds, now())
    if isinstance(claim, str):
        return claim
    if isinstance(claim, PlaceLater):
        raise claim
    gateway, claim = claim
    callback = f"{gateway.public_base_url}{CALL_STATUS_PATH}?call={call_id}"
    try:
        placed = gateway.place_call(to=claim.to, from_=claim.from_, twiml=claim.twiml, status_callback=callback,
                                    time_limit=claim.time_limit, machine_detection=claim.machine_detection)
    except OutcomeUnknown:
        return "queued"  # Twilio may have it: its callback or the sweeper's reconciliation decides
    except TransientTwilioError as error:
        with database.unit_of_work() as session:
            _undo(session, call_id, now(), status="accepted", reason=None)
        raise PlaceLater(f"Twilio is unavailable: {error}", error.retry_after) from error
    except CredentialsRejected as error:
        with database.unit_of_work() as session:
            _undo(session, call_id, now(), status="parked",
                  reason=f"Twilio rejected the account's credentials (20003: {error}).")
        return "parked"
    except PermanentTwilioError as error:
        with database.unit_of_work() as session:
            _undo(session, call_id, now(), status="failed", reason=f"Twilio refused the call ({error.code}: "
                                                                   f"{error.message})")
        return "failed"
    with database.unit_of_work() as session:
        return apply_report(session, call_id, early_report(placed), rate_card=rate_card, now=now())


def _claim(session: Session, call_id: str, gateway_for: Callable, rate_card: RateCard, hold_ttl_seconds: int,
           now: datetime):
    """Hold and mark the call `queued` (one transaction); or the status it stays in; or PlaceLater."""
    call = session.get(Call, call_id, with_for_update=True)
    if call is None or call.status != "accepted" or call.twilio_sid is not None:
        return "skipped"
    account = session.get(Account, call.account_id)
    if account.status == "canceled":
        return _end(call, "canceled", "the account is canceled", now)
    broadcast = session.get(VoiceBroadcast, call.broadcast_id) if call.broadcast_id else None
    if broadcast is not None:
        if broadcast.status == "canceled":
            return _end(call, "canceled", "the broadcast was canceled", now)
        if broadcast.status == "paused":
            return "accepted"  # resume enqueues it again
        if is_opted_out(session, call.account_id, call.to):
            return _end(call, "skipped", "opted out or on the do-not-contact list", now)
        opens = _quiet_until(call.to, broadcast, account.timezone, now)
        if opens is not None:  # its job waits for the window; dated then, so the sweeper does not enqueue another
            call.updated_at = opens
            return PlaceLater("quiet hours at the number called", (opens - now).total_seconds())
    price = call_price_of(call, rate_card)
    try:
        minutes, hold_id = _hold(session, call, price, hold_ttl_seconds, now)
    except (InsufficientCredits, AccountLocked) as error:
        call.status, call.error_message, call.updated_at = "parked", str(error)[:500], now
        return "parked"
    gateway = gateway_for(account.twilio_account_sid, account.twilio_auth_token)
    call.status, call.hold_id, call.minutes_held = "queued", hold_id, minutes
    call.time_limit = minutes * SECONDS_PER_MINUTE
    call.twilio_account_sid, call.claimed_at, call.updated_at = gateway.account_sid, now, now
    call.attempts += 1
    if call.connect_to:  # click-to-call: the user's phone first, then the contact
        claim = _Claim(to=call.connect_to, from_=call.from_, machine_detection=False, time_limit=call.time_limit,
                       twiml=twiml.bridge(call.to, caller_id=call.from_, time_limit=call.time_limit))
    else:
        claim = _Claim(to=call.to, from_=call.from_, machine_detection=call.machine_detection,
                       time_limit=call.time_limit,
                       twiml=twiml.message(say=call.say, play_url=call.play_url,
                                           machine_detection=call.machine_detection))
    return gateway, claim


def _hold(session: Session, call: Call, price: CallPrice, hold_ttl_seconds: int, now: datetime) -> tuple[int, int]:
    """Hold the whole minutes the account can pay for, up to max_minutes; InsufficientCredits below one minute.

    Only a prepaid (or overdraft-limited) account is cut short: its call's time_limit is what this hold covers.
    """
    available = book.available_for(session, call.account_id, call.user_id, now=now)
    minutes = price.minutes_covered(available, call.max_minutes)
    if minutes < 1:
        raise InsufficientCredits("The account cannot pay for a minute of this call.",
                                  available=max(available or 0, 0), required=price.cost(1))
    ttl = hold_ttl_seconds + minutes * SECONDS_PER_MINUTE + RING_ALLOWANCE_SECONDS
    hold = book.reserve(session, call.account_id, price.cost(minutes), user_id=call.user_id, reference=call.id,
                        idempotency_key=f"call:{call.id}:hold:{call.attempts}", ttl_seconds=ttl, now=now)
    return minutes, hold.id


def _quiet_until(to: str, broadcast: VoiceBroadcast, fallback_zone: str, now: datetime) -> datetime | None:
    """When the number's quiet hours end, if `now` is inside them (None: it may be called now)."""
    window = parse_window({"start": broadcast.quiet_start, "end": broadcast.quiet_end}) \
        if broadcast.quiet_start else Window()
    opens = next_allowed(now, zones(time_zones_of(to), fallback_zone), window)
    return opens if opens > now + timedelta(seconds=1) else None


def _end(call: Call, status: str, reason: str, now: datetime) -> str:
    call.status, call.skip_reason, call.updated_at = status, reason, now
    call.credits_charged = 0
    return status


def _undo(session: Session, call_id: str, now: datetime, *, status: str, reason: str | None) -> None:
    """Twilio did not take the call: release its hold; `accepted` lets the retry claim it afresh."""
    call = session.get(Call, call_id, with_for_update=True)
    if call is None or call.status != "queued" or call.twilio_sid is not None:
        return
    if call.hold_id is not None:
        book.void(session, call.hold_id, now=now)
    call.status, call.error_message, call.updated_at = status, reason and reason[:500], now
    call.hold_id = call.minutes_held = call.time_limit = call.claimed_at = None
    if status == "failed":
        call.credits_charged = 0
