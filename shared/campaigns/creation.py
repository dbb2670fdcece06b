"""Creating a campaign: one Liquid body (and optional drip steps) sent to many recipients.

Creation checks everything that can be checked before a send, before it writes anything: the sender,
the templates against the recipients' fields (strict: a missing field is refused, naming the line), the
skip reasons (invalid number, duplicate, opted out, do not contact), and a group estimate from every
recipient's own rendered body. Recipients are stored set-wise, in chunks of their own units of work;
messages are made later, chunk by chunk, by the fan-out (shared.campaigns.fan_out), so accepting
100,000 recipients stays a matter of seconds and never stalls other tenants.

Pre-flight: before anything is written, the campaign (every step) is laid over what the sender can spend,
less every other send scheduled to go before its last step (shared.reporting.scheduled). A prepaid wallet that
cannot pay for all of it is refused up front (402), naming the recipient and step where it would stop; an
overdraft or postpaid account is accepted with warnings saying where its balance would go below zero (and,
with a limit, where the limit would stop it).

Creation only checks that numbers look like E.164 (libphonenumber costs ~80 us a number, too much for
the web request); the fan-out validates each one fully and skips the invalid ones as `invalid_number`.
"""

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from shared.campaigns.recipients import Recipient, looks_like_e164, parse_csv, parse_inline, skip_reasons
from shared.campaigns.templates import MessageTemplate, compile_template, render
from shared.db import Database, copy_rows
from shared.errors import Conflict, InsufficientCredits, NotFound, ValidationFailed
from shared.ids import new_id
from shared.ledger import book
from shared.messaging.estimate import charge_for
from shared.messaging.messages import parse_send_at
from shared.messaging.phone_numbers import country_of
from shared.messaging.quiet_hours import parse_window
from shared.messaging.rates import RateCard
from shared.messaging.segments import MAX_BODY_CHARACTERS, count_segments
from shared.messaging.send_cap import DailySends, SendCap
from shared.messaging.send_policy import account_window
from shared.models import Account, Campaign, CampaignRecipient, CampaignStep, PhoneNumber, User
from shared.money import format_credits
from shared.reporting.scheduled import scheduled_sends

MAX_RECIPIENTS = 250_000
RECIPIENT_CHUNK = 10_000  # recipients per unit of work while creating: a short hold of the write lock
CREATING = "creating"  # a campaign whose recipients are still being written: never started
MAX_STEPS = 10
MAX_DELAY_DAYS = 365


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
    user_id: str | None = None  # the user sending: a role-`user` user's campaign draws on its own credits



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
    step_credits: list[int] = field(default_factory=list)  # per step, in step order
    # per step, (position, to, credits) of each sendable recipient in the order the fan-out sends them
    sends: list[list[tuple[int, str, int]]] = field(default_factory=list, repr=False)
    warnings: list[str] = field(default_factory=list)  # the pre-flight's, for an overdraft or postpaid account

    def as_dict(self) -> dict:
        return {"recipients": self.recipients, "sendable": self.sendable, "skipped": dict(self.skipped),
                "messages": self.messages, "segments": self.segments, "ucs2_messages": self.ucs2_messages,
                "credits_total": format_credits(self.credits_total), "warnings": self.warnings}



@dataclass
class _Plan:
    """A checked campaign, ready to write: everything creation computes before its first write."""

    name: str
    from_: str
    sender_type: str
    start: datetime
    scheduled: bool
    window: dict
    delays: list[int]
    templates: list[MessageTemplate]
    recipients: list[Recipient]
    numbers: list[str | None]
    skips: list[str | None]
    user_id: str | None


