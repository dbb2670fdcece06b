"""An account's sender numbers: their type picks the rate and throughput, and each costs credits per month.

The monthly cost is taken from the rate card when the number is added and kept on the row, so what
users may be allocated (allocations.assignable_monthly) does not move when the card changes mid-cycle.
A number has one owner, enforced by the database's unique phone: of two accounts claiming it at once,
each under its own account lock, the second insert fails on the index and is answered as a conflict.
Canceling an account releases its numbers: they cost nothing more and cannot be sent from, but stay
its own, so inbound texts to them still land in it; adding one again takes it back.
"""

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.errors import Conflict, NotFound, ValidationFailed
from shared.ledger import book
from shared.messaging.phone_numbers import SHORT_CODE_COUNTRY, country_of, is_short_code, is_toll_free, parse_sender
from shared.messaging.rates import SENDER_TYPES, current_rate_card
from shared.models import PhoneNumber


def add_number(session: Session, account_id: str, raw_phone: str, number_type: str) -> PhoneNumber:
    phone = _checked(raw_phone, number_type)
    country = SHORT_CODE_COUNTRY if is_short_code(phone) else country_of(phone)
    monthly_cost = current_rate_card(session).price("phone_number", country=country, sender_type=number_type)
    book.lock_account(session, account_id)
    owner = session.scalar(select(PhoneNumber.account_id).where(PhoneNumber.phone == phone))
    if owner == account_id:
        number = _find(session, account_id, phone)
        if number.released_at is None:
            raise Conflict(f"{phone} is already a number of account {account_id}")
        number.released_at, number.type, number.monthly_cost = None, number_type, monthly_cost
        return number
    if owner is not None:  # inbound texts and callbacks on a number must name one account
        raise Conflict(f"{phone} is a number of another account")
    number = PhoneNumber(account_id=account_id, phone=phone, type=number_type, monthly_cost=monthly_cost)
    session.add(number)
    try:
        session.flush()
    except IntegrityError:  # claimed by another account meanwhile; the unit of work rolls back
        raise Conflict(f"{phone} is a number of another account") from None
    return number


_CALLED = {"short_code": "a short code", "toll_free": "a toll-free number"}


def _checked(raw_phone: str, number_type: str) -> str:
    """The number, once it is shown to be of the type it is added as: the type sets its price and its throughput, so
    a long code added as a short code would send a hundred times faster, a toll-free one added as a long code pay
    less."""
    if number_type not in SENDER_TYPES:
        reason = f"must be one of {', '.join(SENDER_TYPES)}"
        raise ValidationFailed(f"type {number_type!r} {reason}", errors={"type": reason})
    phone = parse_sender(raw_phone, field="phone")
    own_type = "short_code" if is_short_code(phone) else "toll_free" if is_toll_free(phone) else "long_code"
    if own_type == number_type:
        return phone
    if own_type != "long_code":
        reason = f"is {_CALLED[own_type]}: add it with type {own_type}"
    elif number_type == "short_code":
        reason = "is not a short code: a US short code is 5 or 6 digits, such as 12345"
    else:
        reason = "is not a toll-free number"
    raise ValidationFailed(f"phone {phone!r} {reason}", errors={"phone": reason})


def list_numbers(session: Session, account_id: str, *, number_type: str | None = None, released: bool = False,
                 limit: int | None = None, before_id: int | None = None) -> list[PhoneNumber]:
    """The account's sender numbers, newest first; `released`: instead the numbers its cancel released."""
    query = select(PhoneNumber).where(PhoneNumber.account_id == account_id,
                                      PhoneNumber.released_at.is_not(None) if released
                                      else PhoneNumber.released_at.is_(None))
    if number_type is not None:
        query = query.where(PhoneNumber.type == number_type)
    if before_id is not None:
        query = query.where(PhoneNumber.id < before_id)
    return list(session.scalars(query.order_by(PhoneNumber.id.desc()).limit(limit)))


def release_numbers(session: Session, account_id: str, *, now: datetime) -> int:
    """Release every number of the account (it was canceled); returns how many were released now."""
    return session.execute(update(PhoneNumber).where(PhoneNumber.account_id == account_id,
                                                     PhoneNumber.released_at.is_(None))
                           .values(released_at=now).execution_options(synchronize_session=False)).rowcount


def remove_number(session: Session, account_id: str, raw_phone: str) -> None:
    phone = parse_sender(raw_phone, field="phone")
    book.lock_account(session, account_id)
    number = _find(session, account_id, phone)
    if number is None or number.released_at is not None:
        raise NotFound(f"{phone} is not a number of account {account_id}")
    session.delete(number)


def _find(session: Session, account_id: str, phone: str) -> PhoneNumber | None:
    return session.scalar(select(PhoneNumber).where(PhoneNumber.account_id == account_id, PhoneNumber.phone == phone))
