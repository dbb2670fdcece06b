"""Dunning: remind someone who owes money on a schedule of steps (day offsets from the failure), by e-mail and
text, until it is paid. One machine, two users:

- An account's customers (`reason` customer): its billing system opens a run for a customer whose payment
  failed, on the account's schedule and one of its sites (shared.billing.dunning_texts); each step's text
  goes through the message pipeline from the site's number with the site's credentials, metered against
  the account, quiet hours and opt-outs applied, and its e-mail through the deployment's sender. The
  integration ends the run (`resolve` when paid, `cancel`) and hears of each step by events
  (`dunning.step_sent`, `dunning.exhausted`).
- creditq's own accounts (`reason` auto_recharge or month_end): a failed recharge or bill is chased on the
  built-in schedule from creditq's built-in site: each step retries the payment, then reminds the owner;
  these texts are creditq's, sent straight through Twilio, never charged to nor parked by the account they
  chase. A payment ends the run and lifts a dunning suspension; after the last step the run is `exhausted`
  and its final action (`suspend`) applies.

Templates are Liquid: `customer.id`, `customer.name`, `customer.fields.*`, `amount_due`, `currency`,
`update_url`, `site` (and the older `customer_name`, `update_link`, `account_name`, `step`, `steps`).
Every step is idempotent per (run, step): its row records the payment it made and each send, marked
before the send (a customer's text: its message, created in the same transaction as the mark), so a
replayed step never charges or texts twice. A text whose outcome is unknown (the worker died mid-request)
is not sent again.
"""

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

import phonenumbers
from liquid import StrictUndefined
from liquid.exceptions import LiquidError
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.billing import payment_links
from shared.billing.dunning_texts import BUILT_IN_SITE, DunningTexter, SmsOutcome, check_site_name
from shared.billing.payments import PaymentGateway
from shared.billing.purchases import charge_payment, in_play, open_payment, payment_method_on_file, retry
from shared.db import Database
from shared.email import Email, EmailSender
from shared.errors import Conflict, DomainError, NotFound, ValidationFailed
from shared.events.outbox import emit
from shared.ids import new_id
from shared.ledger import book
from shared.messaging.liquid_limits import BoundedEnvironment
from shared.messaging.messages import MessageRequest, accept_message
from shared.messaging.opt_outs import is_opted_out
from shared.messaging.phone_numbers import extension_of, parse_e164
from shared.messaging.rates import RateCard
from shared.messaging.segments import count_segments
from shared.messaging.send_cap import SendCap
from shared.messaging.sites import is_opted_out_of_site
from shared.models import Account, DunningIntegration, DunningRun, DunningSchedule, DunningStep, Message, Payment, User

FINAL_ACTIONS = ("suspend", "none")
MAX_STEPS = 10
SUSPENSION_PREFIX = "dunning: "
VARIABLES = ("customer.id", "customer.name", "customer.fields.*", "amount_due", "currency", "update_url", "site",
             "customer_name", "account_name", "update_link", "step", "steps", "final_action")
CUSTOMER_ENDINGS = ("resolved", "canceled")  # how the account's integration ends a customer's run
_STOP = re.compile(r"\bSTOP\b")
_HELP = re.compile(r"\bHELP\b")

_liquid = BoundedEnvironment(undefined=StrictUndefined)

DEFAULT_STEPS = [
    {"day": 0, "retry": True,
     "email": {"subject": "Your payment of {{ amount_due }} did not go through",
               "body": "Hi {{ customer_name }},\n\nWe could not charge {{ amount_due }} for {{ account_name }}. "
                       "Please update your payment method: {{ update_link }}\n\nWe will try again in a few days."},
     "sms": {"body": "creditq: payment of {{ amount_due }} failed. Update your card: {{ update_link }} "
                     "Reply HELP for help, STOP to opt out."}},
    {"day": 3, "retry": True,
     "email": {"subject": "Reminder: {{ amount_due }} is still due",
               "body": "Hi {{ customer_name }},\n\n{{ amount_due }} for {{ account_name }} is still unpaid. "
                       "Update your payment method: {{ update_link }}"},
     "sms": {"body": "creditq: {{ amount_due }} is still due. Update your card: {{ update_link }} "
                     "Reply HELP for help, STOP to opt out."}},
    {"day": 7, "retry": True,
     "email": {"subject": "Final notice: {{ account_name }} will be suspended",
               "body": "Hi {{ customer_name }},\n\nWe still could not collect {{ amount_due }}. Sending is "
                       "suspended until it is paid: {{ update_link }}"},
     "sms": {"body": "creditq: sending is suspended until {{ amount_due }} is paid: {{ update_link }} "
                     "Reply HELP for help, STOP to opt out."}},
]


