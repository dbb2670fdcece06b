"""Voice broadcasts: one recording or text to many numbers, each number a call of its own.

Creating one stores every number as an `accepted` call in one unit of work (opted-out and do-not-contact numbers
as `skipped`), so a broadcast is created in seconds and nothing is lost; the fan-out then enqueues their place
jobs. Each call holds, is placed and settles on its own (shared.voice.placing), at the broadcast rate, plus the
flat machine-detection charge of each number called. Pause leaves the waiting calls `accepted` (their jobs skip
them), resume enqueues them again, cancel ends them; calls already placed finish and are charged.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from shared.errors import AccountLocked, Conflict, NotFound, ValidationFailed
from shared.ids import new_id
from shared.ledger.expiry import utc
from shared.messaging.opt_outs import opted_out_among
from shared.messaging.phone_numbers import parse_e164
from shared.messaging.quiet_hours import parse_window
from shared.messaging.rates import RateCard
from shared.models import Account, Call, VoiceBroadcast
from shared.money import format_credits
from shared.voice.calls import FINAL_STATUSES, check_content, check_minutes, holds_number, pre_check
from shared.voice.pricing import call_price

MAX_RECIPIENTS = 100_000
WAITING = ("accepted", "parked")
MACHINE = ("machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax")


@dataclass(frozen=True)
class BroadcastRequest:
    name: object
    from_: object
    recipients: object
    say: object = None
    play_url: object = None
    machine_detection: object = False
    quiet_hours: object = None
    expected_minutes: object = None
    max_minutes: object = None
    user_id: object = None


@dataclass(frozen=True)
class Estimate:
    numbers: int
    expected_minutes: int
    per_minute: int
    detection: int  # per number called

    @property
    def credits(self) -> int:
        return self.numbers * (self.expected_minutes * self.per_minute + self.detection)

    def as_dict(self) -> dict:
        return {"numbers": self.numbers, "expected_minutes": self.expected_minutes,
                "credits_per_minute": format_credits(self.per_minute),
                "detection_per_number": format_credits(self.detection), "credits": format_credits(self.credits)}


def estimate_broadcast(recipients: object, expected_minutes: object, machine_detection: object, *,
                       rate_card: RateCard) -> Estimate:
    """numbers x expected minutes x the broadcast rate (+ the detection charge per number), at home rates."""
    errors: dict[str, str] = {}
    if isinstance(recipients, bool) or not isinstance(recipients, int) or not 1 <= recipients <= MAX_RECIPIENTS:
        errors["recipients"] = f"must be a number of recipients from 1 to {MAX_RECIPIENTS}"
    minutes = check_minutes("expected_minutes", expected_minutes, 1, errors)
    if not isinstance(machine_detection, bool):
        errors["machine_detection"] = "must be true or false"
    if errors:
        raise ValidationFailed("Invalid estimate: " + "; ".join(f"{f} {r}" for f, r in errors.items()), errors=errors)
    home = rate_card.home_country
    detection = rate_card.price("answering_machine_detection", country=home) if machine_detection else 0
    return Estimate(recipients, minutes, rate_card.price("voice_broadcast", country=home), detection)


def create_broadcast(session: Session, account_id: str, request: BroadcastRequest, *, rate_card: RateCard,
                     now: datetime) -> tuple[VoiceBroadcast, list[str]]:
    """Store the broadcast and a call per distinct number; (the broadcast, the calls to place)."""
    account = session.get(Account, account_id)
    if account is None:
        raise NotFound(f"No account {account_id}.")
    errors: dict[str, str] = {}
    if not isinstance(request.name, str) or not 1 <= len(request.name.strip()) <= 200:
        errors["name"] = "must be text of 1 to 200 characters"
    from_ = None
    try:
        from_ = parse_e164(request.from_, field="from")
    except ValidationFailed as error:
        errors.update(error.errors)
    if from_ is not None and not holds_number(session, account_id, from_):
        errors["from"] = "is not a number of this account (POST /v1/accounts/{id}/numbers)"
    say, play_url = check_content(request.say, request.play_url, None, errors)
    expected = check_minutes("expected_minutes", request.expected_minutes, 1, errors)
    max_minutes = check_minutes("max_minutes", request.max_minutes, account.call_max_minutes, errors)
    if not isinstance(request.machine_detection, bool):
        errors["machine_detection"] = "must be true or false"
    numbers = _numbers(request.recipients, errors)
    window = None
    try:
        window = parse_window(request.quiet_hours) if request.quiet_hours is not None else None
    except ValidationFailed as error:
        errors.update(error.errors)
    if errors:
        raise ValidationFailed("Invalid voice broadcast: " + "; ".join(f"{f} {r}" for f, r in errors.items()),
                               errors=errors)
    price = call_price(rate_card, numbers[0], item="voice_broadcast", machine_detection=request.machine_detection)
    pre_check(session, account_id, price, user_id=request.user_id, now=now)
    skipped = opted_out_among(session, account_id, numbers)
    broadcast = VoiceBroadcast(
        id=new_id("vb"), account_id=account_id, user_id=request.user_id, name=request.name.strip(), from_=from_,
        say=say, play_url=play_url, machine_detection=request.machine_detection, expected_minutes=expected,
        max_minutes=max_minutes, quiet_start=window and window.as_dict()["start"],
        quiet_end=window and window.as_dict()["end"], status="running",
        credits_estimated=len(numbers) * price.cost(expected), created_at=now, updated_at=now)
    session.add(broadcast)
    session.flush()
    rows = [dict(id=new_id("call"), account_id=account_id, user_id=request.user_id, broadcast_id=broadcast.id,
                 direction="outbound", to=number, from_=from_, say=say, play_url=play_url, connect_to=None,
                 machine_detection=request.machine_detection, max_minutes=max_minutes, legs=1, rate=price.per_minute,
                 status="skipped" if number in skipped else "accepted", attempts=0,
                 skip_reason="opted out or on the do-not-contact list" if number in skipped else None,
                 credits_estimated=0 if number in skipped else price.cost(expected),
                 credits_charged=0 if number in skipped else None, created_at=now, updated_at=now)
            for number in numbers]
    session.execute(insert(Call), rows)
    return broadcast, [row["id"] for row in rows if row["status"] == "accepted"]


def get_broadcast(session: Session, broadcast_id: str, *, account_id: str | None,
                  user_id: str | None = None) -> VoiceBroadcast:
    """The broadcast, if `account_id` (None: the operator) may see it, and, with `user_id`, if that user started it."""
    return _visible(session.get(VoiceBroadcast, broadcast_id), broadcast_id, account_id, user_id)


def _visible(broadcast: VoiceBroadcast | None, broadcast_id: str, account_id: str | None,
             user_id: str | None) -> VoiceBroadcast:
    if (broadcast is None or (account_id is not None and broadcast.account_id != account_id)
            or (user_id is not None and broadcast.user_id != user_id)):
        raise NotFound(f"No voice broadcast {broadcast_id}.")
    return broadcast


def waiting_calls(session: Session, broadcast_id: str) -> list[str]:
    """The broadcast's calls not placed yet: what its fan-out (and resume) enqueues."""
    return list(session.scalars(select(Call.id).where(Call.broadcast_id == broadcast_id,
                                                      Call.status == "accepted").order_by(Call.id)))


