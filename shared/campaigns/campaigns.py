"""Campaigns: one Liquid body (and optional drip steps) sent to many recipients.

Creation checks everything that can be checked before a send, in one unit of work: the sender, the
templates against the recipients' fields (strict: a missing field is refused, naming the line), the
skip reasons (invalid number, duplicate, opted out, do not contact), and a group estimate from every
recipient's own rendered body. Recipients are stored set-wise; messages are made later, chunk by
chunk, by the fan-out (shared.campaigns.fan_out), so accepting 100,000 recipients stays a matter of seconds.

Creation only checks that numbers look like E.164 (libphonenumber costs ~80 us a number, too much for
the web request); the fan-out validates each one fully and skips the invalid ones as `invalid_number`.
"""

import csv
import io
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.orm import Session

from shared.ledger import book
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.messaging.estimate import charge_for
from shared.ids import new_id
from shared.models import Account, Campaign, CampaignRecipient, CampaignStep, Hold, Message, OptOut, PhoneNumber
from shared.money import format_credits
from shared.messaging.opt_outs import RECIPIENT_SOURCES
from shared.messaging.phone_numbers import country_of, time_zones_of
from shared.messaging.quiet_hours import Window, next_allowed, parse_window, zones
from shared.messaging.rates import RateCard
from shared.messaging.segments import MAX_BODY_CHARACTERS, count_segments
from shared.campaigns.templates import MessageTemplate, compile_template, render

MAX_RECIPIENTS = 250_000
MAX_STEPS = 10
MAX_DELAY_DAYS = 365
SKIP_REASONS = ("invalid_number", "duplicate", "opted_out", "do_not_contact", "unsupported_country")
PAUSED = "The campaign is paused; its messages wait until it is resumed."
CANCELED = "The campaign was canceled."
OPTED_OUT = "The recipient opted out after the campaign was created."
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_FORMATTING = str.maketrans("", "", " -().\t")
_QUERY_CHUNK = 1000  # phones per IN (...): below every database's bound-parameter limit


@dataclass(frozen=True)
class CampaignRequest:
    """A POST /v1/campaigns body, still unchecked. `csv` is the recipients as CSV text (header row, a `to` column)."""

    name: object
    from_: object
    body: object
    recipients: object = None
    csv: object = None
    send_at: object = None
    quiet_hours: object = None
    steps: object = None


@dataclass(frozen=True)
class Recipient:
    where: str  # "recipients[3]" or "csv line 4", for error messages
    to: str  # as given
    fields: dict


@dataclass
class GroupEstimate:
    """What the whole campaign (every step) should cost, priced from each recipient's rendered body."""

    recipients: int = 0
    sendable: int = 0
    skipped: Counter = field(default_factory=Counter)
    messages: int = 0
    segments: int = 0
    credits_total: int = 0
    ucs2_messages: int = 0

    def as_dict(self) -> dict:
        return {"recipients": self.recipients, "sendable": self.sendable, "skipped": dict(self.skipped),
                "messages": self.messages, "segments": self.segments, "ucs2_messages": self.ucs2_messages,
                "credits_total": format_credits(self.credits_total)}


# --- recipients ------------------------------------------------------------------------------------

def parse_csv(text: object) -> list[Recipient]:
    """CSV with a header row: a `to` column, every other column a field. Bad CSV raises ValidationFailed."""
    if not isinstance(text, str) or not text.strip():
        raise ValidationFailed("csv is empty: a header row and one row per recipient are needed",
                               errors={"csv": "is empty"})
    try:
        rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff")), strict=True))
    except csv.Error as error:
        raise _csv_error(f"is not valid CSV: {error}") from None
    header = [name.strip() for name in rows[0]]
    if "to" not in header:
        raise _csv_error("line 1: the header row needs a `to` column (the recipient's number)")
    if len(set(header)) != len(header) or "" in header:
        raise _csv_error("line 1: column names must be unique and not empty")
    recipients = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise _csv_error(f"line {line}: {len(row)} columns, the header has {len(header)}")
        values = dict(zip(header, row))
        to = values.pop("to")
        recipients.append(Recipient(f"csv line {line}", to, values))
    return recipients


