"""Accounts: creation (with their API key), plan, overdraft policy, flags and threshold; closing and reopening.

Plan changes take effect at the next cycle (`next_plan_monthly_credits`); the calendar applies them.
Raising the `spam` flag takes the account's never-expiring credits back, purchased and bonus, but
for what pending holds took from them (book.remove_never_expiring). A closed (`canceled`) account takes no holds; its plan and rollover
credits are written off at once (book.expire_now) but for what its messages with Twilio still need.
Reopening it restarts its cycles (`cycle_anchor_at`) with a full first cycle of the plan given.
The operator's changes are recorded as account events (account_events) in the same transaction.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.api_keys import issue_key
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.ids import new_id
from shared.ledger import account_events, book
from shared.ledger.expiry import CYCLE_MONTHS, PROTECTED_KINDS, zone
from shared.models import Account

ROLLOVER_POLICIES = ("none", "fifo_12m")
OVERDRAFT_POLICIES = ("prepaid", "overdraft", "postpaid")
FLAGS = ("credit_hold", "rollover_protection", "spam")


@dataclass(frozen=True)
class Overdraft:
    policy: str
    limit: int = 0  # millicredits below zero an `overdraft` account may reach; 0 for the others


def create_account(session: Session, *, name: str, timezone: str, plan_monthly_credits: int, plan_cycle: str,
                   plan_rollover: str, overdraft: Overdraft, low_balance_threshold: int,
                   now: datetime) -> tuple[Account, str]:
    """A new active account and its API key (the only time the plain key exists).

    The first cycle's plan credits come with the plan, in full (not prorated), and expire when that
    first cycle ends; month-end grants every later cycle, so the two never overlap.
    """
    _check_timezone(timezone)
    _check_choice("plan.cycle", plan_cycle, tuple(CYCLE_MONTHS))
    _check_choice("plan.rollover", plan_rollover, ROLLOVER_POLICIES)
    account = Account(id=new_id("acct"), name=name, timezone=timezone, plan_monthly_credits=plan_monthly_credits,
                      plan_cycle=plan_cycle, plan_rollover=plan_rollover, low_balance_threshold=low_balance_threshold,
                      status="active", credit_hold=False, rollover_protection=False, spam=False,
                      balance=0, held=0, allocated=0, allocated_held=0, created_at=now, cycle_anchor_at=now)
    _set_overdraft(account, overdraft)
    session.add(account)
    session.flush()
    grant_first_cycle(session, account, now=now)
    session.refresh(account)  # the grant moved the totals with Core statements
    return account, issue_key(session, account.id)


def grant_first_cycle(session: Session, account: Account, *, now: datetime, key: str = "first-cycle") -> None:
    """The plan's credits for the cycle `now` falls in (cycles counted from `cycle_anchor_at`), in full, expiring
    when it ends; keyed, so a replay grants nothing."""
    amount = account.plan_monthly_credits * CYCLE_MONTHS[account.plan_cycle]
    if amount and not account.credit_hold:
        book.grant(session, account.id, amount, "rollover" if account.plan_rollover == "fifo_12m" else "plan",
                   granted_at=now, reference="plan:first-cycle", idempotency_key=f"plan:{account.id}:{key}")


STATUSES = ("active", "locked", "suspended", "canceled")


def find_accounts(session: Session, *, name: str | None = None, status: str | None = None,
                  locked: bool | None = None, negative: bool | None = None, limit: int,
                  before_id: str | None = None) -> list[Account]:
    """Accounts in descending id order (newest first): `name` is a part of the name, any case; `locked`: its
    balance went below what it may spend (status locked); `negative`: a balance below zero."""
    query = select(Account)
    if name is not None:
        query = query.where(func.lower(Account.name).contains(name.lower(), autoescape=True))
    if status is not None:
        query = query.where(Account.status == status)
    if locked is not None:
        query = query.where((Account.status == "locked") if locked else (Account.status != "locked"))
    if negative is not None:
        query = query.where((Account.balance < 0) if negative else (Account.balance >= 0))
    if before_id is not None:
        query = query.where(Account.id < before_id)
    return list(session.scalars(query.order_by(Account.id.desc()).limit(limit)))


def get_account(session: Session, account_id: str) -> Account:
    account = session.get(Account, account_id)
    if account is None:
        raise NotFound(f"No account {account_id}.")
    return account


def update_account(session: Session, account_id: str, *, now: datetime, name: str | None = None,
                   plan_monthly_credits: int | None = None, plan_cycle: str | None = None,
                   plan_rollover: str | None = None, overdraft: Overdraft | None = None,
                   low_balance_threshold: int | None = None, flags: dict[str, bool] | None = None,
                   actor: str = "operator") -> Account:
    """Apply the given changes (None = unchanged) under the account lock; plan, overdraft and flag changes are
    recorded as one `update` event."""
    book.lock_account(session, account_id)
    account = get_account(session, account_id)
    if name is not None:
        account.name = name
    if plan_monthly_credits is not None:
        account.next_plan_monthly_credits = plan_monthly_credits
    if plan_cycle is not None:
        _check_choice("plan.cycle", plan_cycle, tuple(CYCLE_MONTHS))
        account.plan_cycle = plan_cycle
    if plan_rollover is not None:
        _check_choice("plan.rollover", plan_rollover, ROLLOVER_POLICIES)
        account.plan_rollover = plan_rollover
    if overdraft is not None:
        _set_overdraft(account, overdraft)
    if low_balance_threshold is not None:
        account.low_balance_threshold = low_balance_threshold
    newly_spam = protection_changed = False
    for flag, value in (flags or {}).items():
        _check_choice("flags", flag, FLAGS)
        newly_spam |= flag == "spam" and value and not account.spam
        protection_changed |= flag == "rollover_protection" and value != account.rollover_protection
        setattr(account, flag, value)
    session.flush()
    if protection_changed:  # lots it kept past their expiry lapse as soon as it is off
        book.refresh_next_expiry(session, account_id)
        book.expire_lots(session, account_id, now=now)
    removed = book.remove_never_expiring(session, account_id, now=now) if newly_spam else 0
    if protection_changed or newly_spam:
        session.refresh(account)
    detail = {name: value for name, value in (
        ("plan", {"monthly_credits": plan_monthly_credits, "cycle": plan_cycle, "rollover": plan_rollover}),
        ("overdraft", overdraft and {"policy": overdraft.policy, "limit": overdraft.limit}),
        ("flags", flags or None)) if value and any(v is not None for v in value.values())}
    if detail:
        if removed:
            detail["never_expiring_removed"] = removed
        account_events.record(session, account_id, "update", actor=actor, detail=detail, now=now)
    return account


def close_account(session: Session, account_id: str, *, reason: str, now: datetime) -> int | None:
    """Cancel the account: no more holds, its plan and rollover credits written off at once but for what pending
    holds still need (book.expire_now); never-expiring credits stay. Returns mc written off; None if it was
    canceled already (nothing changes)."""
    book.lock_account(session, account_id)
    account = get_account(session, account_id)
    if account.status == "canceled":
        return None
    # rollover protection is a plan's: it ends with the account, so nothing keeps its credits from expiring
    account.status, account.status_reason, account.canceled_at = "canceled", reason, now
    account.rollover_protection = False
    session.flush()
    expired = book.expire_now(session, account_id, kinds=PROTECTED_KINDS, now=now)
    session.refresh(account)
    return expired


def reopen_account(session: Session, account_id: str, *, plan_monthly_credits: int, plan_cycle: str,
                   plan_rollover: str, now: datetime) -> Account:
    """Reactivate a canceled account on the plan given: its cycles restart now, the first one granted in full.

    Conflict unless it is canceled; the never-expiring credits it kept are spendable again.
    """
    _check_choice("plan.cycle", plan_cycle, tuple(CYCLE_MONTHS))
    _check_choice("plan.rollover", plan_rollover, ROLLOVER_POLICIES)
    book.lock_account(session, account_id)
    account = get_account(session, account_id)
    if account.status != "canceled":
        raise Conflict(f"account {account_id} is {account.status}: only a canceled account can be reactivated")
    account.status, account.status_reason, account.canceled_at = "active", None, None
    account.plan_monthly_credits, account.next_plan_monthly_credits = plan_monthly_credits, None
    account.plan_cycle, account.plan_rollover = plan_cycle, plan_rollover
    account.cycle_anchor_at = now
    session.flush()
    # keyed by which reactivation this is: the status check under the lock makes each happen once
    grant_first_cycle(session, account, now=now,
                      key=f"reactivated:{account_events.count(session, account_id, 'reactivate') + 1}")
    session.refresh(account)
    return account


def _set_overdraft(account: Account, overdraft: Overdraft) -> None:
    _check_choice("overdraft.policy", overdraft.policy, OVERDRAFT_POLICIES)
    if overdraft.limit < 0:
        raise ValidationFailed("overdraft.limit must not be negative", errors={"overdraft.limit": "must not be negative"})
    if overdraft.policy != "overdraft" and overdraft.limit:
        reason = f"only the overdraft policy takes a limit ({overdraft.policy} has none)"
        raise ValidationFailed(f"overdraft.limit: {reason}", errors={"overdraft.limit": reason})
    account.overdraft_policy = overdraft.policy
    account.overdraft_limit = overdraft.limit


HOST_DEPENDENT_ZONES = ("localtime", "posixrules", "Factory")  # files in the zone database, not places


def _check_timezone(name: str) -> None:
    try:
        if name in HOST_DEPENDENT_ZONES:
            raise ValueError(f"{name!r} is not an IANA time zone such as 'America/New_York'")
        zone(name)
    except ValueError as error:
        raise ValidationFailed(f"timezone: {error}", errors={"timezone": str(error)}) from None


def _check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        reason = f"must be one of {', '.join(choices)}"
        raise ValidationFailed(f"{field} {value!r} {reason}", errors={field: reason})