@dataclass(frozen=True)
class ScheduleView:
    account_id: str
    site: str
    steps: list[dict]
    final_action: str
    update_url: str | None
    warnings: list[str]
    is_default: bool


# --- the schedule ----------------------------------------------------------------------------------

def set_schedule(session: Session, account_id: str, *, steps: object, final_action: object = "suspend",
                 site: object = BUILT_IN_SITE, update_url: object = None, now: datetime) -> ScheduleView:
    """Validate and save the schedule of the account's customers' runs (`site` and `update_url`: what a run that
    names none uses); a text template that is valid but risky (no STOP/HELP, over one segment) is saved with a
    warning rather than refused."""
    normalized = _check_steps(steps)  # before the first statement: the templates' renders hold no lock
    account = _account(session, account_id)
    if final_action not in FINAL_ACTIONS:
        raise ValidationFailed(f"final_action must be one of {', '.join(FINAL_ACTIONS)}",
                               errors={"final_action": f"must be one of {', '.join(FINAL_ACTIONS)}"})
    check_site_name(site)
    if update_url is not None and not (isinstance(update_url, str) and update_url.startswith(("http://", "https://"))
                                       and len(update_url) <= 500):
        raise ValidationFailed("update_url must be an http(s) URL", errors={"update_url": "must be an http(s) URL"})
    warnings = _warnings(normalized, account.name, site, update_url)
    schedule = session.get(DunningSchedule, account_id)
    if schedule is None:
        schedule = DunningSchedule(account_id=account_id)
        session.add(schedule)
    schedule.steps, schedule.final_action, schedule.site = normalized, final_action, site
    schedule.update_url, schedule.updated_at = update_url, now
    session.flush()
    return ScheduleView(account_id, site, normalized, final_action, update_url, warnings, False)


def get_schedule(session: Session, account_id: str) -> ScheduleView:
    account = _account(session, account_id)
    schedule = session.get(DunningSchedule, account_id)
    if schedule is None:
        return ScheduleView(account_id, BUILT_IN_SITE, DEFAULT_STEPS, "suspend", None,
                            _warnings(DEFAULT_STEPS, account.name, BUILT_IN_SITE, None), True)
    return ScheduleView(account_id, schedule.site, schedule.steps, schedule.final_action, schedule.update_url,
                        _warnings(schedule.steps, account.name, schedule.site, schedule.update_url), False)


def _check_steps(steps: object) -> list[dict]:
    if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_STEPS:
        raise ValidationFailed(f"steps must be a list of 1 to {MAX_STEPS} steps",
                               errors={"steps": f"must be a list of 1 to {MAX_STEPS} steps"})
    errors: dict[str, str] = {}
    normalized = []
    previous_day = -1
    for i, step in enumerate(steps):
        where = f"steps[{i}]"
        if not isinstance(step, dict):
            errors[where] = "must be an object"
            continue
        day = step.get("day")
        if isinstance(day, bool) or not isinstance(day, int) or day < 0 or day > 365:
            errors[f"{where}.day"] = "must be a whole number of days from 0 to 365"
        elif day <= previous_day:
            errors[f"{where}.day"] = "must come after the previous step's day"
        else:
            previous_day = day
        retry = step.get("retry", True)
        if not isinstance(retry, bool):
            errors[f"{where}.retry"] = "must be true or false"
        email, sms = step.get("email"), step.get("sms")
        if email is None and sms is None and not retry:
            errors[where] = "does nothing: give an email, an sms or retry"
        normalized.append({"day": day, "retry": retry,
                           "email": _message(email, ("subject", "body"), f"{where}.email", errors),
                           "sms": _message(sms, ("body",), f"{where}.sms", errors)})
    if errors:
        raise ValidationFailed("The dunning schedule is not valid: " + "; ".join(f"{k} {v}" for k, v in errors.items()),
                               errors=errors)
    return normalized