def parse_inline(raw: object) -> list[Recipient]:
    """[{to, fields?}, ...] -> recipients; field values are strings, numbers or booleans."""
    if not isinstance(raw, list) or not raw:
        raise ValidationFailed("recipients must be a non-empty list of {to, fields}",
                               errors={"recipients": "must be a non-empty list"})
    recipients = []
    for index, item in enumerate(raw):
        where = f"recipients[{index}]"
        fields = item.get("fields", {}) if isinstance(item, dict) else None
        if not isinstance(item, dict) or not isinstance(item.get("to"), str) or not isinstance(fields, dict) \
                or not all(isinstance(v, (str, int, float, bool)) or v is None for v in fields.values()):
            reason = "must be {to: string, fields: {name: string|number|boolean}}"
            raise ValidationFailed(f"{where} {reason}", errors={where: reason})
        recipients.append(Recipient(where, item["to"], dict(fields)))
    return recipients


def looks_like_e164(raw: str) -> str | None:
    """'+1 (415) 555-0100' -> '+14155550100' when it has E.164's shape; None otherwise."""
    compact = raw.translate(_FORMATTING)
    return compact if _E164.fullmatch(compact) else None


def _csv_error(reason: str) -> ValidationFailed:
    return ValidationFailed(f"csv {reason}", errors={"csv": reason})


# --- creation --------------------------------------------------------------------------------------

def create_campaign(session: Session, account_id: str, request: CampaignRequest, *, rate_card: RateCard,
                    now: datetime) -> tuple[Campaign, GroupEstimate]:
    """Validate, estimate and store a campaign and its recipients; the fan-out sends it from `send_at`."""
    account = session.get(Account, account_id)
    if account is None:
        raise NotFound(f"No account {account_id}.")
    book.available_for(session, account_id)  # a locked or suspended account cannot start one (423)
    errors: dict[str, str] = {}
    name = request.name if isinstance(request.name, str) and request.name.strip() else None
    if name is None or len(name) > 200:
        errors["name"] = "is required, at most 200 characters"
    from_, sender_type = _sender(session, account_id, request.from_, errors)
    send_at = _send_at(request.send_at, now, errors)
    window = _collect(errors, lambda: parse_window(request.quiet_hours))
    delays = _steps(request.steps, errors)
    recipients = _collect(errors, lambda: _recipients(request))
    if errors:
        raise ValidationFailed("Invalid campaign: " + "; ".join(f"{f} {r}" for f, r in errors.items()),
                               errors=errors)
    known = {"to"}.union(*(recipient.fields for recipient in recipients))
    templates = [compile_template(request.body, field="body", known_fields=known)]
    templates += [compile_template(step.get("body"), field=f"steps[{index}].body", known_fields=known)
                  for index, step in enumerate(request.steps or [])]
    numbers, skips = _skip_reasons(session, account_id, recipients, rate_card)
    estimate = GroupEstimate(recipients=len(recipients), skipped=Counter(r for r in skips if r))
    pricer = Pricer(rate_card, sender_type)
    for recipient, number, skip in zip(recipients, numbers, skips):
        if skip:
            continue
        estimate.sendable += 1
        fields = {**recipient.fields, "to": number}
        for template in templates:
            priced = pricer.price(render_body(template, fields, recipient=recipient.where), number)
            estimate.messages += 1
            estimate.segments += priced.segments
            estimate.credits_total += priced.credits
            estimate.ucs2_messages += priced.encoding == "UCS-2"
    start = send_at or now
    campaign = Campaign(id=new_id("cmp"), account_id=account_id, name=name.strip(), from_=from_,
                        status="scheduled" if send_at else "running", quiet_start=window.as_dict()["start"],
                        quiet_end=window.as_dict()["end"], recipients=len(recipients),
                        credits_estimated=estimate.credits_total, send_at=start, created_at=now, updated_at=now)
    session.add(campaign)
    session.flush()
    session.execute(insert(CampaignStep), [
        {"campaign_id": campaign.id, "step": index, "delay_days": delay, "body": template.source,
         "status": "pending", "chunks": 0, "starts_at": start + timedelta(days=delay)}
        for index, (template, delay) in enumerate(zip(templates, [0, *delays]))
    ])
    session.execute(insert(CampaignRecipient), [
        {"campaign_id": campaign.id, "position": position, "to": number or recipient.to[:32],
         "fields": recipient.fields, "skip_reason": skip}
        for position, (recipient, number, skip) in enumerate(zip(recipients, numbers, skips))
    ])
    return campaign, estimate


def _collect(errors: dict[str, str], check):
    try:
        return check()
    except ValidationFailed as error:
        errors.update(error.errors or {"request": str(error)})
        return None