def create_campaign(database: Database, account_id: str, request: CampaignRequest, *, rate_card: RateCard,
                    now: datetime, cap: SendCap, campaign_id: str | None = None) -> tuple[Campaign, GroupEstimate]:
    """Validate, estimate and store a campaign and its recipients; the fan-out sends it from `send_at`.

    Its sendable recipients count against a new account's daily cap (shared.messaging.send_cap), taken
    with the campaign row, once.

    Everything is checked and priced before the first write, reading in a read-only transaction (no
    write lock). Then short units of work: the campaign row as `creating` (not startable: it has no
    steps, the fan-out skips it and it cannot be paused or resumed), its recipients RECIPIENT_CHUNK at a
    time, and last the steps with the status that starts it. So 230,000 recipients never hold SQLite's
    write lock for more than one chunk, and a creation stopped half-way sends nothing. Given the same
    `campaign_id` again (the caller derives it from its Idempotency-Key) it picks up where it stopped:
    each chunk inserts only the positions not written yet, and a finished campaign is returned as is.
    """
    with database.read_only() as session:
        plan = _plan(session, account_id, request, now)
    estimate = _estimate(plan, rate_card)
    campaign_id = campaign_id or new_id("cmp")
    with database.read_only() as session:
        if session.get(Campaign, campaign_id) is None:  # a retry of one already begun was checked the first time
            _preflight(session, account_id, plan, estimate, now)
    with database.unit_of_work() as session:
        campaign = _begin(session, campaign_id, account_id, plan, estimate, cap, now)
    if campaign.status != CREATING:
        return campaign, estimate
    for start in range(0, len(plan.recipients), RECIPIENT_CHUNK):
        database.yield_to_writers()
        with database.unit_of_work() as session:
            _write_recipients(session, campaign_id, plan, start)
    with database.unit_of_work() as session:
        return _finish(session, campaign_id, plan, estimate.step_credits, now), estimate


def _plan(session: Session, account_id: str, request: CampaignRequest, now: datetime) -> _Plan:
    """Every check, with the reads they need (the sender, the account's state, opt-outs)."""
    account = session.get(Account, account_id)
    if account is None:
        raise NotFound(f"No account {account_id}.")
    # a locked or suspended account, or a locked user, cannot start one (423); an unknown user is a 404
    book.available_for(session, account_id, request.user_id, now=now)
    errors: dict[str, str] = {}
    name = request.name if isinstance(request.name, str) and request.name.strip() else None
    if name is None or len(name) > 200:
        errors["name"] = "is required, at most 200 characters"
    from_, sender_type = _sender(session, account_id, request.from_, errors)
    send_at = parse_send_at(request.send_at, now, errors)
    # without a window of its own a campaign keeps the account's (the TCPA's 08:00-21:00 unless it set another)
    window = account_window(account) if request.quiet_hours is None else _collect(
        errors, lambda: parse_window(request.quiet_hours))
    delays = _steps(request.steps, errors)
    recipients = _collect(errors, lambda: _recipients(request))
    if errors:
        raise ValidationFailed("Invalid campaign: " + "; ".join(f"{f} {r}" for f, r in errors.items()),
                               errors=errors)
    known = {"to"}.union(*(recipient.fields for recipient in recipients))
    templates = [compile_template(request.body, field="body", known_fields=known)]
    templates += [compile_template(step.get("body"), field=f"steps[{index}].body", known_fields=known)
                  for index, step in enumerate(request.steps or [])]
    numbers, skips = skip_reasons(session, account_id, recipients)
    return _Plan(name=name.strip(), from_=from_, sender_type=sender_type, start=send_at or now,
                 scheduled=send_at is not None, window=window.as_dict(), delays=delays, templates=templates,
                 recipients=recipients, numbers=numbers, skips=skips, user_id=request.user_id)


def _estimate(plan: _Plan, rate_card: RateCard) -> GroupEstimate:
    """Price every sendable recipient's own rendered bodies (CPU only: no transaction is open)."""
    estimate = GroupEstimate(recipients=len(plan.recipients), skipped=Counter(r for r in plan.skips if r),
                             step_credits=[0] * len(plan.templates), sends=[[] for _ in plan.templates])
    pricer = Pricer(rate_card, plan.sender_type)
    for position, (recipient, number, skip) in enumerate(zip(plan.recipients, plan.numbers, plan.skips)):
        if skip:
            continue
        estimate.sendable += 1
        fields = {**recipient.fields, "to": number}
        for step, template in enumerate(plan.templates):
            priced = pricer.price(render_body(template, fields, recipient=recipient.where), number)
            estimate.messages += 1
            estimate.segments += priced.segments
            estimate.credits_total += priced.credits
            estimate.step_credits[step] += priced.credits
            estimate.sends[step].append((position, number, priced.credits))
            estimate.ucs2_messages += priced.encoding == "UCS-2"
    return estimate


