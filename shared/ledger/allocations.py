"""Users of an account and their credits.

Owners and admins share the company pool (`monthly_credits` None, shown as "shared"). A `user` has
its own credits: `monthly_credits` (what the calendar gives it each cycle) and `total_credits` (what
it holds now, its balance). Its sends draw on those credits only.

What can be promised monthly is the plan's monthly credits minus what the phone numbers cost per
month minus the other users' monthly credits. What can be handed over now (total_credits) is what
the user has plus what the pool has available. Asking for more is a ValidationFailed naming the maximum.
"""

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.email import is_address
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.ids import new_id
from shared.ledger import book
from shared.models import PhoneNumber, User
from shared.money import format_credits

ROLES = ("owner", "admin", "user")


def list_users(session: Session, account_id: str, *, role: str | None = None, limit: int | None = None,
               before_id: str | None = None) -> list[User]:
    """The account's users (not deleted ones), newest first."""
    query = select(User).where(User.account_id == account_id, User.deleted_at.is_(None))
    if role is not None:
        query = query.where(User.role == role)
    if before_id is not None:
        query = query.where(User.id < before_id)
    return list(session.scalars(query.order_by(User.id.desc()).limit(limit)))


def get_user(session: Session, account_id: str, user_id: str) -> User:
    user = session.scalar(select(User).where(User.id == user_id, User.account_id == account_id,
                                             User.deleted_at.is_(None)))
    if user is None:
        raise NotFound(f"No user {user_id} in account {account_id}.")
    return user


def create_user(session: Session, account_id: str, *, name: str, email: str, phone: str | None, role: str,
                monthly_credits: int | None, now: datetime) -> User:
    """`monthly_credits` must be None for owners and admins (they share the pool); a user's defaults to 0."""
    if role not in ROLES:
        raise ValidationFailed(f"role {role!r} is not one of {', '.join(ROLES)}",
                               errors={"role": f"must be one of {', '.join(ROLES)}"})
    if not is_address(email):  # its low-credit emails would fail (or, with a line break, carry another header)
        raise ValidationFailed("email is not an email address",
                               errors={"email": "must be an email address (name@domain, no spaces or line breaks)"})
    book.lock_account(session, account_id)
    if role == "user":
        monthly_credits = monthly_credits or 0
        _check_monthly(session, account_id, None, monthly_credits)
    elif monthly_credits is not None:
        reason = "owners and admins share the pool: leave it out or send \"shared\""
        raise ValidationFailed(f"monthly_credits: {reason}", errors={"monthly_credits": reason})
    user = User(id=new_id("user"), account_id=account_id, name=name, email=email, phone=phone, role=role,
                monthly_credits=monthly_credits, balance=0, held=0, created_at=now)
    session.add(user)
    session.flush()
    return user


def update_user(session: Session, account_id: str, user_id: str, *, now: datetime, monthly_credits: int | None = None,
                total_credits: int | None = None) -> User:
    """Set a user's monthly credits and/or move credits so that it holds `total_credits` now (the limits are
    checked on credits as they stand at `now`: what expired is written off first)."""
    book.expire_lots(session, account_id, now=now)
    user = get_user(session, account_id, user_id)
    if (monthly_credits is not None or total_credits is not None) and user.role != "user":
        reason = f"a{'n' if user.role == 'admin' else ''} {user.role} shares the pool and has no credits of its own"
        field = "monthly_credits" if monthly_credits is not None else "total_credits"
        raise ValidationFailed(f"{field}: {reason}", errors={field: reason})
    if monthly_credits is not None:
        _check_monthly(session, account_id, user_id, monthly_credits)
        user.monthly_credits = monthly_credits
    if total_credits is not None:
        _check_total(session, account_id, user, total_credits)
        book.transfer(session, account_id, user_id, total_credits - user.balance, now=now,
                        idempotency_key=new_id("alloc"))
    session.flush()
    session.refresh(user)
    return user


def delete_user(session: Session, account_id: str, user_id: str, *, now: datetime) -> None:
    """The user's remaining credits go back to the pool; refused while its sends still hold credits."""
    book.expire_lots(session, account_id, now=now)
    user = get_user(session, account_id, user_id)
    if user.held:
        raise Conflict(f"user {user_id} has {format_credits(user.held)} credits held by sends in flight;"
                       " delete it once they settle")
    book.transfer(session, account_id, user_id, -user.balance, now=now, idempotency_key=new_id("alloc"))
    session.refresh(user)
    user.deleted_at = now
    session.flush()


def assignable_monthly(session: Session, account_id: str, excluding_user_id: str | None = None) -> int:
    """Plan credits (the smaller of this cycle's and the next) minus numbers' monthly cost minus other users'."""
    account = book.lock_account(session, account_id)
    plan = account.plan_monthly_credits
    if account.next_plan_monthly_credits is not None:
        plan = min(plan, account.next_plan_monthly_credits)
    numbers = session.scalar(select(func.coalesce(func.sum(PhoneNumber.monthly_cost), 0))
                             .where(PhoneNumber.account_id == account_id, PhoneNumber.released_at.is_(None)))
    others = select(func.coalesce(func.sum(User.monthly_credits), 0)).where(
        User.account_id == account_id, User.deleted_at.is_(None), User.role == "user")
    if excluding_user_id is not None:
        others = others.where(User.id != excluding_user_id)
    return max(0, plan - int(numbers) - int(session.scalar(others)))  # PostgreSQL's SUM of BIGINT is a numeric


def _check_monthly(session: Session, account_id: str, user_id: str | None, monthly_credits: int) -> None:
    maximum = assignable_monthly(session, account_id, user_id)
    if monthly_credits > maximum:
        reason = f"can be at most {format_credits(maximum)} (plan credits minus phone numbers and other users)"
        raise ValidationFailed(f"monthly_credits {reason}", errors={"monthly_credits": reason})


def _check_total(session: Session, account_id: str, user: User, total_credits: int) -> None:
    account = book.lock_account(session, account_id)
    pool_available = account.balance - account.allocated - (account.held - account.allocated_held)
    maximum = user.balance + max(0, pool_available)
    if total_credits > maximum:
        reason = f"can be at most {format_credits(maximum)} (the user's credits plus the unused company credits)"
        raise ValidationFailed(f"total_credits {reason}", errors={"total_credits": reason})
    if total_credits < user.held:
        reason = f"must be at least {format_credits(user.held)}, the credits its sends in flight hold"
        raise ValidationFailed(f"total_credits {reason}", errors={"total_credits": reason})