def _recipients(request: CampaignRequest) -> list[Recipient]:
    if (request.recipients is None) == (request.csv is None):
        reason = "give recipients (a list) or csv (text), not both"
        raise ValidationFailed(reason, errors={"recipients": reason})
    recipients = parse_csv(request.csv) if request.csv is not None else parse_inline(request.recipients)
    if not recipients:
        raise ValidationFailed("the campaign has no recipients", errors={"recipients": "is empty"})
    if len(recipients) > MAX_RECIPIENTS:
        reason = f"has {len(recipients):,} recipients; a campaign takes at most {MAX_RECIPIENTS:,}"
        raise ValidationFailed(f"recipients {reason}", errors={"recipients": reason})
    return recipients


def _sender(session: Session, account_id: str, raw: object, errors: dict[str, str]) -> tuple[str | None, str]:
    phone = looks_like_e164(raw) if isinstance(raw, str) else None
    sender_type = session.scalar(select(PhoneNumber.type).where(PhoneNumber.account_id == account_id,
                                                                PhoneNumber.phone == (phone or raw)))
    if sender_type is None:
        errors["from"] = "is not a sender number of this account (POST /v1/accounts/{id}/numbers)"
    return phone or raw, sender_type or "long_code"


def _send_at(raw: object, now: datetime, errors: dict[str, str]) -> datetime | None:
    if raw is None:
        return None
    try:
        send_at = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        send_at = None
    if send_at is None or send_at.tzinfo is None:
        errors["send_at"] = "must be an ISO-8601 time with an offset, such as 2026-11-02T09:00:00-05:00"
        return None
    if send_at - now > timedelta(days=366):
        errors["send_at"] = "is more than a year ahead"
        return None
    return send_at.astimezone(UTC) if send_at > now else None


def _steps(raw: object, errors: dict[str, str]) -> list[int]:
    """The drip steps' delays, in days after the campaign starts: whole numbers, not decreasing."""
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_STEPS:
        errors["steps"] = f"must be a list of at most {MAX_STEPS} {{delay_days, body}}"
        return []
    delays = []
    for index, step in enumerate(raw):
        delay = step.get("delay_days") if isinstance(step, dict) else None
        if isinstance(delay, bool) or not isinstance(delay, int) or not 1 <= delay <= MAX_DELAY_DAYS \
                or (delays and delay < delays[-1]):
            errors[f"steps[{index}].delay_days"] = (f"must be a whole number of days from 1 to {MAX_DELAY_DAYS}, "
                                                    "counted from the start, not less than the step before")
        delays.append(delay if isinstance(delay, int) else 0)
    return delays


def _skip_reasons(session: Session, account_id: str, recipients: list[Recipient],
                  rate_card: RateCard) -> tuple[list[str | None], list[str | None]]:
    """Each recipient's normalized number (None if malformed) and why it is skipped (None: it is sent)."""
    numbers = [looks_like_e164(recipient.to) for recipient in recipients]
    sources = opt_out_sources(session, account_id, {number for number in numbers if number})
    seen: set[str] = set()
    skips: list[str | None] = []
    for number in numbers:
        if number is None:
            skips.append("invalid_number")
        elif number in seen:
            skips.append("duplicate")
        elif number in sources:
            skips.append(skip_reason_for(sources[number]))
        else:
            skips.append(None)
        if number:
            seen.add(number)
    return numbers, skips


def opt_out_sources(session: Session, account_id: str, phones: set[str]) -> dict[str, str]:
    """phone -> where its opt-out came from, for the phones of `phones` the account must not text."""
    ordered = sorted(phones)
    found: dict[str, str] = {}
    for start in range(0, len(ordered), _QUERY_CHUNK):
        found.update(session.execute(select(OptOut.phone, OptOut.source).where(
            OptOut.account_id == account_id, OptOut.phone.in_(ordered[start:start + _QUERY_CHUNK]))).all())
    return found


def skip_reason_for(source: str) -> str:
    """A recipient's own STOP (or Twilio's 21610) is an opt-out; the customer's own list is do-not-contact."""
    return "opted_out" if source in RECIPIENT_SOURCES else "do_not_contact"


def render_body(template: MessageTemplate, fields: Mapping[str, object], *, recipient: str) -> str:
    body = render(template, fields, recipient=recipient)
    if len(body) > MAX_BODY_CHARACTERS:
        reason = f"renders to {len(body):,} characters for {recipient}; Twilio sends at most {MAX_BODY_CHARACTERS:,}"
        raise ValidationFailed(f"{template.field} {reason}", errors={template.field: reason})
    return body


@dataclass(frozen=True)
class Priced:
    segments: int
    encoding: str
    credits: int  # usage + carrier fee: what a hold must cover