def _preflight(session: Session, account_id: str, plan: _Plan, estimate: GroupEstimate, now: datetime) -> None:
    """Refuse (prepaid) or warn (overdraft, postpaid) when the campaign does not fit; see the module docstring."""
    spendable = book.available_for(session, account_id, plan.user_id, now=now)  # a hold's room; None: no limit
    own_credits = (plan.user_id is not None
                   and session.scalar(select(User.role).where(User.id == plan.user_id)) == "user")
    last_step = plan.start + timedelta(days=max([0, *plan.delays]))
    others = sum(credits for _, credits in scheduled_sends(
        session, [account_id], until=last_step + timedelta(microseconds=1),
        user_id=plan.user_id if own_credits else None).get(account_id, []))
    total = estimate.credits_total
    if own_credits or session.get(Account, account_id).overdraft_policy == "prepaid":
        if total > spendable - others:
            stop = _stop(estimate, spendable - others)
            raise InsufficientCredits(
                f"The campaign needs {format_credits(total)} credits and {format_credits(max(spendable - others, 0))} "
                f"are available after the sends already scheduled: it would stop at {_where(stop)}.",
                available=max(spendable - others, 0), required=total, stops_at=stop)
        return
    above_zero = book.balance(session, account_id, now=now).pool_available - others
    if total > above_zero:
        estimate.warnings.append(f"the balance would go below zero at {_where(_stop(estimate, above_zero))}: "
                                 "the rest is charged to the overdraft")
    if spendable is not None and total > spendable - others:
        estimate.warnings.append(f"the overdraft limit would stop it at {_where(_stop(estimate, spendable - others))}: "
                                 "the rest parks until credits are added")


def _where(stop: dict) -> str:
    return f"recipient {stop['position'] + 1} ({stop['to']}) of step {stop['step']}"


def _stop(estimate: GroupEstimate, budget: int) -> dict:
    """The first send, in the fan-out's order, that the budget no longer covers."""
    spent = 0
    for step, sends in enumerate(estimate.sends):
        for position, to, credits in sends:
            spent += credits
            if spent > budget:
                return {"step": step, "position": position, "to": to}
    raise AssertionError("the campaign fits the budget")