def _message(raw: object, parts: tuple[str, ...], where: str, errors: dict[str, str]) -> dict | None:
    """An email ({subject, body}) or a text ({body}) of a step, each part a valid template (else an error)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        errors[where] = f"must be an object with {' and '.join(parts)}"
        return None
    for part in parts:
        _check_template(raw.get(part), f"{where}.{part}", errors)
    return {part: raw.get(part) for part in parts}


def _check_template(source: object, field: str, errors: dict[str, str]) -> None:
    if not isinstance(source, str) or not source.strip() or len(source) > 5000:
        errors[field] = "must be a Liquid template of 1 to 5000 characters"
        return
    try:
        render(source, _sample_context("x", "x", None))
    except LiquidError as error:
        errors[field] = f"is not a valid template ({str(error).splitlines()[0]}); variables: {', '.join(VARIABLES)}"


def _warnings(steps: list[dict], account_name: str, site: str, update_url: str | None) -> list[str]:
    """What to fix in the texts, judged on a sample customer with a four-digit amount: no STOP or HELP wording, or
    more than one segment (with the encoding that made it so, as the estimate counts them)."""
    context = _sample_context(account_name, site, update_url)
    warnings = []
    for i, step in enumerate(steps):
        if not step.get("sms"):
            continue
        body = render(step["sms"]["body"], context)
        missing = [word for word, pattern in (("STOP", _STOP), ("HELP", _HELP)) if not pattern.search(body)]
        if missing:
            warnings.append(f"steps[{i}].sms.body lacks {' and '.join(missing)} wording "
                            f"(e.g. \"Reply HELP for help, STOP to opt out.\")")
        counted = count_segments(body)
        if counted.segments > 1:
            warnings.append(f"steps[{i}].sms.body renders to {counted.segments} segments ({counted.encoding}, "
                            f"{counted.characters} characters) for a sample customer; keep it to one")
    return warnings


class _BlankWhenMissing(dict):
    """A customer's `fields` in a step: a field this customer was not given renders empty, never stops the step."""

    def __missing__(self, name: str) -> str:
        return ""


class _AnyField(dict):
    """A sample customer's `fields`: every name a template asks for has a short value."""

    def __missing__(self, name: str) -> str:
        return "Gold"


def _sample_context(account_name: str, site: str, update_url: str | None) -> dict:
    return context_for({"id": "cus_8412", "name": "Dana Whitfield", "fields": _AnyField()}, account_name=account_name,
                       amount_cents=123456, currency="usd", update_url=update_url or "https://pay.example.com/u/8412",
                       site=site, step=1, steps=1, final_action="none")


def render(source: str, context: dict) -> str:
    return _liquid.from_string(source).render(**context)


def context_for(customer: dict, *, account_name: str, amount_cents: int, currency: str, update_url: str, site: str,
                step: int, steps: int, final_action: str) -> dict:
    """What a step's templates see."""
    return {
        "customer": {"id": customer["id"], "name": customer["name"], "fields": customer.get("fields", {})},
        "customer_name": customer["name"],
        "account_name": account_name,
        "amount_due": format_money(amount_cents, currency),
        "currency": currency.upper(),
        "update_url": update_url,
        "update_link": update_url,
        "site": site,
        "step": step,
        "steps": steps,
        "final_action": final_action,
    }


def format_money(cents: int, currency: str) -> str:
    whole, fraction = divmod(cents, 100)
    if currency.lower() == "usd":
        return f"${whole:,}.{fraction:02d}"
    return f"{whole:,}.{fraction:02d} {currency.upper()}"


# --- runs ------------------------------------------------------------------------------------------

def start_dunning(session: Session, account_id: str, *, reason: str, amount_cents: int, currency: str = "usd",
                  credits_mc: int = 0, payment_method: str | None = None, reference: str,
                  now: datetime) -> DunningRun:
    """Start creditq's own run for an account's unpaid amount (idempotent per reference), in the caller's
    transaction: the built-in schedule, texted from the built-in site.

    One unpaid run per account: a further unpaid bill (credits_mc 0) with a new reference adds its amount
    to it; a further failed recharge changes nothing. The payment method defaults to the card on file.
    """
    if isinstance(amount_cents, bool) or not isinstance(amount_cents, int) or amount_cents <= 0:
        raise ValueError(f"amount_cents must be a positive whole number of cents, not {amount_cents!r}")
    book.lock_account(session, account_id)
    run = session.scalar(select(DunningRun).where(DunningRun.unpaid_account_id == account_id).with_for_update())
    if run is not None:
        if reference not in run.references and credits_mc == 0:
            run.amount_cents += amount_cents
            run.references = [*run.references, reference]
        return run
    earlier = session.scalar(select(DunningRun).where(DunningRun.account_id == account_id,
                                                      DunningRun.reason == reason)
                             .order_by(DunningRun.started_at.desc()).limit(1))
    if earlier is not None and reference in earlier.references:
        return earlier  # a replay of a start whose run is already over
    if payment_method is None:
        payment_method = payment_method_on_file(session, account_id)
    run = DunningRun(id=new_id("dun"), account_id=account_id, unpaid_account_id=account_id, reason=reason,
                     references=[reference], amount_cents=amount_cents, currency=currency, credits=credits_mc,
                     payment_method=payment_method, steps=DEFAULT_STEPS, site=BUILT_IN_SITE, final_action="suspend",
                     update_url=None, status="open", next_step=0,
                     next_step_at=now + timedelta(days=DEFAULT_STEPS[0]["day"]), started_at=now)
    session.add(run)
    session.flush()
    return run


