"""Dunning: when a recharge or a month-end bill is not paid, remind the customer and retry on a schedule.

A run follows the account's schedule of steps (day offsets from the failure). Each step retries the
payment, then emails and/or texts the account's owner — Liquid templates rendered with the customer's
name, the amount due and the link to update the card. A successful payment (a step's retry, or a retry
after the card is updated) ends the run and lifts a dunning suspension; after the last step the run is
`exhausted` and its final action (`suspend`) applies.

Every step is idempotent per (run, step): its row records the payment it made and each send, marked
before the send, so a replayed step never charges or texts twice. A text whose outcome is unknown
(the worker died mid-request) is not sent again.
"""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import phonenumbers
from liquid import Environment, StrictUndefined
from liquid.exceptions import LiquidError
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.billing import payment_links
from shared.billing.dunning_texts import DunningTexter, SmsOutcome
from shared.billing.payments import PaymentGateway
from shared.billing.purchases import charge_payment, open_payment, payment_method_on_file, retry
from shared.db import Database
from shared.email import Email, EmailSender
from shared.errors import NotFound, ValidationFailed
from shared.ids import new_id
from shared.ledger import book
from shared.messaging.opt_outs import is_opted_out
from shared.messaging.segments import count_segments
from shared.models import Account, DunningRun, DunningSchedule, DunningStep, Payment, User

FINAL_ACTIONS = ("suspend", "none")
MAX_STEPS = 10
SUSPENSION_PREFIX = "dunning: "
VARIABLES = ("customer_name", "account_name", "amount_due", "update_link", "step", "steps", "final_action")
_STOP = re.compile(r"\bSTOP\b")
_HELP = re.compile(r"\bHELP\b")

_liquid = Environment(undefined=StrictUndefined)

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
                 site: object = "default", update_url: object = None, public_base_url: str,
                 now: datetime) -> ScheduleView:
    """Validate and save; a text template that is valid but risky (no STOP/HELP, over one segment) is
    saved with a warning rather than refused."""
    account = _account(session, account_id)
    normalized = _check_steps(steps)
    if final_action not in FINAL_ACTIONS:
        raise ValidationFailed(f"final_action must be one of {', '.join(FINAL_ACTIONS)}",
                               errors={"final_action": f"must be one of {', '.join(FINAL_ACTIONS)}"})
    if not isinstance(site, str) or not 0 < len(site) <= 64:
        raise ValidationFailed("site must be a name of 1 to 64 characters", errors={"site": "must be 1-64 characters"})
    if update_url is not None and not (isinstance(update_url, str) and update_url.startswith(("http://", "https://"))
                                       and len(update_url) <= 500):
        raise ValidationFailed("update_url must be an http(s) URL", errors={"update_url": "must be an http(s) URL"})
    warnings = _warnings(session, account, normalized, final_action, update_url, public_base_url, now)
    schedule = session.get(DunningSchedule, account_id)
    if schedule is None:
        schedule = DunningSchedule(account_id=account_id)
        session.add(schedule)
    schedule.steps, schedule.final_action, schedule.site = normalized, final_action, site
    schedule.update_url, schedule.updated_at = update_url, now
    session.flush()
    return ScheduleView(account_id, site, normalized, final_action, update_url, warnings, False)


def get_schedule(session: Session, account_id: str, *, public_base_url: str, now: datetime) -> ScheduleView:
    account = _account(session, account_id)
    schedule = session.get(DunningSchedule, account_id)
    if schedule is None:
        return ScheduleView(account_id, "default", DEFAULT_STEPS, "suspend", None,
                            _warnings(session, account, DEFAULT_STEPS, "suspend", None, public_base_url, now), True)
    return ScheduleView(account_id, schedule.site, schedule.steps, schedule.final_action, schedule.update_url,
                        _warnings(session, account, schedule.steps, schedule.final_action, schedule.update_url,
                                  public_base_url, now), False)


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
        _liquid.from_string(source).render(**{name: "x" for name in VARIABLES})
    except LiquidError as error:
        errors[field] = f"is not a valid template ({str(error).splitlines()[0]}); variables: {', '.join(VARIABLES)}"


def _warnings(session: Session, account: Account, steps: list[dict], final_action: str, update_url: str | None,
              public_base_url: str, now: datetime) -> list[str]:
    """What to fix in the texts: judged on this account's real name and link and a four-digit amount."""
    context = _context(session, account, amount_cents=123456, currency="usd", step=1, steps=len(steps),
                       final_action=final_action, update_url=update_url, public_base_url=public_base_url, now=now)
    warnings = []
    for i, step in enumerate(steps):
        if not step.get("sms"):
            continue
        body = render(step["sms"]["body"], context)
        missing = [word for word, pattern in (("STOP", _STOP), ("HELP", _HELP)) if not pattern.search(body)]
        if missing:
            warnings.append(f"steps[{i}].sms.body lacks {' and '.join(missing)} wording "
                            f"(e.g. \"Reply HELP for help, STOP to opt out.\")")
        segments = count_segments(body).segments
        if segments > 1:
            warnings.append(f"steps[{i}].sms.body renders to {segments} segments; keep it to one")
    return warnings