def _begin(session: Session, campaign_id: str, account_id: str, plan: _Plan, estimate: GroupEstimate,
           cap: SendCap, now: datetime) -> Campaign:
    """The campaign row, `creating`, and the daily cap taken; a retry finds the one its first try began (or
    finished), and takes nothing again."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is not None:
        if campaign.account_id != account_id:
            raise Conflict(f"Campaign {campaign_id} belongs to another account.")
        return campaign
    if estimate.sendable:
        account = session.get(Account, account_id)
        DailySends(session, cap, now).take(account_id, created_at=account.created_at, timezone=account.timezone,
                                           count=estimate.sendable)
    campaign = Campaign(id=campaign_id, account_id=account_id, user_id=plan.user_id, name=plan.name, from_=plan.from_,
                        status=CREATING,
                        quiet_start=plan.window["start"], quiet_end=plan.window["end"],
                        recipients=len(plan.recipients), credits_estimated=estimate.credits_total,
                        send_at=plan.start, created_at=now, updated_at=now)
    session.add(campaign)
    return campaign


def _write_recipients(session: Session, campaign_id: str, plan: _Plan, start: int) -> None:
    """Positions start .. start + RECIPIENT_CHUNK in one COPY, unless a try before (a retried request) wrote them.

    A chunk is written whole or not at all (its own unit of work), so its first position tells; the campaign's
    row lock makes a twin request running at the same moment wait for this one's commit, then skip.
    """
    session.execute(select(Campaign.id).where(Campaign.id == campaign_id).with_for_update())
    if session.scalar(select(CampaignRecipient.id).where(CampaignRecipient.campaign_id == campaign_id,
                                                         CampaignRecipient.position == start)) is not None:
        return
    copy_rows(session, CampaignRecipient.__table__, [
        {"campaign_id": campaign_id, "position": position, "to": number or recipient.to[:32],
         "fields": recipient.fields, "skip_reason": skip}
        for position, recipient, number, skip in zip(
            range(start, start + RECIPIENT_CHUNK), plan.recipients[start:start + RECIPIENT_CHUNK],
            plan.numbers[start:start + RECIPIENT_CHUNK], plan.skips[start:start + RECIPIENT_CHUNK])])


def _finish(session: Session, campaign_id: str, plan: _Plan, step_credits: list[int], now: datetime) -> Campaign:
    """Every recipient is written: add the steps and make the campaign startable, once."""
    campaign = session.get(Campaign, campaign_id, with_for_update=True)
    if campaign.status != CREATING:  # a twin finished it, or it was canceled meanwhile
        return campaign
    session.execute(insert(CampaignStep), [
        {"campaign_id": campaign_id, "step": index, "delay_days": delay, "body": template.source,
         "status": "pending", "chunks": 0, "starts_at": plan.start + timedelta(days=delay),
         "credits_estimated": credits}
        for index, (template, delay, credits) in enumerate(zip(plan.templates, [0, *plan.delays], step_credits))
    ])
    campaign.status = "scheduled" if plan.scheduled else "running"
    campaign.updated_at = now
    return campaign


def _collect(errors: dict[str, str], check):
    try:
        return check()
    except ValidationFailed as error:
        errors.update(error.errors or {"request": str(error)})
        return None


def _recipients(request: CampaignRequest) -> list[Recipient]:
    if request.recipients is None and request.csv is None:
        reason = "is required: give recipients (a list) or csv (text)"
        raise ValidationFailed(f"recipients {reason}", errors={"recipients": reason})
    if request.recipients is not None and request.csv is not None:
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
    if not isinstance(raw, str):  # PostgreSQL refuses to compare a number (or a list) with a phone's text
        errors["from"] = "must be a sender number of this account, as text (POST /v1/accounts/{id}/numbers)"
        return None, "long_code"
    phone = looks_like_e164(raw)
    sender_type = session.scalar(select(PhoneNumber.type).where(  # a released number is no sender until added again
        PhoneNumber.account_id == account_id, PhoneNumber.phone == (phone or raw), PhoneNumber.released_at.is_(None)))
    if sender_type is None:
        errors["from"] = "is not a sender number of this account (POST /v1/accounts/{id}/numbers)"
    return phone or raw, sender_type or "long_code"


def _steps(raw: object, errors: dict[str, str]) -> list[int]:
    """The drip steps' delays, in days after the campaign starts: whole numbers, not decreasing."""
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_STEPS:
        errors["steps"] = f"must be a list of at most {MAX_STEPS} {{delay_days, body}}"
        return []
    delays = []
    for index, step in enumerate(raw):
        for name in sorted(set(step) - {"delay_days", "body"}) if isinstance(step, dict) else ():
            errors[f"steps[{index}].{name}"] = "is not a field of a step: delay_days and body only"
        delay = step.get("delay_days") if isinstance(step, dict) else None
        if isinstance(delay, bool) or not isinstance(delay, int) or not 1 <= delay <= MAX_DELAY_DAYS \
                or (delays and delay < delays[-1]):
            errors[f"steps[{index}].delay_days"] = (f"must be a whole number of days from 1 to {MAX_DELAY_DAYS}, "
                                                    "counted from the start, not less than the step before")
        delays.append(delay if isinstance(delay, int) else 0)
    return delays


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
    """Prices bodies for one sender; segment counts, countries and prices are memoized (many bodies and prefixes
    repeat, and a campaign's bodies come in a few lengths to a few countries)."""

    def __init__(self, rate_card: RateCard, sender_type: str):
        self.rate_card = rate_card
        self.sender_type = sender_type
        self._segments: dict[str, tuple[int, str]] = {}
        self._countries: dict[str, str] = {}
        self._prices: dict[tuple[int, str, str], Priced] = {}

    def price(self, body: str, number: str, country: str | None = None) -> Priced:
        counted = self._segments.get(body)
        if counted is None:
            result = count_segments(body)
            counted = self._segments[body] = (result.segments, result.encoding)
        key = (*counted, country or self.country(number))
        priced = self._prices.get(key)
        if priced is None:
            charge = charge_for(counted[0], country=key[2], sender_type=self.sender_type, channel="sms",
                                rate_card=self.rate_card)
            priced = self._prices[key] = Priced(counted[0], counted[1], sum(charge))
        return priced

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