def steer(session: Session, broadcast_id: str, action: str, *, account_id: str | None, now: datetime,
          user_id: str | None = None) -> VoiceBroadcast:
    """pause, resume or cancel; a Conflict for a broadcast that has ended (or a resume of one that runs). With
    `user_id`, only a broadcast that user started (a user's key steers its own alone)."""
    broadcast = _visible(session.get(VoiceBroadcast, broadcast_id, with_for_update=True), broadcast_id, account_id,
                         user_id)
    allowed = {"pause": ("running",), "resume": ("paused",), "cancel": ("running", "paused")}[action]
    if _status(session, broadcast) not in allowed:
        raise Conflict(f"The voice broadcast is {_status(session, broadcast)}: it cannot {action}.")
    if action == "resume" and session.get(Account, broadcast.account_id).status != "active":
        raise AccountLocked("The account is locked: its broadcast can resume once credits bring it back to zero.")
    broadcast.status = {"pause": "paused", "resume": "running", "cancel": "canceled"}[action]
    broadcast.updated_at = now
    if action == "cancel":
        session.execute(update(Call).where(Call.broadcast_id == broadcast_id, Call.status.in_(WAITING))
                        .values(status="canceled", skip_reason="the broadcast was canceled", credits_charged=0,
                                updated_at=now))
    return broadcast