def render(source: str, context: dict) -> str:
    return _liquid.from_string(source).render(**context)


def _context(session: Session, account: Account, *, amount_cents: int, currency: str, step: int, steps: int,
             final_action: str, update_url: str | None, public_base_url: str, now: datetime) -> dict:
    owner = _owner(session, account.id)
    return {
        "customer_name": owner.name if owner else account.name,
        "account_name": account.name,
        "amount_due": format_money(amount_cents, currency),
        "update_link": update_url or payment_links.update_link(public_base_url, account.id, now=now),
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
    """Start a run for an unpaid amount (idempotent per reference), in the caller's transaction.

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
    schedule = session.get(DunningSchedule, account_id)
    steps = schedule.steps if schedule else DEFAULT_STEPS
    if payment_method is None:
        payment_method = payment_method_on_file(session, account_id)
    run = DunningRun(id=new_id("dun"), account_id=account_id, unpaid_account_id=account_id, reason=reason,
                     references=[reference], amount_cents=amount_cents, currency=currency, credits=credits_mc,
                     payment_method=payment_method, steps=steps, site=schedule.site if schedule else "default",
                     final_action=schedule.final_action if schedule else "suspend",
                     update_url=schedule.update_url if schedule else None, status="open", next_step=0,
                     next_step_at=now + timedelta(days=steps[0]["day"]), started_at=now)
    session.add(run)
    session.flush()
    return run


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
        payment = _open_run_payment(session, run, key=f"dunning:{run.id}:card:{run.payment_method}", now=now)
    return charge_payment(database, gateway, payment.id, now=now, then=record_payment)


@dataclass(frozen=True)
class StepOutcome:
    status: str  # skipped | recovered | advanced | exhausted
    payment_status: str | None = None
    email_status: str | None = None
    sms_status: str | None = None


def run_step(database: Database, *, gateway: PaymentGateway, email_sender: EmailSender, texter: DunningTexter,
             public_base_url: str, run_id: str, step: int, now: datetime) -> StepOutcome:
    """Retry the payment, then remind by email and text, then move on (or take the final action)."""
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
            return StepOutcome("recovered")
        account = session.get(Account, run.account_id)
        owner = _owner(session, run.account_id)
        context = _context(session, account, amount_cents=run.amount_cents, currency=run.currency, step=step + 1,
                           steps=len(run.steps), final_action=run.final_action, update_url=run.update_url,
                           public_base_url=public_base_url, now=now)
    email_status = _email(database, email_sender, run_id, step, spec, owner, context)
    sms_status = _sms(database, texter, run, step, spec, owner, context, now)
    status = _advance(database, run_id, step, now)
    return StepOutcome(status, payment.status if payment else None, email_status, sms_status)


def _open_run_payment(session: Session, run: DunningRun, *, key: str, now: datetime) -> Payment:
    payment = open_payment(session, run.account_id, source="dunning", idempotency_key=key, credits_mc=run.credits,
                           amount_cents=run.amount_cents, currency=run.currency, payment_method=run.payment_method,
                           now=now, dunning_run_id=run.id)
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


def _email(database: Database, sender: EmailSender, run_id: str, step: int, spec: dict, owner: User | None,
           context: dict) -> str | None:
    """Emails are resent when their outcome is unknown: the same key gives the same Message-ID."""
    if not spec.get("email"):
        return None
    done = _current(database, run_id, step, "email_status")
    if done is not None and done != "sending":
        return done
    if owner is None or not owner.email:
        status = "skipped: the account has no owner with an email address"
    else:
        _mark(database, run_id, step, email_status="sending")
        sender.send(Email(to=owner.email, subject=render(spec["email"]["subject"], context),
                          body=render(spec["email"]["body"], context), key=f"dunning:{run_id}:{step}"))
        status = f"sent to {owner.email}"
    _mark(database, run_id, step, email_status=status)
    return status


def _sms(database: Database, texter: DunningTexter, run: DunningRun, step: int, spec: dict, owner: User | None,
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
    with database.unit_of_work() as session:
        phone = owner.phone if owner else None
        if not phone or not _is_mobile(phone):
            status = "skipped: the owner has no mobile number"
        elif is_opted_out(session, run.account_id, phone):
            status = "skipped: the owner opted out of texts"
        else:
            status = texter.unavailable_reason(session, run.site)
    if status is not None:
        _mark(database, run.id, step, sms_status=status)
        return status
    _mark(database, run.id, step, sms_status="sending")
    outcome: SmsOutcome = texter.send(database, run.site, to=phone, body=render(spec["sms"]["body"], context), now=now)
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
        if step + 1 < len(run.steps):
            run.next_step = step + 1
            run.next_step_at = run.started_at + timedelta(days=run.steps[step + 1]["day"])
            return "advanced"
        run.status, run.next_step_at, run.ended_at = "exhausted", None, now
        run.ended_reason = f"unpaid after {len(run.steps)} steps; final action: {run.final_action}"
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