# --- runs for an account's customers ---------------------------------------------------------------

MAX_BACKDATE = timedelta(days=365)


def open_customer_run(session: Session, account_id: str, *, site: object, customer: object, amount_due: object,
                      currency: object, update_url: object = None, started_at: object = None,
                      now: datetime) -> DunningRun:
    """Open a run on the account's schedule for a customer whose payment failed, texting from the account's
    `site`. One open run per (site, customer id): a second is a Conflict naming the first. `started_at` (when the
    payment failed; default now) anchors the steps' days."""
    _account(session, account_id)
    schedule = session.get(DunningSchedule, account_id)
    if schedule is None:
        raise ValidationFailed("Save the dunning schedule first (PUT /v1/accounts/{id}/dunning).",
                               errors={"site": "the account has no dunning schedule"})
    errors: dict[str, str] = {}
    site = site if site is not None else schedule.site
    site_row = session.scalar(select(DunningIntegration).where(DunningIntegration.account_id == account_id,
                                                               DunningIntegration.site == site)) \
        if isinstance(site, str) else None
    if site_row is None:
        errors["site"] = "is not a dunning site of this account (PUT /v1/dunning/integrations/{site})"
    customer = _check_customer(customer, errors)
    amount_cents = _cents(amount_due, errors)
    if not (isinstance(currency, str) and re.fullmatch(r"[A-Za-z]{3}", currency)):
        errors["currency"] = "must be a three-letter ISO 4217 code"
    update_url = update_url if update_url is not None else schedule.update_url
    if not (isinstance(update_url, str) and update_url.startswith(("http://", "https://")) and len(update_url) <= 500):
        errors["update_url"] = "must be an http(s) URL (or the schedule's update_url)"
    started = _started_at(started_at, now, errors)
    if errors:
        raise ValidationFailed("Invalid dunning run: " + "; ".join(f"{k} {v}" for k, v in errors.items()),
                               errors=errors)
    key = f"{account_id}:{site_row.id}:{customer['id']}"
    running = session.scalar(select(DunningRun.id).where(DunningRun.open_customer_key == key))
    if running is not None:
        raise Conflict(f"Customer {customer['id']} already has an open run on site {site!r}: {running}.")
    steps = schedule.steps
    run = DunningRun(id=new_id("dun"), account_id=account_id, reason="customer", customer=customer,
                     open_customer_key=key, references=[], amount_cents=amount_cents, currency=currency.lower(),
                     credits=0, steps=steps, site=site, final_action="none", update_url=update_url, status="open",
                     next_step=0, next_step_at=started + timedelta(days=steps[0]["day"]), started_at=started)
    try:
        with session.begin_nested():  # a run opened for the same customer at the same moment: its key is taken
            session.add(run)
    except IntegrityError:
        raise Conflict(f"Customer {customer['id']} already has an open run on site {site!r}.") from None
    return run


def end_customer_run(session: Session, account_id: str, run_id: str, ending: str, *, now: datetime) -> DunningRun:
    """`resolved` (the customer paid) or `canceled`: no later step runs. A run already over stays as it is."""
    assert ending in CUSTOMER_ENDINGS, ending
    run = session.get(DunningRun, run_id, with_for_update=True)
    if run is None or run.account_id != account_id or run.reason != "customer":
        raise NotFound(f"No dunning run {run_id}.")
    if run.status == "open":
        run.status, run.next_step_at, run.open_customer_key = ending, None, None
        run.ended_at, run.ended_reason = now, f"{ending} by the account"
    return run


def get_customer_run(session: Session, account_id: str, run_id: str) -> tuple[DunningRun, list[dict]]:
    """The run and each step: when it is due, and what its e-mail and text did (the text as the pipeline has it)."""
    run = session.get(DunningRun, run_id)
    if run is None or run.account_id != account_id or run.reason != "customer":
        raise NotFound(f"No dunning run {run_id}.")
    done = {row.step: row for row in steps_of(session, [run.id])[run.id]}
    message_ids = [row.sms_message_id for row in done.values() if row.sms_message_id]
    messages = {m.id: m for m in session.scalars(select(Message).where(Message.id.in_(message_ids)))} \
        if message_ids else {}
    views = []
    for number, spec in enumerate(run.steps):
        row = done.get(number)
        message = messages.get(row.sms_message_id) if row and row.sms_message_id else None
        views.append({
            "step": number, "day": spec["day"], "due_at": run.started_at + timedelta(days=spec["day"]),
            "email": row.email_status if row else None, "sms": row.sms_status if row else None,
            "message": message, "started_at": row.started_at if row else None,
            "finished_at": row.finished_at if row else None})
    return run, views