def cancel_account_calls(session: Session, account_id: str, *, reason: str, now: datetime) -> int:
    """The account was canceled: its broadcasts that could still call are canceled, and every call of it not placed
    yet (accepted, parked) ends `canceled`, uncharged (it holds nothing yet), so a reactivation does not place
    them on the new plan's credits. Calls with Twilio end as usual. Returns how many calls were canceled."""
    session.execute(update(VoiceBroadcast).where(VoiceBroadcast.account_id == account_id,
                                                 VoiceBroadcast.status.in_(("running", "paused")))
                    .values(status="canceled", updated_at=now))
    return session.execute(update(Call).where(Call.account_id == account_id, Call.status.in_(WAITING))
                           .values(status="canceled", skip_reason=reason[:200], credits_charged=0,
                                   updated_at=now)).rowcount


def broadcast_view(session: Session, broadcast: VoiceBroadcast) -> dict:
    counts = {name: 0 for name in ("total", "queued", "human", "machine", "unknown", "no_answer", "busy", "failed",
                                   "skipped", "canceled")}
    charged = 0
    rows = session.execute(select(Call.status, Call.answered_by, func.count(), func.sum(Call.credits_charged))
                           .where(Call.broadcast_id == broadcast.id).group_by(Call.status, Call.answered_by))
    for status, answered_by, count, credits in rows:
        counts["total"] += count
        charged += int(credits or 0)
        if status == "completed":
            key = "human" if answered_by == "human" else "machine" if answered_by in MACHINE else "unknown"
        else:
            key = {"busy": "busy", "no-answer": "no_answer", "failed": "failed", "skipped": "skipped",
                   "canceled": "canceled"}.get(status, "queued")
        counts[key] += count
    return {
        "id": broadcast.id, "name": broadcast.name, "status": _status(session, broadcast, counts),
        "from": broadcast.from_,
        "machine_detection": broadcast.machine_detection, "expected_minutes": broadcast.expected_minutes,
        "max_minutes": broadcast.max_minutes, "counts": counts,
        "quiet_hours": ({"start": broadcast.quiet_start, "end": broadcast.quiet_end}
                        if broadcast.quiet_start else None),
        "credits_estimated": format_credits(broadcast.credits_estimated), "credits_charged": format_credits(charged),
        "created_at": utc(broadcast.created_at).isoformat(), "updated_at": utc(broadcast.updated_at).isoformat(),
    }


def _status(session: Session, broadcast: VoiceBroadcast, counts: dict | None = None) -> str:
    """running and paused become completed once every call has ended."""
    if broadcast.status not in ("running", "paused"):
        return broadcast.status
    open_calls = counts["queued"] if counts is not None else session.scalar(
        select(func.count()).where(Call.broadcast_id == broadcast.id, Call.status.not_in(FINAL_STATUSES)))
    return "completed" if open_calls == 0 else broadcast.status


def _numbers(recipients: object, errors: dict[str, str]) -> list[str]:
    if not isinstance(recipients, list) or not 1 <= len(recipients) <= MAX_RECIPIENTS:
        errors["recipients"] = f"must be a list of 1 to {MAX_RECIPIENTS} objects such as {{\"to\": \"+14155550100\"}}"
        return []
    numbers: dict[str, None] = {}
    for index, recipient in enumerate(recipients):
        for name in sorted(set(recipient) - {"to"}) if isinstance(recipient, dict) and len(errors) < 10 else ():
            errors[f"recipients[{index}].{name}"] = "is not a field of a recipient: to only"
        raw = recipient.get("to") if isinstance(recipient, dict) else None
        try:
            numbers[parse_e164(raw, field=f"recipients[{index}].to")] = None
        except ValidationFailed as error:
            if len(errors) < 10:
                errors.update(error.errors)
    return list(numbers)