class Pricer:
    """Prices bodies for one sender; segment counts and countries are memoized (many bodies and prefixes repeat)."""

    def __init__(self, rate_card: RateCard, sender_type: str):
        self.rate_card = rate_card
        self.sender_type = sender_type
        self._segments: dict[str, tuple[int, str]] = {}
        self._countries: dict[str, str] = {}

    def price(self, body: str, number: str, country: str | None = None) -> Priced:
        counted = self._segments.get(body)
        if counted is None:
            result = count_segments(body)
            counted = self._segments[body] = (result.segments, result.encoding)
        country = country or self.country(number)
        charge = charge_for(counted[0], country=country, sender_type=self.sender_type, channel="sms",
                            rate_card=self.rate_card)
        return Priced(counted[0], counted[1], sum(charge))

    def country(self, number: str) -> str:
        """The country an estimate prices a number in: its dialling prefix decides, its validity is not checked."""
        prefix = number[:7]
        if prefix not in self._countries:
            try:
                found = country_of(number)
            except Exception:  # noqa: BLE001 - phonenumbers raises on nonsense; price it at home
                found = None
            self._countries[prefix] = found if found and self.rate_card.prices_country(found) \
                else self.rate_card.home_country
        return self._countries[prefix]


# --- reading and steering --------------------------------------------------------------------------

WAITING = ("accepted", "scheduled", "parked")
_COUNT_OF_STATUS = {"accepted": "queued", "scheduled": "queued", "queued": "queued", "sending": "queued",
                    "sent": "sent", "delivered": "delivered", "undelivered": "failed", "failed": "failed",
                    "canceled": "canceled", "parked": "parked"}


def get_campaign(session: Session, campaign_id: str, *, account_id: str | None) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None or (account_id is not None and campaign.account_id != account_id):
        raise NotFound(f"No campaign {campaign_id}.")
    return campaign


def campaign_view(session: Session, campaign: Campaign) -> dict:
    """The API's shape: counts of messages by where they are, skips by reason, credits as decimal strings."""
    counts = dict.fromkeys(("queued", "sent", "delivered", "failed", "canceled", "parked", "skipped"), 0)
    charged = 0
    for status, number, credits in session.execute(
            select(Message.status, func.count(), func.coalesce(func.sum(Message.credits_charged), 0))
            .where(Message.campaign_id == campaign.id).group_by(Message.status)):
        counts[_COUNT_OF_STATUS.get(status, "queued")] += number
        charged += credits
    skipped = dict(session.execute(
        select(CampaignRecipient.skip_reason, func.count()).where(
            CampaignRecipient.campaign_id == campaign.id, CampaignRecipient.skip_reason.is_not(None))
        .group_by(CampaignRecipient.skip_reason)).all())
    counts["skipped"] = sum(skipped.values())
    steps = session.scalars(select(CampaignStep).where(CampaignStep.campaign_id == campaign.id)
                            .order_by(CampaignStep.step))
    steps = list(steps)
    finished = all(step.status == "done" for step in steps) and not (counts["queued"] or counts["parked"])
    return {
        "id": campaign.id,
        "name": campaign.name,
        "status": "completed" if campaign.status == "running" and finished else campaign.status,
        "from": campaign.from_,
        "counts": {"total": campaign.recipients, **counts},
        "skip_reasons": skipped,
        "credits_estimated": format_credits(campaign.credits_estimated),
        "credits_charged": format_credits(charged),
        "quiet_hours": {"start": campaign.quiet_start, "end": campaign.quiet_end},
        "steps": [{"step": step.step, "delay_days": step.delay_days, "status": step.status,
                   "starts_at": _iso(step.starts_at)} for step in steps],
        "send_at": _iso(campaign.send_at),
        "created_at": _iso(campaign.created_at),
        "updated_at": _iso(campaign.updated_at),
    }


def pause_campaign(session: Session, campaign_id: str, *, account_id: str | None, now: datetime) -> Campaign:
    """Stop sending: messages not yet claimed wait as `scheduled` (no send time) until resumed; holds stay."""
    campaign = _steerable(session, campaign_id, account_id)
    if campaign.status == "paused":
        return campaign
    campaign.status, campaign.updated_at = "paused", now
    session.execute(update(Message).where(Message.campaign_id == campaign_id,
                                          Message.status.in_(("accepted", "scheduled")))
                    .values(status="scheduled", send_at=None, error_message=PAUSED, updated_at=now)
                    .execution_options(synchronize_session=False))
    return campaign