def _check_customer(raw: object, errors: dict[str, str]) -> dict:
    if not isinstance(raw, dict):
        errors["customer"] = "must be an object {id, name, phone, email, fields}"
        return {}
    customer: dict = {}
    for name, limit in (("id", 100), ("name", 200)):
        value = raw.get(name)
        if not (isinstance(value, str) and 0 < len(value) <= limit):
            errors[f"customer.{name}"] = f"must be 1 to {limit} characters"
        customer[name] = value
    phone, email = raw.get("phone"), raw.get("email")
    if phone is not None:
        try:  # a billing system's office line: the run opens, its STOP counts, but no text goes to the line
            phone, extension = parse_e164(phone, field="customer.phone", drop_extension=True), extension_of(phone)
            if extension:
                customer["phone_extension"] = extension
        except ValidationFailed as error:
            errors.update(error.errors)
    if email is not None and not (isinstance(email, str) and re.fullmatch(r"[^@\s]+@[^@\s]+", email)
                                  and len(email) <= 320):
        errors["customer.email"] = "must be an e-mail address"
    if phone is None and email is None:
        errors["customer"] = "needs a phone or an email"
    elif customer.get("phone_extension") and email is None:
        errors["customer.phone"] = (f"has an extension ({customer['phone_extension']}), which a text cannot reach: "
                                    "give a number that takes texts, or an email")
    fields = raw.get("fields") or {}
    if not (isinstance(fields, dict) and len(fields) <= 50
            and all(isinstance(v, str | int | bool) or v is None or (isinstance(v, float) and math.isfinite(v))
                    for v in fields.values())):
        errors["customer.fields"] = "must be an object of at most 50 plain values"
    customer.update(phone=phone, email=email, fields=fields)
    return customer


def _cents(raw: object, errors: dict[str, str]) -> int:
    try:
        amount = Decimal(raw) if isinstance(raw, str) else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or not 0 < amount < 10 ** 12 \
            or amount != amount.quantize(Decimal("0.01")):
        errors["amount_due"] = "must be a positive decimal string with at most two decimals, such as \"49.90\""
        return 0
    return int(amount * 100)


def _started_at(raw: object, now: datetime, errors: dict[str, str]) -> datetime:
    if raw is None:
        return now
    try:
        started = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        started = None
    if started is None or started.tzinfo is None or not now - MAX_BACKDATE <= started <= now:
        errors["started_at"] = "must be an ISO-8601 time with an offset, in the past year"
        return now
    return started


def due_steps(session: Session, *, now: datetime, limit: int = 500) -> list[tuple[str, int]]:
    """(run, step) pairs whose time has come: what the periodic tick enqueues."""
    rows = session.execute(select(DunningRun.id, DunningRun.next_step).where(
        DunningRun.status == "open", DunningRun.next_step_at <= now).order_by(DunningRun.next_step_at).limit(limit))
    return [(row.id, row.next_step) for row in rows]


def list_runs(session: Session, account_id: str | None, *, limit: int = 50, before_id: str | None = None,
              status: str | None = None) -> list[DunningRun]:
    """The account's runs (None: every account's, the operator's view), of `status` if given, newest first
    (descending id); `steps_of` gives what each step did."""
    query = select(DunningRun)
    if account_id is not None:
        _account(session, account_id)
        query = query.where(DunningRun.account_id == account_id)
    if status is not None:
        query = query.where(DunningRun.status == status)
    if before_id is not None:
        query = query.where(DunningRun.id < before_id)
    return list(session.scalars(query.order_by(DunningRun.id.desc()).limit(limit)))


def steps_of(session: Session, run_ids: list[str]) -> dict[str, list[DunningStep]]:
    """run id -> its steps in order, for every run named (one query)."""
    steps: dict[str, list[DunningStep]] = {run_id: [] for run_id in run_ids}
    for step in session.scalars(select(DunningStep).where(DunningStep.run_id.in_(run_ids))
                                .order_by(DunningStep.run_id, DunningStep.step)):
        steps[step.run_id].append(step)
    return steps


def payment_method_updated(session: Session, account_id: str, payment_method: str, *, now: datetime) -> str | None:
    """The unpaid run (if any) pays with the new card from now on; returns its id so the caller retries it."""
    run = session.scalar(select(DunningRun).where(DunningRun.unpaid_account_id == account_id).with_for_update())
    if run is None:
        return None
    run.payment_method = payment_method
    return run.id


