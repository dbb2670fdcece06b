"""Low-credit notices: when a settlement leaves a wallet under the account's threshold, email who should know.

The threshold is the account's `low_balance_threshold` (the owner sets it with the account key; 0: no
notices). The wallet the settled message was charged to is the one measured: the company pool (a
message sent with the account key, or by an owner or admin) or a role-`user` user's own credits. The
user who sent the message is told, and so is every owner (about that user's credits, when it was them).
A canceled account's messages that settle after the cancel tell nobody: it can neither buy nor send.

At most one email per user per calendar day of the account's time zone (not a rolling 24 h): the
settlement's own transaction writes the notices it owes, unique per (user, local day), so a second
crossing that day, a replayed settlement or a duplicate job writes nothing. After the commit,
`send_pending` hands each notice to the email adapter: a conditional UPDATE claims it first (two jobs
cannot both send it), `sent_at` records the handover, and a failed send gives the claim back. A worker
killed between the handover and `sent_at` leaves a claim that the scheduled catch-up takes again after
CLAIM_LEASE: that email may go twice, with the same Message-ID (`Email.key`), but it is never lost.
"""

import logging
from datetime import datetime, timedelta

from sqlalchemy import Row, bindparam, or_, select, true, update
from sqlalchemy.orm import Session

from shared.db import Database, insert_on_conflict
from shared.email import Email, EmailSender, is_address
from shared.events.outbox import emit
from shared.ledger.book import POOL_AVAILABLE
from shared.ledger.expiry import utc, zone
from shared.models import Account, Hold, LowBalanceNotice, Message, User
from shared.money import format_credits

log = logging.getLogger(__name__)

CLAIM_LEASE = timedelta(minutes=10)  # a claim this old lost its worker: the catch-up sends it again
BATCH = 500

accounts = Account.__table__
users = User.__table__
notices = LowBalanceNotice.__table__


# Prebuilt: every settlement asks. The wallet the message was charged to, and the account's threshold.
_SETTLED = (
    select(Message.account_id, Message.user_id, Hold.from_allocation, accounts.c.timezone, accounts.c.status,
           accounts.c.low_balance_threshold.label("threshold"), POOL_AVAILABLE.label("pool_available"))
    .join(Hold, Hold.id == Message.hold_id).join(accounts, accounts.c.id == Message.account_id)
    .where(Message.id == bindparam("message_id"))
)


def note_settlement(session: Session, message_id: str, *, now: datetime) -> int:
    """In the transaction that settled the message: write the notices it owes; returns how many are new."""
    settled = session.connection().execute(_SETTLED, {"message_id": message_id}).first()
    if settled is None or settled.threshold <= 0 or settled.status == "canceled":  # canceled: nothing to buy for
        return 0
    if settled.from_allocation:
        available = session.scalar(select(users.c.balance - users.c.held).where(users.c.id == settled.user_id))
    else:
        available = settled.pool_available
    told = or_(users.c.id == settled.user_id, users.c.role == "owner")
    if available >= settled.threshold:
        return 0
    day = utc(now).astimezone(zone(settled.timezone)).date().isoformat()
    wallet = settled.user_id if settled.from_allocation else None
    emit(session, "balance.low", account_id=settled.account_id, key=f"balance.low:{settled.account_id}:{wallet}:{day}",
         now=now, data={"account_id": settled.account_id, "wallet": "user" if wallet else "pool", "user_id": wallet,
                        "available": format_credits(available), "threshold": format_credits(settled.threshold),
                        "message_id": message_id})
    recipients = session.execute(select(users.c.id, users.c.email).where(
        users.c.account_id == settled.account_id, users.c.deleted_at.is_(None), users.c.email != "", told))
    rows = [dict(account_id=settled.account_id, user_id=user.id, day=day, message_id=message_id,
                 pool=not settled.from_allocation, available=available, threshold=settled.threshold,
                 created_at=now) for user in recipients if is_address(user.email)]  # none owed where none can go
    if not rows:
        return 0
    written = session.execute(insert_on_conflict(session, notices).values(rows)
                              .on_conflict_do_nothing(index_elements=["user_id", "day"]).returning(notices.c.id))
    return len(written.all())


