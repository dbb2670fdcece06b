"""The ledger's invariants, checked in SQL over all accounts (or one): each drift is one readable line.

- balance = sum of entries, and each entry's balance_after is the running sum up to it;
- the pool's lots hold exactly the pool's balance when it is not negative (nothing while in debt);
  each user's lots hold exactly the user's balance when it is not negative (nothing while in debt);
  allocated / allocated_held = the users' balances / holds;
- held = sum of pending holds (per account and per user);
- no lot below zero or above its amount;
- each hold charged at most once (one usage entry per settled hold, none otherwise, summing to the
  settled amount) and each message charged by at most one hold;
- every hold, message and entry names an account, and a message's or an entry's hold is one of its account's
  (what foreign keys would check on each write; the hot path goes without them: migrations 0025 and 0032).
"""

from sqlalchemy import and_, case, exists, func, literal, or_, select
from sqlalchemy.orm import Session

from shared.models import Account, Entry, Hold, Lot, Message, User


def verify(session: Session, account_id: str | None = None) -> list[str]:
    """Every drift found, one line each; empty when the ledger is consistent."""
    drifts: list[str] = []

    def scoped(query, column):
        return query if account_id is None else query.where(column == account_id)

    entry_sums = scoped(select(Entry.account_id, func.sum(Entry.amount).label("total"))
                        .group_by(Entry.account_id), Entry.account_id).subquery()
    pool_lots = scoped(select(Lot.account_id, func.sum(Lot.remaining).label("total"))
                       .where(Lot.user_id.is_(None)).group_by(Lot.account_id), Lot.account_id).subquery()
    pending = scoped(select(Hold.account_id, func.sum(Hold.amount).label("total"),
                            func.sum(case((Hold.from_allocation, Hold.amount), else_=0)).label("allocated"))
                     .where(Hold.status == "pending").group_by(Hold.account_id), Hold.account_id).subquery()
    seats = scoped(select(User.account_id, func.sum(User.balance).label("balance"), func.sum(User.held).label("held"))
                   .group_by(User.account_id), User.account_id).subquery()
    rows = session.execute(scoped(
        select(Account.id, Account.balance, Account.held, Account.allocated, Account.allocated_held,
               func.coalesce(entry_sums.c.total, 0).label("entries"),
               func.coalesce(pool_lots.c.total, 0).label("pool_lots"),
               func.coalesce(pending.c.total, 0).label("pending"),
               func.coalesce(pending.c.allocated, 0).label("pending_allocated"),
               func.coalesce(seats.c.balance, 0).label("user_balances"),
               func.coalesce(seats.c.held, 0).label("user_held"))
        .outerjoin(entry_sums, entry_sums.c.account_id == Account.id)
        .outerjoin(pool_lots, pool_lots.c.account_id == Account.id)
        .outerjoin(pending, pending.c.account_id == Account.id)
        .outerjoin(seats, seats.c.account_id == Account.id)
        .order_by(Account.id), Account.id))
    for row in rows:
        pool = row.balance - row.allocated
        checks = [
            (row.balance == row.entries, f"balance {row.balance} != sum of entries {row.entries}"),
            (row.pool_lots == max(pool, 0), f"pool lots hold {row.pool_lots}, pool balance is {pool}"),
            (row.held == row.pending, f"held {row.held} != pending holds {row.pending}"),
            (row.allocated_held == row.pending_allocated,
             f"allocated_held {row.allocated_held} != pending holds on users' credits {row.pending_allocated}"),
            (row.allocated == row.user_balances, f"allocated {row.allocated} != users' balances {row.user_balances}"),
            (row.allocated_held == row.user_held, f"allocated_held {row.allocated_held} != users' held {row.user_held}"),
        ]
        drifts += [f"account {row.id}: {message}" for ok, message in checks if not ok]

    running = scoped(select(Entry.id, Entry.account_id, Entry.balance_after,
                            func.sum(Entry.amount).over(partition_by=Entry.account_id, order_by=Entry.id)
                            .label("running")), Entry.account_id).subquery()
    for row in session.execute(select(running).where(running.c.running != running.c.balance_after)
                               .order_by(running.c.id)):
        drifts.append(f"account {row.account_id}: entry {row.id} balance_after {row.balance_after}"
                      f" != running sum {row.running}")

    user_lots = (select(Lot.user_id, func.sum(Lot.remaining).label("total")).where(Lot.user_id.is_not(None))
                 .group_by(Lot.user_id).subquery())
    user_holds = (select(Hold.user_id, func.sum(Hold.amount).label("total"))
                  .where(Hold.status == "pending", Hold.from_allocation).group_by(Hold.user_id).subquery())
    for row in session.execute(scoped(
            select(User.id, User.account_id, User.balance, User.held,
                   func.coalesce(user_lots.c.total, 0).label("lots"), func.coalesce(user_holds.c.total, 0).label("pending"))
            .outerjoin(user_lots, user_lots.c.user_id == User.id).outerjoin(user_holds, user_holds.c.user_id == User.id)
            .where(or_(case((User.balance < 0, 0), else_=User.balance) != func.coalesce(user_lots.c.total, 0),
                       User.held != func.coalesce(user_holds.c.total, 0)))
            .order_by(User.id), User.account_id)):
        drifts.append(f"account {row.account_id}: user {row.id} balance {row.balance} (lots hold {row.lots}),"
                      f" held {row.held} (pending holds {row.pending})")

    for row in session.execute(scoped(select(Lot.id, Lot.account_id, Lot.amount, Lot.remaining)
                                      .where(or_(Lot.remaining < 0, Lot.remaining > Lot.amount)).order_by(Lot.id),
                                      Lot.account_id)):
        drifts.append(f"account {row.account_id}: lot {row.id} remaining {row.remaining} outside 0..{row.amount}")

    charges = (select(Entry.hold_id, func.count().label("usages"), func.sum(Entry.amount).label("total"))
               .where(Entry.kind.in_(("usage", "carrier_fee")), Entry.hold_id.is_not(None))
               .group_by(Entry.hold_id).subquery())
    usage_count = (select(Entry.hold_id, func.count().label("n")).where(Entry.kind == "usage")
                   .group_by(Entry.hold_id).subquery())
    for row in session.execute(scoped(
            select(Hold.id, Hold.account_id, Hold.status, Hold.settled_amount,
                   func.coalesce(usage_count.c.n, 0).label("usages"), func.coalesce(charges.c.total, 0).label("total"))
            .outerjoin(charges, charges.c.hold_id == Hold.id).outerjoin(usage_count, usage_count.c.hold_id == Hold.id)
            .where(or_(and_(Hold.status == "settled", or_(func.coalesce(usage_count.c.n, 0) != 1,
                                                           -func.coalesce(charges.c.total, 0) != Hold.settled_amount)),
                       and_(Hold.status != "settled", func.coalesce(usage_count.c.n, 0) != 0)))
            .order_by(Hold.id), Hold.account_id)):
        drifts.append(f"account {row.account_id}: hold {row.id} ({row.status}, settled {row.settled_amount})"
                      f" has {row.usages} usage entries charging {-row.total}")

    for row in session.execute(scoped(
            select(Hold.account_id, Hold.reference, func.count().label("n")).join(Message, Message.id == Hold.reference)
            .where(Hold.status == "settled").group_by(Hold.account_id, Hold.reference)
            .having(func.count() > literal(1)).order_by(Hold.reference), Hold.account_id)):
        drifts.append(f"account {row.account_id}: message {row.reference} charged by {row.n} holds")

    if account_id is None:  # scoped, the account exists: none of its rows can name a missing one
        for table, what in ((Hold, "hold"), (Message, "message"), (Entry, "entry")):
            for row in session.execute(select(table.id, table.account_id)
                                       .where(~exists().where(Account.id == table.account_id)).order_by(table.id)):
                drifts.append(f"account {row.account_id}: {what} {row.id} names an account that does not exist")
    for table, what in ((Message, "message"), (Entry, "entry")):
        borrowed = (select(table.id, table.account_id, table.hold_id, Hold.account_id.label("hold_account_id"))
                    .outerjoin(Hold, Hold.id == table.hold_id)
                    .where(table.hold_id.is_not(None), or_(Hold.id.is_(None), Hold.account_id != table.account_id))
                    .order_by(table.id))
        if account_id is not None:  # the row's account, or the one whose hold it names (which pays for it)
            borrowed = borrowed.where(or_(table.account_id == account_id, Hold.account_id == account_id))
        for row in session.execute(borrowed):
            whose = "does not exist" if row.hold_account_id is None else f"is account {row.hold_account_id}'s"
            drifts.append(f"account {row.account_id}: {what} {row.id}'s hold {row.hold_id} {whose}")
    return drifts