def record_payment(session: Session, payment: Payment) -> None:
    """A run's payment succeeded: the run is recovered and a dunning suspension lifted. In the payment's transaction."""
    if payment.status != "succeeded" or payment.dunning_run_id is None:
        return
    run = session.get(DunningRun, payment.dunning_run_id, with_for_update=True)
    if run is None or run.status == "recovered":
        return
    run.status, run.unpaid_account_id, run.next_step_at = "recovered", None, None
    run.ended_at, run.ended_reason = payment.updated_at, f"paid by {payment.id}"
    account = session.get(Account, run.account_id)
    if account.status == "suspended" and (account.status_reason or "").startswith(SUSPENSION_PREFIX):
        account.status, account.status_reason = "active", None


def retry_payment(database: Database, gateway: PaymentGateway, run_id: str, *, now: datetime) -> Payment | None:
    """Try the unpaid amount again now, outside the schedule (after the card was updated); no messages."""
    with database.unit_of_work() as session:
        run = session.get(DunningRun, run_id, with_for_update=True)
        if run is None or run.status == "recovered" or not run.payment_method:
            return None
        card = run.payment_method
        payment = _open_run_payment(session, run, key=f"dunning:{run.id}:card:{card}", now=now)
    payment = charge_payment(database, gateway, payment.id, now=now, then=record_payment)
    if payment.status in ("declined", "error") and payment.payment_method != card:
        return retry_payment(database, gateway, run_id, now=now)  # that was an earlier card's: now the new one's
    return payment


@dataclass(frozen=True)
class StepOutcome:
    status: str  # skipped | recovered | advanced | exhausted
    payment_status: str | None = None
    email_status: str | None = None
    sms_status: str | None = None


@dataclass(frozen=True)
class Pipeline:
    """How a customer run's texts enter the message pipeline: priced by `rate_card`, counted against `cap`, and each
    message's send job enqueued by `enqueue(message_id)` (if that is lost, the sweeper enqueues it)."""

    rate_card: RateCard
    cap: SendCap
    enqueue: Callable[[str], None]


def run_step(database: Database, *, gateway: PaymentGateway, email_sender: EmailSender, texter: DunningTexter,
             pipeline: Pipeline | None = None, public_base_url: str, run_id: str, step: int,
             now: datetime) -> StepOutcome:
    """Retry the payment (creditq's own runs), then remind by email and text, then move on (or take the final
    action). A customer run's text goes through `pipeline`; creditq's own through `texter`."""
    with database.unit_of_work() as session:
        run = session.get(DunningRun, run_id, with_for_update=True)
        if run is None or run.status != "open" or run.next_step != step:
            return StepOutcome("skipped")
        row = _step_row(session, run, step, now)
        spec = run.steps[step]
        payment = None
        if spec.get("retry", True) and run.payment_method and row.payment_id is None:
            payment = _open_run_payment(session, run, key=f"dunning:{run.id}:step:{step}", now=now)
            row.payment_id = payment.id
        payment_id = row.payment_id
    if payment_id is not None:
        payment = charge_payment(database, gateway, payment_id, now=now, then=record_payment)
        if payment.status == "succeeded":
            return StepOutcome("recovered", payment.status)
    with database.unit_of_work() as session:
        run = session.get(DunningRun, run_id)
        if run.status != "open":
            return StepOutcome(run.status)
        account = session.get(Account, run.account_id)
        if run.reason == "customer":
            customer = {**run.customer, "fields": _BlankWhenMissing(run.customer.get("fields") or {})}
            update_url = run.update_url
            email_to, phone = customer.get("email"), customer.get("phone")
        else:
            owner = _owner(session, run.account_id)
            customer = {"id": account.id, "name": owner.name if owner else account.name}
            email_to, phone = (owner.email, owner.phone) if owner else (None, None)
            update_url = payment_links.update_link(public_base_url, account.id, now=now)
        context = context_for(customer, account_name=account.name, amount_cents=run.amount_cents,
                              currency=run.currency, update_url=update_url, site=run.site, step=step + 1,
                              steps=len(run.steps), final_action=run.final_action)
    email_status = _email(database, email_sender, run, step, spec, email_to, context)
    if run.reason == "customer":
        sms_status = _customer_sms(database, pipeline, run, step, spec, phone, context, now)
    else:
        sms_status = _sms(database, texter, run, step, spec, phone, context, now)
    status = _advance(database, run_id, step, now)
    return StepOutcome(status, payment.status if payment else None, email_status, sms_status)