def unsent(session: Session, message_id: str) -> bool:
    """Whether notices this message's settlement wrote are still to send (a replayed settle job asks)."""
    return session.scalar(select(notices.c.id).where(notices.c.message_id == message_id,
                                                     notices.c.sent_at.is_(None)).limit(1)) is not None


def send_pending(database: Database, sender: EmailSender, *, now: datetime, message_id: str | None = None) -> int:
    """Send the notices not sent yet (only those `message_id`'s settlement wrote, if given); how many went out."""
    sent, after = 0, 0
    while True:
        with database.unit_of_work() as session:
            due = list(session.scalars(select(notices.c.id).where(
                notices.c.id > after, notices.c.sent_at.is_(None), _claimable(now),
                notices.c.message_id == message_id if message_id else true()).order_by(notices.c.id).limit(BATCH)))
        if not due:
            return sent
        for notice_id in due:
            sent += _send(database, sender, notice_id, now)
        after = due[-1]


def _claimable(now: datetime):
    return or_(notices.c.claimed_at.is_(None), notices.c.claimed_at <= now - CLAIM_LEASE)


def _send(database: Database, sender: EmailSender, notice_id: int, now: datetime) -> int:
    with database.unit_of_work() as session:
        claimed = session.execute(update(notices).where(notices.c.id == notice_id, notices.c.sent_at.is_(None),
                                                        _claimable(now))
                                  .values(claimed_at=now).returning(notices.c.id)).first()
        if claimed is None:
            return 0  # another job has it, or sent it
        by = users.alias("by")  # who sent the message that crossed the threshold
        notice = session.execute(
            select(notices, users.c.email, users.c.name, accounts.c.name.label("account_name"),
                   Message.user_id.label("sender_id"), by.c.name.label("sender_name"))
            .join(users, users.c.id == notices.c.user_id).join(accounts, accounts.c.id == notices.c.account_id)
            .outerjoin(Message, Message.id == notices.c.message_id)
            .outerjoin(by, by.c.id == Message.user_id)
            .where(notices.c.id == notice_id)).one()
    if not is_address(notice.email):
        # An address no mail header can carry, stored before such addresses were refused: the notice keeps its
        # claim, so the catch-up tries it again only once the lease lapses, and the notices after it go on.
        log.warning("low-credit notice %s: user %s has no address an email can go to; tried again in %s",
                    notice_id, notice.user_id, CLAIM_LEASE)
        return 0
    try:
        sender.send(email_for(notice))
    except Exception:
        with database.unit_of_work() as session:  # give the claim back: a retry or the catch-up sends it
            session.execute(update(notices).where(notices.c.id == notice_id).values(claimed_at=None))
        raise
    with database.unit_of_work() as session:
        session.execute(update(notices).where(notices.c.id == notice_id).values(sent_at=now))
    return 1


def email_for(notice: Row) -> Email:
    if notice.pool:
        whose = "Your company's shared credits are"
    elif notice.sender_id == notice.user_id:
        whose = "Your credits are"
    else:
        whose = f"{notice.sender_name}'s own credits are"
    remedy = ("Buy credits or turn on auto-recharge to keep sending." if notice.pool else
              "An owner or admin of the account can give more credits; below zero, sending stops until they do.")
    body = (f"Hello {notice.name},\n\n{whose} running low on {notice.account_name}: "
            f"{format_credits(notice.available)} available, under the account's low-credit "
            f"threshold of {format_credits(notice.threshold)}.\n\n{remedy}\n")
    return Email(to=notice.email, subject=f"creditq: low balance ({format_credits(notice.available)} credits)",
                 body=body, key=f"low-balance:{notice.user_id}:{notice.day}")
