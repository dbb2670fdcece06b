"""The persistent shape of creditq. Amounts are integer millicredits (BigInteger) everywhere."""

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a real bigint.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Millicredits = BigInteger

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: DateTime(timezone=True)}


class Account(Base):
    """A customer. Its row is the serialization point for every credit movement of the account."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    plan_monthly_credits: Mapped[int] = mapped_column(Millicredits, default=0)
    plan_cycle: Mapped[str] = mapped_column(String(16), default="monthly")
    plan_rollover: Mapped[str] = mapped_column(String(16), default="none")
    next_plan_monthly_credits: Mapped[int | None] = mapped_column(Millicredits)
    overdraft_policy: Mapped[str] = mapped_column(String(16), default="prepaid")
    overdraft_limit: Mapped[int] = mapped_column(Millicredits, default=0)
    low_balance_threshold: Mapped[int] = mapped_column(Millicredits, default=0)
    status: Mapped[str] = mapped_column(String(16), default="active")
    status_reason: Mapped[str | None] = mapped_column(String(500))
    credit_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    rollover_protection: Mapped[bool] = mapped_column(Boolean, default=False)
    spam: Mapped[bool] = mapped_column(Boolean, default=False)
    balance: Mapped[int] = mapped_column(Millicredits, default=0)
    held: Mapped[int] = mapped_column(Millicredits, default=0)
    help_text: Mapped[str | None] = mapped_column(Text)
    sending_blocked_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class ApiKey(Base):
    """An account's bearer key; only its SHA-256 is stored, the key itself is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    revoked_at: Mapped[datetime | None]


class User(Base):
    """A seat in an account. monthly_credits None means the user shares the company pool."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(20))
    role: Mapped[str] = mapped_column(String(16), default="user")
    monthly_credits: Mapped[int | None] = mapped_column(Millicredits)
    low_balance_notified_on: Mapped[str | None] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    deleted_at: Mapped[datetime | None]


class Lot(Base):
    """A grant of credits that burns down; user_id set means a user's own allocation."""

    __tablename__ = "lots"
    __table_args__ = (Index("ix_lots_burn_order", "account_id", "user_id", "priority", "expires_at", "granted_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(Millicredits)
    remaining: Mapped[int] = mapped_column(Millicredits)
    priority: Mapped[int] = mapped_column(Integer)
    granted_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    reference: Mapped[str | None] = mapped_column(String(100))


class Hold(Base):
    """A reservation made before a send; resolved exactly once by settle, void or expire."""

    __tablename__ = "holds"
    __table_args__ = (Index("ix_holds_pending_expiry", "status", "expires_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    amount: Mapped[int] = mapped_column(Millicredits)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reference: Mapped[str | None] = mapped_column(String(100), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    settled_amount: Mapped[int | None] = mapped_column(Millicredits)


class Entry(Base):
    """Append-only journal line. Its unique idempotency key makes every operation replay-safe."""

    __tablename__ = "entries"
    __table_args__ = (Index("ix_entries_account_id_id", "account_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(24))
    amount: Mapped[int] = mapped_column(Millicredits)
    balance_after: Mapped[int] = mapped_column(Millicredits)
    reference: Mapped[str | None] = mapped_column(String(100))
    hold_id: Mapped[int | None] = mapped_column(ForeignKey("holds.id"))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    memo: Mapped[str | None] = mapped_column(String(500))


class PhoneNumber(Base):
    """A sender number of an account; its type picks the rate and the throughput limit."""

    __tablename__ = "phone_numbers"
    __table_args__ = (UniqueConstraint("account_id", "phone"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    phone: Mapped[str] = mapped_column(String(20))
    type: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class OptOut(Base):
    """A recipient who must not be texted by this account (STOP, 21610, API or a do-not-contact import)."""

    __tablename__ = "opt_outs"
    __table_args__ = (UniqueConstraint("account_id", "phone"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    phone: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(24))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Message(Base):
    """One outbound or inbound message; its id keys every idempotent step of its life."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_status_updated_at", "status", "updated_at"),
        Index("ix_messages_account_id_id", "account_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    campaign_id: Mapped[str | None] = mapped_column(String(40), index=True)
    direction: Mapped[str] = mapped_column(String(8), default="outbound")
    to: Mapped[str] = mapped_column(String(20))
    from_: Mapped[str] = mapped_column("from", String(20))
    body: Mapped[str] = mapped_column(Text)
    media_urls: Mapped[list | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    segments: Mapped[int] = mapped_column(Integer, default=0)
    encoding: Mapped[str] = mapped_column(String(8), default="GSM-7")
    credits_estimated: Mapped[int] = mapped_column(Millicredits, default=0)
    credits_charged: Mapped[int | None] = mapped_column(Millicredits)
    hold_id: Mapped[int | None] = mapped_column(ForeignKey("holds.id"))
    twilio_sid: Mapped[str | None] = mapped_column(String(40), unique=True)
    twilio_status: Mapped[str | None] = mapped_column(String(16))
    twilio_price: Mapped[str | None] = mapped_column(String(20))
    twilio_price_unit: Mapped[str | None] = mapped_column(String(8))
    twilio_segments: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(String(500))
    send_at: Mapped[datetime | None]
    enqueued_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class IdempotencyRecord(Base):
    """The first answer to a POST with an Idempotency-Key, replayed for the same key and body."""

    __tablename__ = "idempotency_records"

    principal: Mapped[str] = mapped_column(String(60), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