def _open_run_payment(session: Session, run: DunningRun, *, key: str, now: datetime) -> Payment:
    """The run's payment in play (purchases.in_play: a step's whose answer was lost, a new card's), else the one
    under `key`. Called with the run locked, so a step and a new card's retry at the same moment share one."""
    payment = session.scalar(select(Payment).where(Payment.dunning_run_id == run.id, in_play())
                             .order_by(Payment.created_at).limit(1))
    if payment is None:
        payment = open_payment(session, run.account_id, source="dunning", idempotency_key=key, credits_mc=run.credits,
                               amount_cents=run.amount_cents, currency=run.currency,
                               payment_method=run.payment_method, now=now, dunning_run_id=run.id)
    if payment.status == "error":
        retry(session, payment, now=now)
    return payment


def _step_row(session: Session, run: DunningRun, step: int, now: datetime) -> DunningStep:
    row = session.scalar(select(DunningStep).where(DunningStep.run_id == run.id, DunningStep.step == step))
    if row is None:
        row = DunningStep(run_id=run.id, step=step, started_at=now)
        session.add(row)
        session.flush()
    return row


def _mark(database: Database, run_id: str, step: int, **values) -> None:
    with database.unit_of_work() as session:
        row = session.scalar(select(DunningStep).where(DunningStep.run_id == run_id, DunningStep.step == step))
        for name, value in values.items():
            setattr(row, name, value)


def _current(database: Database, run_id: str, step: int, column: str) -> str | None:
    with database.unit_of_work() as session:
        row = session.scalar(select(DunningStep).where(DunningStep.run_id == run_id, DunningStep.step == step))
        return getattr(row, column)


def _email(database: Database, sender: EmailSender, run: DunningRun, step: int, spec: dict, to: str | None,
           context: dict) -> str | None:
    """Emails are resent when their outcome is unknown: the same key gives the same Message-ID."""
    if not spec.get("email"):
        return None
    done = _current(database, run.id, step, "email_status")
    if done is not None and done != "sending":
        return done
    if not to:
        status = ("skipped: the customer has no email address" if run.reason == "customer"
                  else "skipped: the account has no owner with an email address")
    else:
        try:
            subject, body = render(spec["email"]["subject"], context), render(spec["email"]["body"], context)
        except LiquidError as error:
            status = _unrendered(error)
        else:
            _mark(database, run.id, step, email_status="sending")
            sender.send(Email(to=to, subject=subject, body=body, key=f"dunning:{run.id}:{step}"))
            status = f"sent to {to}"
    _mark(database, run.id, step, email_status=status)
    return status


def _unrendered(error: LiquidError) -> str:
    """A step's status when its template cannot be rendered for this customer (their data passed a limit the
    sample did not): recorded, so the run goes on to its next step instead of trying this one for ever."""
    return f"not sent: the template cannot be rendered for this customer ({str(error).splitlines()[0]})"[:200]


def _customer_sms(database: Database, pipeline: Pipeline, run: DunningRun, step: int, spec: dict, phone: str | None,
                  context: dict, now: datetime) -> str | None:
    """The step's text becomes a message of the account, from the site's number, in the transaction that records
    it on the step row (locked): a replay finds the message and only enqueues it again (the send step skips a
    message already sent). Not sent while the site is broken or the customer texted STOP to it."""
    if not spec.get("sms"):
        return None
    with database.unit_of_work() as session:
        row = session.scalar(select(DunningStep).where(DunningStep.run_id == run.id, DunningStep.step == step)
                             .with_for_update())
        if row.sms_status is not None and row.sms_message_id is None:
            return row.sms_status
        if row.sms_message_id is None:
            site = session.scalar(select(DunningIntegration).where(DunningIntegration.account_id == run.account_id,
                                                                   DunningIntegration.site == run.site))
            if site is None:
                row.sms_status = f"skipped: the account has no site {run.site!r}"
            elif site.status != "ok":
                row.sms_status = f"blocked: the site's Twilio credentials are broken ({site.broken_reason})"[:200]
            elif not phone:
                row.sms_status = "skipped: the customer has no phone number"
            elif run.customer.get("phone_extension"):
                row.sms_status = (f"skipped: the customer's phone has an extension ({run.customer['phone_extension']}),"
                                  " which a text cannot reach")[:200]
            elif is_opted_out_of_site(session, site.id, phone):
                row.sms_status = "skipped: the customer texted STOP to this site"
            else:
                try:
                    body = render(spec["sms"]["body"], context)
                except LiquidError as error:
                    row.sms_status = _unrendered(error)
                else:
                    _accept_text(session, pipeline, run, row, site, phone, body, now)
        message_id, status = row.sms_message_id, row.sms_status
    if message_id is not None:
        pipeline.enqueue(message_id)
    return status


