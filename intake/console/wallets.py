"""What one signed-in principal's credits are, read from the ledger's own balance (shared.ledger.book.balance, the
figures GET /v1/accounts/{id}/balance answers): the account's for owners, admins and the operator, a role-`user`
key's own allocation for that user (its lots and its seat), so a user sees only its own wallet."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from shared.ledger import book
from shared.ledger.accounts import get_account
from shared.ledger.expiry import can_lapse, end_of_month, local_date, utc, zone
from shared.models import Account

from ..principal import Principal

_BEFORE = datetime.resolution  # a lot that expires at a local midnight counts in the month that ends there
LOT_KINDS = (("plan", "Plan"), ("rollover", "Rollover"), ("purchase", "Purchased"), ("bonus", "Bonus"))


@dataclass(frozen=True)
class Wallet:
    owner: str  # "the account" or the user's name
    balance: int
    held: int
    available: int
    expiring_end_of_month: int
    by_kind: dict[str, int]
    expiring_by_month: list[tuple[str, int]]  # ("2026-12", millicredits), soonest first
    lots: list[book.LotView]


def wallet_for(session: Session, principal: Principal, account_id: str, *, now: datetime) -> tuple[Account, Wallet,
                                                                                                   book.BalanceView]:
    account = get_account(session, account_id)
    view = book.balance(session, account_id, now=now)
    user_id = principal.own_only
    if user_id is None:
        lots = view.lots
        wallet = _wallet("the account", view.balance, view.held, view.balance - view.held,
                         view.expiring_end_of_month, lots, account, now)
    else:
        seat = next(user for user in view.users if user.id == user_id)
        lots = [lot for lot in view.lots if lot.user_id == user_id]
        month_end = end_of_month(now, account.timezone)
        expiring = sum(lot.remaining for lot in lots
                       if can_lapse(lot, account.rollover_protection) and utc(now) < lot.expires_at <= month_end)
        wallet = _wallet(seat.name, seat.balance, seat.held, seat.balance - seat.held, expiring, lots, account, now)
    return account, wallet, view


def _wallet(owner: str, balance: int, held: int, available: int, expiring: int, lots: list[book.LotView],
            account: Account, now: datetime) -> Wallet:
    by_kind = {kind: 0 for kind, _ in LOT_KINDS}
    months: dict[str, int] = defaultdict(int)
    tz = zone(account.timezone)
    for lot in lots:
        by_kind[lot.kind] = by_kind.get(lot.kind, 0) + lot.remaining
        if lot.expires_at is not None and can_lapse(lot, account.rollover_protection) and lot.expires_at > utc(now):
            months[local_date(lot.expires_at - _BEFORE, tz).strftime("%Y-%m")] += lot.remaining
    return Wallet(owner=owner, balance=balance, held=held, available=available, expiring_end_of_month=expiring,
                  by_kind=by_kind, expiring_by_month=sorted(months.items()), lots=lots)

