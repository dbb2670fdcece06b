"""Spending written through the ledger as the product writes it: a message's hold settled with its carrier fee,
a month-end number fee."""

from datetime import datetime

from shared.ledger import accounts, book
from shared.models import Message


def new_account(session, *, timezone: str = "UTC", credits: int = 1_000_000, now: datetime,
                policy: str = "prepaid") -> str:
    account, _ = accounts.create_account(
        session, name="Acme", timezone=timezone, plan_monthly_credits=0, plan_cycle="monthly", plan_rollover="none",
        overdraft=accounts.Overdraft(policy, 0), low_balance_threshold=0, now=now)
    if credits:
        book.grant(session, account.id, credits, "purchase", granted_at=now, idempotency_key=f"seed-{account.id}")
    return account.id


def send(session, account_id: str, message_id: str, *, at: datetime, usage: int, carrier_fee: int = 0,
         mms: bool = False, user_id: str | None = None) -> None:
    """A text (or MMS) charged `usage` + `carrier_fee` millicredits at `at`."""
    session.add(Message(id=message_id, account_id=account_id, user_id=user_id, to="+15005550006", from_="+15005550007",
                        body="hi", media_urls=["https://example.com/a.png"] if mms else None, status="delivered",
                        created_at=at, updated_at=at))
    session.flush()
    hold = book.reserve(session, account_id, usage + carrier_fee, user_id=user_id, reference=message_id,
                        idempotency_key=f"message:{message_id}:hold", ttl_seconds=600, now=at)
    book.settle(session, hold.id, usage, carrier_fee_mc=carrier_fee, reference=message_id,
                idempotency_key=f"message:{message_id}:usage", now=at)


def number_fee(session, account_id: str, *, at: datetime, amount: int, period: str) -> None:
    book.charge_pool(session, account_id, amount, kind="month_end_charge", reference=f"numbers:{period}",
                     idempotency_key=f"month-end:{account_id}:{period}:numbers", now=at)


def call(session, account_id: str, call_id: str, *, at: datetime, usage: int) -> None:
    """A call's minutes charged `usage` millicredits at `at`, as voice settles them (its entries name the call)."""
    hold = book.reserve(session, account_id, usage, reference=call_id, idempotency_key=f"call:{call_id}:hold",
                        ttl_seconds=600, now=at)
    book.settle(session, hold.id, usage, reference=call_id, idempotency_key=f"call:{call_id}:charge", now=at)