def _accept_text(session: Session, pipeline: Pipeline, run: DunningRun, row: DunningStep, site: DunningIntegration,
                 phone: str, body: str, now: datetime) -> None:
    """Accept the text as any message (priced, checked against the account's credits and opt-outs); it is sent
    with the site's credentials and counts as automated (`send_at`), so quiet hours apply."""
    try:
        message, _ = accept_message(session, run.account_id, MessageRequest(to=phone, from_=site.from_number,
                                                                            body=body),
                                    rate_card=pipeline.rate_card, now=now, cap=pipeline.cap)
    except DomainError as error:
        row.sms_status = f"not sent: {error}"[:200]
        return
    session.execute(update(Message).where(Message.id == message.id).values(dunning_site_id=site.id, send_at=now))
    row.sms_message_id, row.sms_status = message.id, f"{message.status}: {message.id}"


def _sms(database: Database, texter: DunningTexter, run: DunningRun, step: int, spec: dict, phone: str | None,
         context: dict, now: datetime) -> str | None:
    if not spec.get("sms"):
        return None
    done = _current(database, run.id, step, "sms_status")
    if done == "sending":
        status = "unknown: the worker stopped mid-send; not sent again"
        _mark(database, run.id, step, sms_status=status)
        return status
    if done is not None:
        return done
    body = None
    with database.unit_of_work() as session:
        if not phone or not _is_mobile(phone):
            status = "skipped: the owner has no mobile number"
        elif is_opted_out(session, run.account_id, phone):
            status = "skipped: the owner opted out of texts"
        else:
            status = texter.unavailable_reason(session, run.site)
    if status is None:
        try:
            body = render(spec["sms"]["body"], context)
        except LiquidError as error:
            status = _unrendered(error)
    if status is not None:
        _mark(database, run.id, step, sms_status=status)
        return status
    _mark(database, run.id, step, sms_status="sending")
    outcome: SmsOutcome = texter.send(database, run.site, to=phone, body=body, now=now)
    if outcome.retry:
        _mark(database, run.id, step, sms_status=None)
        raise outcome.error
    _mark(database, run.id, step, sms_status=outcome.status, sms_sid=outcome.sid)
    return outcome.status


def _advance(database: Database, run_id: str, step: int, now: datetime) -> str:
    with database.unit_of_work() as session:
        book.lock_account(session, session.get(DunningRun, run_id).account_id)  # account before run, as payments do
        run = session.get(DunningRun, run_id, with_for_update=True, populate_existing=True)
        if run.status != "open" or run.next_step != step:
            return "skipped"
        row = _step_row(session, run, step, now)
        row.finished_at = now
        if run.reason == "customer":
            emit(session, "dunning.step_sent", account_id=run.account_id, key=f"dunning.step_sent:{run.id}:{step}",
                 data={"run_id": run.id, "step": step, "site": run.site, "customer_id": run.customer["id"],
                       "email": row.email_status, "sms": row.sms_status, "message_id": row.sms_message_id}, now=now)
        if step + 1 < len(run.steps):
            run.next_step = step + 1
            run.next_step_at = run.started_at + timedelta(days=run.steps[step + 1]["day"])
            return "advanced"
        run.status, run.next_step_at, run.ended_at, run.open_customer_key = "exhausted", None, now, None
        run.ended_reason = f"unpaid after {len(run.steps)} steps; final action: {run.final_action}"
        if run.reason == "customer":
            emit(session, "dunning.exhausted", account_id=run.account_id, key=f"dunning.exhausted:{run.id}",
                 data={"run_id": run.id, "site": run.site, "customer_id": run.customer["id"],
                       "amount_due": str(Decimal(run.amount_cents) / 100), "currency": run.currency.upper(),
                       "steps": len(run.steps)}, now=now)
        if run.final_action == "suspend":
            account = session.get(Account, run.account_id)
            account.status = "suspended"
            account.status_reason = (f"{SUSPENSION_PREFIX}{format_money(run.amount_cents, run.currency)} unpaid; "
                                     f"update the payment method to resume")
        return "exhausted"


def _owner(session: Session, account_id: str) -> User | None:
    return session.scalar(select(User).where(User.account_id == account_id, User.role == "owner",
                                             User.deleted_at.is_(None)).order_by(User.created_at, User.id).limit(1))


def _is_mobile(phone: str) -> bool:
    try:
        number = phonenumbers.parse(phone)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number) and phonenumbers.number_type(number) in (
        phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)


def _account(session: Session, account_id: str) -> Account:
    account = session.get(Account, account_id)
    if account is None:
        raise NotFound(f"No account {account_id}.")
    return account