def resume_campaign(session: Session, campaign_id: str, *, account_id: str | None,
                    now: datetime) -> tuple[Campaign, list[str]]:
    """Send again; returns the ids of the messages to enqueue (quiet hours are checked again at the send)."""
    campaign = _steerable(session, campaign_id, account_id)
    if campaign.status != "paused":
        return campaign, []
    started = session.scalar(select(CampaignStep.status).where(CampaignStep.campaign_id == campaign_id,
                                                               CampaignStep.step == 0)) != "pending"
    campaign.status = "running" if started or campaign.send_at <= now else "scheduled"
    campaign.updated_at = now
    ids = list(session.scalars(select(Message.id).where(Message.campaign_id == campaign_id,
                                                        Message.status == "scheduled", Message.send_at.is_(None))))
    for start in range(0, len(ids), _QUERY_CHUNK):
        session.execute(update(Message).where(Message.id.in_(ids[start:start + _QUERY_CHUNK]))
                        .values(status="accepted", error_message=None, updated_at=now)
                        .execution_options(synchronize_session=False))
    return campaign, ids


def cancel_campaign(session: Session, campaign_id: str, *, account_id: str | None, now: datetime) -> Campaign:
    """Nothing more goes out: waiting messages are canceled and their holds released; later steps never start."""
    campaign = get_campaign(session, campaign_id, account_id=account_id)
    if campaign.status == "canceled":
        return campaign
    if campaign_view(session, campaign)["status"] == "completed":
        raise Conflict(f"campaign {campaign_id} has completed: there is nothing left to cancel")
    campaign.status, campaign.updated_at = "canceled", now
    session.execute(update(CampaignStep).where(CampaignStep.campaign_id == campaign_id,
                                               CampaignStep.status == "pending").values(status="canceled"))
    holds = list(session.scalars(select(Message.hold_id).join(Hold, Hold.id == Message.hold_id).where(
        Message.campaign_id == campaign_id, Message.status.in_(WAITING), Hold.status == "pending")))
    for hold_id in holds:
        book.void(session, hold_id, now=now)
    session.execute(update(Message).where(Message.campaign_id == campaign_id, Message.status.in_(WAITING))
                    .values(status="canceled", error_message=CANCELED, credits_charged=case(
                        (Message.hold_id.is_(None), None), else_=0), updated_at=now)
                    .execution_options(synchronize_session=False))
    return campaign


def _steerable(session: Session, campaign_id: str, account_id: str | None) -> Campaign:
    campaign = get_campaign(session, campaign_id, account_id=account_id)
    if campaign.status == "canceled":
        raise Conflict(f"Campaign {campaign_id} is {campaign.status}.")
    return campaign


# --- the send step's gate --------------------------------------------------------------------------

def gate_campaign_message(session: Session, message: Message, *, now: datetime) -> str | None:
    """Called by the send step with the message locked: None to send it now, else the status it waits in.

    A paused campaign's message waits unscheduled; a canceled campaign's, or one whose recipient has
    opted out since, is canceled (its hold released); one outside the recipient's quiet hours is
    scheduled for the window's next opening.
    """
    if message.campaign_id is None:
        return None
    campaign = session.get(Campaign, message.campaign_id)
    if campaign.status == "paused":
        return _wait(message, None, PAUSED, now)
    opted_out = session.scalar(select(OptOut.id).where(OptOut.account_id == message.account_id,
                                                       OptOut.phone == message.to).limit(1)) is not None
    if campaign.status == "canceled" or opted_out:
        hold = session.get(Hold, message.hold_id) if message.hold_id else None
        if hold is not None and hold.status == "pending":
            book.void(session, hold.id, now=now)
        message.status, message.error_message, message.updated_at = "canceled", OPTED_OUT if opted_out else CANCELED, now
        message.credits_charged = 0 if hold is not None else None
        return "canceled"
    account_zone = session.scalar(select(Account.timezone).where(Account.id == message.account_id))
    allowed = next_allowed(now, zones(time_zones_of(message.to), account_zone), window_of(campaign))
    if allowed > now:
        return _wait(message, allowed, None, now)
    return None


def window_of(campaign: Campaign) -> Window:
    return Window(time.fromisoformat(campaign.quiet_start), time.fromisoformat(campaign.quiet_end))


def _wait(message: Message, until: datetime | None, reason: str | None, now: datetime) -> str:
    message.status, message.send_at, message.error_message, message.updated_at = "scheduled", until, reason, now
    return "scheduled"


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
