"""The persistent shape of creditq. Amounts are integer millicredits (BigInteger) everywhere."""

from datetime import UTC, date, datetime

from sqlalchemy import (
    DDL,
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
    false,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.secrets import EncryptedText

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
    # The users' share of balance/held, so the company pool (balance - allocated) is checked in one UPDATE.
    allocated: Mapped[int] = mapped_column(Millicredits, default=0)
    allocated_held: Mapped[int] = mapped_column(Millicredits, default=0)
    # The soonest `expires_at` among its lots that can still lapse (None: none can). A reservation checks
    # it in its one conditional UPDATE; the first ledger operation at or after it writes the expiries.
    next_expiry_at: Mapped[datetime | None]
    help_text: Mapped[str | None] = mapped_column(Text)
    # Quiet hours for its automated texts, in the recipient's local time ("HH:MM"; None: 08:00-21:00);
    # `quiet_hours_scope` "all" holds immediate single sends too.
    quiet_start: Mapped[str | None] = mapped_column(String(5))
    quiet_end: Mapped[str | None] = mapped_column(String(5))
    quiet_hours_scope: Mapped[str] = mapped_column(String(16), default="automated", server_default="automated")
    # A text filtered on a local number (30007, 30034) goes once more from a toll-free number (messaging.reprocessing).
    toll_free_reprocessing: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    sending_blocked_reason: Mapped[str | None] = mapped_column(String(500))
    # The account's own Twilio (sub)account; None sends with the deployment's credentials. Indexed: a status
    # callback for a sid not stored yet is checked against the tokens of the AccountSid it names.
    twilio_account_sid: Mapped[str | None] = mapped_column(String(34), index=True)
    twilio_auth_token: Mapped[str | None] = mapped_column(EncryptedText)
    # The deployment's shared short code the account sends from under its keyword (shared.messaging.shared_short_code):
    # the code it was set on (kept after a release: texts in flight still settle as short-code ones), and the keyword
    # in capitals, unique, since inbound texts to the code are routed by it.
    shared_short_code: Mapped[str | None] = mapped_column(String(6))
    shared_short_code_keyword: Mapped[str | None] = mapped_column(String(15), unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Where its cycles count from: its creation (the default), or its last reactivation (its cycles restart there).
    cycle_anchor_at: Mapped[datetime] = mapped_column(default=lambda context: _created_at(context),
                                                      server_default=func.now())
    canceled_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())
    # Voice: the minutes an outgoing call holds when it names none, and the minutes past what its overdraft policy
    # allows that a forwarded inbound call may still talk (inbound calls always ring through).
    call_max_minutes: Mapped[int] = mapped_column(Integer, default=10, server_default="10")
    inbound_grace_minutes: Mapped[int] = mapped_column(Integer, default=5, server_default="5")


def _created_at(context) -> datetime:
    """The inserted row's created_at (now when the database sets it): a new account's cycles start with it."""
    return context.get_current_parameters().get("created_at") or datetime.now(UTC)


class AccountEvent(Base):
    """One change of an account's life or settings (cancel, reactivate, mark spam, plan, flags), written in the
    transaction of the change: who did what, when, with what detail."""

    __tablename__ = "account_events"
    __table_args__ = (Index("ix_account_events_account_id_id", "account_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    at: Mapped[datetime]
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(60))
    detail: Mapped[dict] = mapped_column(JSON)


class ApiKey(Base):
    """An account's bearer key; only its SHA-256 is stored, the key itself is shown once (shared.api_keys).

    `scope` bounds what the key may do and which keys it may mint; `prefix` (the first characters)
    lets a person recognise it in a list without being able to use it. A key with a `user_id` acts as that
    user: its role's rights, its sends charged to its wallet.
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str | None] = mapped_column(String(16))  # None for keys issued before prefixes were kept
    scope: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_used_at: Mapped[datetime | None]  # to the minute: written at most once a minute per key
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
    balance: Mapped[int] = mapped_column(Millicredits, default=0)  # the user's own credits (total_credits)
    held: Mapped[int] = mapped_column(Millicredits, default=0)
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
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)


class Hold(Base):
    """A reservation made before a send; resolved exactly once by settle, void or expire."""

    __tablename__ = "holds"
    # The sweep's index has the unresolved holds alone (0028): a resolved hold writes no entry into it, and no
    # statement naming a hold by id and status can be served by it in place of the primary key (one led by the
    # status was, scanning every pending hold's entry whenever the planner took them to be few).
    __table_args__ = (Index("ix_holds_unresolved_expires_at", "expires_at",
                            postgresql_where=text("resolved_at IS NULL"), sqlite_where=text("resolved_at IS NULL")),
                      Index("ix_holds_account_status", "account_id", "status"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # No foreign key (migration 0025): every hold is made by the ledger's reservation, whose UPDATE of this account's
    # row is its condition, and accounts are never deleted; the check would lock the hottest row of the schema once
    # more for every hold (shared.ledger.verify reports a hold that names no account).
    account_id: Mapped[str] = mapped_column(String(40))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    amount: Mapped[int] = mapped_column(Millicredits)
    from_allocation: Mapped[bool] = mapped_column(Boolean, default=False)  # drawn on user_id's own credits
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reference: Mapped[str | None] = mapped_column(String(100))  # not indexed (0028): nothing looks a hold up by it
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]  # None while pending: set by whatever resolves it
    settled_amount: Mapped[int | None] = mapped_column(Millicredits)


class Entry(Base):
    """Append-only journal line. Its unique idempotency key makes every operation replay-safe."""

    __tablename__ = "entries"
    __table_args__ = (Index("ix_entries_account_id_id", "account_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # No foreign keys to the account and the hold (migration 0032): every entry is written by the ledger in the
    # transaction that has just updated both rows, accounts are never deleted and a hold with entries never is;
    # the checks cost a settlement two more statements (shared.ledger.verify reports an entry naming neither).
    account_id: Mapped[str] = mapped_column(String(40))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(24))
    amount: Mapped[int] = mapped_column(Millicredits)
    balance_after: Mapped[int] = mapped_column(Millicredits)
    reference: Mapped[str | None] = mapped_column(String(100))
    hold_id: Mapped[int | None] = mapped_column(BigId)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    memo: Mapped[str | None] = mapped_column(String(500))


class UsageDay(Base):
    """What an account (and each of its users) spent on one local day, by kind: the entries folded after they
    were written (shared.reporting.daily_usage), so a forecast or the console never reads the whole history.

    `user_id` is "" for the company pool (a key column cannot be NULL); `kind` is one of daily_usage.KINDS.
    """

    __tablename__ = "daily_usage"

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    millicredits: Mapped[int] = mapped_column(Millicredits)
    count: Mapped[int] = mapped_column(BigInteger)


class UsageFold(Base):
    """The one row saying how far the entries are folded into daily_usage, and the next stretch that may be.

    Entries up to `folded_through` are in daily_usage. Entries up to `horizon_id` may be folded once every
    transaction that was running when the horizon was taken has ended (on PostgreSQL: the oldest running
    transaction id reached `horizon_xid`), since one of them may still hold a lower entry id.
    """

    __tablename__ = "daily_usage_folds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    folded_through: Mapped[int] = mapped_column(BigInteger, default=0)
    horizon_id: Mapped[int] = mapped_column(BigInteger, default=0)
    horizon_xid: Mapped[int | None] = mapped_column(BigInteger)


class PhoneNumber(Base):
    """A sender number of an account; its type picks the rate and the throughput limit.

    A number is active while its row exists (removing it deletes the row), and the unique phone gives
    each active number one owner: inbound texts and callbacks to it name one account. Canceling the account
    releases its numbers (`released_at`): no fee, no sending from them, but inbound texts still land there.
    """

    __tablename__ = "phone_numbers"
    __table_args__ = (UniqueConstraint("phone"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    phone: Mapped[str] = mapped_column(String(20))
    type: Mapped[str] = mapped_column(String(16))
    monthly_cost: Mapped[int] = mapped_column(Millicredits, default=0)  # rate card price when it was added
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    released_at: Mapped[datetime | None]
    # Inbound calls: forwarded to this phone (None: straight to voicemail, if on), then a voicemail, transcribed.
    forward_to: Mapped[str | None] = mapped_column(String(20))
    voicemail: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    transcribe: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


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
        # who last texted a phone from a sender: an inbound text to the shared short code naming no keyword
        Index("ix_messages_to_from", "to", "from", "created_at"),
        # GET /v1/messages: one per filter, each in the list's order, newest first (shared.messaging.search);
        # `to` is served by the one above (a recipient's messages are few: they are sorted)
        Index("ix_messages_account_created", "account_id", "created_at", "id"),
        Index("ix_messages_account_status_created", "account_id", "status", "created_at", "id"),
        Index("ix_messages_account_from_created", "account_id", "from", "created_at", "id"),
        # a campaign's and a user's messages: most texts have neither, and only the others are indexed (0025)
        Index("ix_messages_in_campaign_created", "campaign_id", "created_at", "id",
              postgresql_where=text("campaign_id IS NOT NULL"), sqlite_where=text("campaign_id IS NOT NULL")),
        Index("ix_messages_by_user_created", "user_id", "created_at", "id",
              postgresql_where=text("user_id IS NOT NULL"), sqlite_where=text("user_id IS NOT NULL")),
        # replies are few among the sends: only they are indexed, so the sends' inserts pay nothing for it
        Index("ix_messages_inbound_created", "account_id", "created_at", "id",
              postgresql_where=text("direction = 'inbound'"), sqlite_where=text("direction = 'inbound'")),
        # what the retention job has left to redact (shared.operations.retention), oldest first; on created_at,
        # which no update changes, so the status updates of the hot path stay HOT (updated_at would index each)
        Index("ix_messages_unredacted_created_at", "created_at",
              postgresql_where=text("redacted_at IS NULL"), sqlite_where=text("redacted_at IS NULL")),
        Index("ix_messages_reprocessed_from", "reprocessed_from", unique=True,
              postgresql_where=text("reprocessed_from IS NOT NULL"), sqlite_where=text("reprocessed_from IS NOT NULL")),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # No foreign key (0025), as on holds.account_id: the intake and the fan-out write messages of an account whose row
    # the sends are updating, and each check would take a share lock on it; verify reports a message naming none.
    account_id: Mapped[str] = mapped_column(String(40))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    campaign_id: Mapped[str | None] = mapped_column(String(40))
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
    # The rate card version its settlement priced it with (None: not charged by the card, or settled before versions)
    rate_card_version: Mapped[int | None] = mapped_column(Integer)
    hold_id: Mapped[int | None] = mapped_column(BigId)  # the ledger's hold (no foreign key: 0025; verify checks it)
    twilio_sid: Mapped[str | None] = mapped_column(String(40), unique=True)
    # The Twilio (sub)account the message was sent with, stored with its sid: its callbacks must name it
    # and be signed with its token. None on messages sent before it was recorded (and on inbound ones).
    twilio_account_sid: Mapped[str | None] = mapped_column(String(34))
    twilio_status: Mapped[str | None] = mapped_column(String(16))
    twilio_price: Mapped[str | None] = mapped_column(String(20))
    twilio_price_unit: Mapped[str | None] = mapped_column(String(8))
    twilio_segments: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(String(500))
    send_at: Mapped[datetime | None]
    slot_at: Mapped[datetime | None]  # the sender-throughput slot booked for it (its job waits until then)
    enqueued_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # A toll-free resend names the original it resends; unique (ix_messages_reprocessed_from, which holds only the
    # resends): an original is resent at most once.
    reprocessed_from: Mapped[str | None] = mapped_column(ForeignKey("messages.id"))
    dunning_site_id: Mapped[str | None] = mapped_column(String(40))  # sent from that site's number and credentials
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # body, media and the contact's number blanked (retention, erasure); the ledger's rows about it are kept
    redacted_at: Mapped[datetime | None]


class Call(Base):
    """One phone call: placed by the account (a call, a click-to-call bridge, a voice broadcast's number) or to one
    of its numbers (forwarded, voicemail). Its id keys every idempotent step of its life, its hold and its charges.

    `minutes_held` is what the hold covers and `time_limit` what Twilio was told (so a call never talks past its
    hold); `legs` is 2 for a bridge (both phones are called at the outgoing rate). `credits_charged` is set once,
    when it is settled.
    """

    __tablename__ = "calls"
    __table_args__ = (
        Index("ix_calls_account_created", "account_id", "created_at", "id"),
        Index("ix_calls_status_updated_at", "status", "updated_at"),
        Index("ix_calls_broadcast_status", "broadcast_id", "status"),
        UniqueConstraint("broadcast_id", "to", name="uq_calls_broadcast_id_to"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    broadcast_id: Mapped[str | None] = mapped_column(String(40))
    direction: Mapped[str] = mapped_column(String(8), default="outbound")
    to: Mapped[str] = mapped_column(String(20))
    from_: Mapped[str] = mapped_column("from", String(20))
    say: Mapped[str | None] = mapped_column(Text)
    play_url: Mapped[str | None] = mapped_column(String(500))
    connect_to: Mapped[str | None] = mapped_column(String(20))
    machine_detection: Mapped[bool] = mapped_column(Boolean, default=False)
    max_minutes: Mapped[int] = mapped_column(Integer, default=0)
    minutes_held: Mapped[int | None] = mapped_column(Integer)
    time_limit: Mapped[int | None] = mapped_column(Integer)
    legs: Mapped[int] = mapped_column(Integer, default=1)
    rate: Mapped[int] = mapped_column(Millicredits, default=0)  # per minute and leg
    status: Mapped[str] = mapped_column(String(16))
    skip_reason: Mapped[str | None] = mapped_column(String(200))
    answered_by: Mapped[str | None] = mapped_column(String(24))
    duration_seconds: Mapped[int | None] = mapped_column(Integer)
    minutes_billed: Mapped[int | None] = mapped_column(Integer)
    credits_estimated: Mapped[int] = mapped_column(Millicredits, default=0)
    credits_charged: Mapped[int | None] = mapped_column(Millicredits)
    hold_id: Mapped[int | None] = mapped_column(ForeignKey("holds.id"))
    twilio_sid: Mapped[str | None] = mapped_column(String(40), unique=True)
    # The Twilio (sub)account the call was placed with: its callbacks must name it and be signed with its token.
    twilio_account_sid: Mapped[str | None] = mapped_column(String(34))
    recording_url: Mapped[str | None] = mapped_column(String(500))
    transcription: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(String(500))
    claimed_at: Mapped[datetime | None]  # when the worker marked it for Twilio's create (reconciliation looks after)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims so far: each one's hold has its own key
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class VoiceBroadcast(Base):
    """One recording or text to many numbers; each number is a Call with its broadcast_id."""

    __tablename__ = "voice_broadcasts"
    __table_args__ = (Index("ix_voice_broadcasts_account_created", "account_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(200))
    from_: Mapped[str] = mapped_column("from", String(20))
    say: Mapped[str | None] = mapped_column(Text)
    play_url: Mapped[str | None] = mapped_column(String(500))
    machine_detection: Mapped[bool] = mapped_column(Boolean, default=False)
    expected_minutes: Mapped[int] = mapped_column(Integer, default=1)
    max_minutes: Mapped[int] = mapped_column(Integer, default=1)
    quiet_start: Mapped[str | None] = mapped_column(String(5))
    quiet_end: Mapped[str | None] = mapped_column(String(5))
    status: Mapped[str] = mapped_column(String(16))  # running, paused, canceled, completed
    credits_estimated: Mapped[int] = mapped_column(Millicredits, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class IdempotencyRecord(Base):
    """The first answer to a POST with an Idempotency-Key, replayed for the same key and body (shared.idempotency).

    `created_at` is when the key was claimed: it dates a claim still in progress and the record's purge.
    The answer may hold a secret shown once (a new account's API key), so it is encrypted; the request is
    kept only as a keyed digest (it may hold what was refused, e.g. a card number).
    """

    __tablename__ = "idempotency_records"

    principal: Mapped[str] = mapped_column(String(60), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(EncryptedText)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now(), index=True)


class Payment(Base):
    """One charge of a payment method: a credit purchase (credits > 0) or a bill (credits 0), and its life at the
    gateway: pending (created here), processing (its PaymentIntent exists: `intent_id`), then succeeded, declined,
    error (took nothing), requires_action (3-D Secure at `action_url`), refunded or disputed. The gateway's
    idempotency keys start with `id:attempt`, so a replay never charges twice."""

    __tablename__ = "payments"
    __table_args__ = (Index("ix_payments_status_created_at", "status", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    source: Mapped[str] = mapped_column(String(16))  # api | auto_recharge | dunning
    idempotency_key: Mapped[str] = mapped_column(String(250), unique=True)
    credits: Mapped[int] = mapped_column(Millicredits)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    payment_method: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16))  # see the class docstring
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    intent_id: Mapped[str | None] = mapped_column(String(100), index=True)  # the gateway's PaymentIntent
    action_url: Mapped[str | None] = mapped_column(String(500))  # where the customer finishes 3-D Secure
    refunded_cents: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    clawed_back: Mapped[int] = mapped_column(Millicredits, default=0, server_default="0")  # mc taken back
    charge_id: Mapped[str | None] = mapped_column(String(100))
    decline_code: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(String(500))
    lot_id: Mapped[int | None] = mapped_column(BigInteger)
    dunning_run_id: Mapped[str | None] = mapped_column(String(40), index=True)  # a step asks for its run's payment in play
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class BillingCustomer(Base):
    """An account's Customer at the payment gateway (Stripe's `cus_...`): its cards are saved there."""

    __tablename__ = "billing_customers"

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime]


class GatewayEvent(Base):
    """A webhook event already handled, by the gateway's event id: a replay of it changes nothing."""

    __tablename__ = "gateway_events"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime]


class AutoRecharge(Base):
    """An account's auto-recharge settings and state; its payment method is the account's card on file.

    `in_flight_payment_id` is the claim: set by one conditional UPDATE, so one recharge at a time."""

    __tablename__ = "auto_recharges"

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    threshold: Mapped[int] = mapped_column(Millicredits, default=0)
    credits: Mapped[int] = mapped_column(Millicredits, default=0)
    payment_method: Mapped[str | None] = mapped_column(String(100))
    in_flight_payment_id: Mapped[str | None] = mapped_column(String(40))
    claimed_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # numbers the payments' keys
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(String(500))
    last_payment_id: Mapped[str | None] = mapped_column(String(40))
    updated_at: Mapped[datetime]


class DunningSchedule(Base):
    """An account's dunning steps (day offsets with email/SMS Liquid templates) and the last step's action."""

    __tablename__ = "dunning_schedules"

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), default="default")
    steps: Mapped[list] = mapped_column(JSON)
    final_action: Mapped[str] = mapped_column(String(16), default="suspend")
    update_url: Mapped[str | None] = mapped_column(String(500))
    updated_at: Mapped[datetime]


class DunningRun(Base):
    """Reminders and retries for one unpaid amount. `unpaid_account_id` is set while unpaid: one per account."""

    __tablename__ = "dunning_runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    unpaid_account_id: Mapped[str | None] = mapped_column(String(40), unique=True)
    reason: Mapped[str] = mapped_column(String(16))  # auto_recharge | month_end | customer
    customer: Mapped[dict | None] = mapped_column(JSON)  # a customer run's {id, name, phone, email, fields}
    open_customer_key: Mapped[str | None] = mapped_column(String(200), unique=True)  # one open run per customer
    references: Mapped[list] = mapped_column(JSON)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    credits: Mapped[int] = mapped_column(Millicredits, default=0)  # granted when paid (a failed recharge's bucket)
    payment_method: Mapped[str | None] = mapped_column(String(100))
    steps: Mapped[list] = mapped_column(JSON)  # the schedule as it was when the run started
    site: Mapped[str] = mapped_column(String(64))
    final_action: Mapped[str] = mapped_column(String(16))
    update_url: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16))  # open | exhausted | recovered | resolved | canceled
    next_step: Mapped[int] = mapped_column(Integer, default=0)
    next_step_at: Mapped[datetime | None] = mapped_column(index=True)
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    ended_reason: Mapped[str | None] = mapped_column(String(500))


class DunningStep(Base):
    """What one step of a run did; (run, step) is unique, and each send is marked before it is made."""

    __tablename__ = "dunning_steps"
    __table_args__ = (UniqueConstraint("run_id", "step"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("dunning_runs.id"))
    step: Mapped[int] = mapped_column(Integer)
    payment_id: Mapped[str | None] = mapped_column(String(40))
    email_status: Mapped[str | None] = mapped_column(String(200))
    sms_status: Mapped[str | None] = mapped_column(String(200))
    sms_sid: Mapped[str | None] = mapped_column(String(40))
    sms_message_id: Mapped[str | None] = mapped_column(String(40))  # a customer run's text, sent by the pipeline
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


class DunningIntegration(Base):
    """A dunning site: its Twilio number and credentials for dunning SMS; 20003 marks it broken until new ones are saved.

    A site belongs to an account (its customers' runs text from it, through the message pipeline) or, with no
    account, to creditq itself (its own dunning of accounts). `credential_version` goes up on every save: a
    failure is pinned to the credentials it was sent with by their version (the encrypted token is different on
    every write, so it cannot be compared)."""

    __tablename__ = "dunning_integrations"
    __table_args__ = (UniqueConstraint("account_id", "site"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id"))  # None: creditq's built-in site
    site: Mapped[str] = mapped_column(String(64))
    account_sid: Mapped[str] = mapped_column(String(34))
    auth_token: Mapped[str] = mapped_column(EncryptedText)
    credential_version: Mapped[int] = mapped_column(Integer, default=1)
    from_number: Mapped[str] = mapped_column(String(20), index=True)
    help_text: Mapped[str | None] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(16), default="ok")  # ok | broken
    broken_reason: Mapped[str | None] = mapped_column(String(500))
    updated_at: Mapped[datetime]


class DunningSiteOptOut(Base):
    """A customer who texted STOP to a site's number: no more texts from that site (other sites and e-mail go on)."""

    __tablename__ = "dunning_site_opt_outs"

    site_id: Mapped[str] = mapped_column(ForeignKey("dunning_integrations.id"), primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), primary_key=True)
    created_at: Mapped[datetime]


class BillingRun(Base):
    """One month-end step of one account for one period; the unique key makes each step happen once.

    step `close` (expire, reset, fees, grant, allocations: one transaction) goes enqueued -> completed;
    step `bill` (collecting the reset debt through the payment gateway) goes pending -> paid | declined.
    """

    __tablename__ = "billing_runs"
    __table_args__ = (
        UniqueConstraint("account_id", "period", "step"),
        Index("ix_billing_runs_step_status", "step", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    period: Mapped[str] = mapped_column(String(7))  # the local month that ended, "2021-08"
    step: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(Millicredits, default=0)  # bill: the debt reset and charged
    amount_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    reference: Mapped[str | None] = mapped_column(String(100))  # bill: charge id or decline code
    created_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]


class Campaign(Base):
    """One send to many recipients: a first step and optional drip steps, each a Liquid body.

    status: scheduled -> running, or paused / canceled by the customer (the API shows a running campaign with
    every step fanned out and nothing waiting as completed).
    """

    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))  # whose own credits it draws on (role user)
    name: Mapped[str] = mapped_column(String(200))
    from_: Mapped[str] = mapped_column("from", String(20))
    status: Mapped[str] = mapped_column(String(16))
    quiet_start: Mapped[str] = mapped_column(String(5), default="08:00")
    quiet_end: Mapped[str] = mapped_column(String(5), default="21:00")
    recipients: Mapped[int] = mapped_column(Integer, default=0)  # rows in campaign_recipients
    credits_estimated: Mapped[int] = mapped_column(Millicredits, default=0)  # every step, every sendable recipient
    send_at: Mapped[datetime]  # when the first step starts
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # When it was found completed (every step fanned out, nothing waiting) and its campaign.completed was written.
    completed_at: Mapped[datetime | None]
    redacted_at: Mapped[datetime | None]  # its recipients' numbers and fields blanked (retention)


class CampaignStep(Base):
    """Step 0 is the campaign's body; each drip step starts `delay_days` after the campaign starts."""

    __tablename__ = "campaign_steps"
    __table_args__ = (UniqueConstraint("campaign_id", "step"), Index("ix_campaign_steps_status_starts_at",
                                                                      "status", "starts_at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"))
    step: Mapped[int] = mapped_column(Integer)
    delay_days: Mapped[int] = mapped_column(Integer, default=0)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | fanning_out | done
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    starts_at: Mapped[datetime]
    # what the step's messages should cost, priced at creation: forecasts count the steps not fanned out yet
    credits_estimated: Mapped[int] = mapped_column(Millicredits, default=0, server_default="0")


class CampaignRecipient(Base):
    """A recipient row in the order given; `skip_reason` set means no (further) message goes to it."""

    __tablename__ = "campaign_recipients"
    __table_args__ = (UniqueConstraint("campaign_id", "position"),
                      Index("ix_campaign_recipients_campaign_id_id", "campaign_id", "id"))  # its list's pages

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"))
    position: Mapped[int] = mapped_column(Integer)  # 0-based; chunks are position ranges
    to: Mapped[str] = mapped_column(String(32))
    fields: Mapped[dict] = mapped_column(JSON)
    skip_reason: Mapped[str | None] = mapped_column(String(16))  # opted_out | do_not_contact | duplicate | invalid_number


class CampaignChunk(Base):
    """One chunk of one step fanned out: its unique key makes the fan-out of that chunk happen once."""

    __tablename__ = "campaign_chunks"
    __table_args__ = (UniqueConstraint("campaign_id", "step", "chunk"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"))
    step: Mapped[int] = mapped_column(Integer)
    chunk: Mapped[int] = mapped_column(Integer)
    messages: Mapped[int] = mapped_column(Integer, default=0)
    credits_held: Mapped[int] = mapped_column(Millicredits, default=0)  # 0 when the chunk parked
    created_at: Mapped[datetime]


class LowBalanceNotice(Base):
    """A low-credit email owed to a user, written by the settlement that left a wallet under the threshold.

    Unique per (user, the account's local day): at most one a day per user. `claimed_at` is set just
    before the email is handed over, `sent_at` once it was; a claim older than a lease is taken again.
    """

    __tablename__ = "low_balance_notices"
    __table_args__ = (UniqueConstraint("user_id", "day"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    day: Mapped[str] = mapped_column(String(10))  # the account's local date, "2026-11-03"
    message_id: Mapped[str] = mapped_column(String(40), index=True)  # the settled message that crossed
    pool: Mapped[bool] = mapped_column(Boolean)  # about the company pool, else the user's own credits
    available: Mapped[int] = mapped_column(Millicredits)  # the wallet right after that settlement
    threshold: Mapped[int] = mapped_column(Millicredits)
    created_at: Mapped[datetime]
    claimed_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None] = mapped_column(index=True)


class EarlyStatus(Base):
    """A status callback that arrived before its message's sid was stored: applied when the sid is stored,
    only if the message was sent with the Twilio account whose token signed the callback (`account_sid`).

    One row per callback (no upsert race between concurrent callbacks); rows nobody claims (messages not
    sent through the pipeline) are purged by the sweeper after a day.
    """

    __tablename__ = "early_statuses"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sid: Mapped[str] = mapped_column(String(40), index=True)
    account_sid: Mapped[str] = mapped_column(String(34))
    status: Mapped[str] = mapped_column(String(16))
    num_segments: Mapped[int | None] = mapped_column(Integer)
    price: Mapped[str | None] = mapped_column(String(20))
    price_unit: Mapped[str | None] = mapped_column(String(8))
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(String(500))
    received_at: Mapped[datetime] = mapped_column(index=True)


# PostgreSQL: the send step claims the reports that beat its sid in the statement that stores the sid (a round trip
# less): this takes the sid's lock, then deletes and answers the reports, a JSON array (NULL: none). Its DELETE, a
# statement of a VOLATILE function, reads a snapshot taken after the lock, so it sees what a report's transaction
# committed while the caller waited for it. Installed by migration 0026, and here for `create_all`.
TAKE_EARLY_STATUSES = """CREATE OR REPLACE FUNCTION take_early_statuses(p_sid text, p_lock_key bigint) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_reports jsonb;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_key);
    WITH taken AS (
        DELETE FROM early_statuses e WHERE e.sid = p_sid
        RETURNING e.account_sid, e.status, e.num_segments, e.price, e.price_unit, e.error_code, e.error_message)
    SELECT jsonb_agg(to_jsonb(taken)) INTO v_reports FROM taken;
    RETURN v_reports;
END
$$"""
event.listen(EarlyStatus.__table__, "after_create", DDL(TAKE_EARLY_STATUSES).execute_if(dialect="postgresql"))
# PostgreSQL: whether reports wait for the sid, under the sid's lock, leaving them where they are. The send step
# stores a sid as one statement of its own when none does (nearly always), and in a transaction that takes them
# (above) when some do. Its EXISTS takes its snapshot after the lock, as the DELETE above does. Installed by
# migration 0030, and here for `create_all`.
EARLY_STATUSES_WAITING = """CREATE OR REPLACE FUNCTION early_statuses_waiting(p_sid text, p_lock_key bigint)
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_key);
    RETURN EXISTS (SELECT 1 FROM early_statuses e WHERE e.sid = p_sid);
END
$$"""
event.listen(EarlyStatus.__table__, "after_create", DDL(EARLY_STATUSES_WAITING).execute_if(dialect="postgresql"))


class WebhookEndpoint(Base):
    """Where an account wants its events (shared.events): a URL, the types it takes, a signing secret.

    The secret (`whsec_...`, Standard Webhooks) is shown once and kept encrypted. An endpoint whose deliveries
    failed for the whole retry window is disabled with `disabled_reason`; enabling it again clears that.
    """

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str | None] = mapped_column(String(200))
    secret: Mapped[str] = mapped_column(EncryptedText)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(500))
    last_success_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]


class WebhookSubscription(Base):
    """One event type (or "*") an endpoint takes, with its account: the outbox asks one indexed question of it
    ("does an enabled endpoint of this account take this type?") before it writes an event."""

    __tablename__ = "webhook_subscriptions"
    __table_args__ = (UniqueConstraint("endpoint_id", "event_type"),
                      Index("ix_webhook_subscriptions_account_id_event_type", "account_id", "event_type"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    event_type: Mapped[str] = mapped_column(String(40))


class WebhookEvent(Base):
    """The outbox: an event written in the transaction of the change it describes, with its stable id.

    `key` names the change (`message.delivered:msg_...`), unique, so a replayed step writes no second event.
    `dispatched_at` is set once its deliveries exist; the sweeper dispatches events left without.
    """

    __tablename__ = "webhook_events"
    __table_args__ = (Index("ix_webhook_events_account_id_type", "account_id", "type"),
                      Index("ix_webhook_events_dispatched_at_created_at", "dispatched_at", "created_at"),
                      Index("ix_webhook_events_unredacted_created_at", "created_at",
                            postgresql_where=text("redacted_at IS NULL"), sqlite_where=text("redacted_at IS NULL")))

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    type: Mapped[str] = mapped_column(String(40))
    key: Mapped[str] = mapped_column(String(200), unique=True)
    data: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime]
    dispatched_at: Mapped[datetime | None]
    redacted_at: Mapped[datetime | None]  # a message's body and the contact's number blanked in `data` (retention)


class WebhookDelivery(Base):
    """One event for one endpoint: attempted until it succeeds or its retry window ends.

    status: pending -> succeeded | failed. `next_attempt_at` is also the lease of an attempt under way (set past
    the request's timeout when it starts), so the sweeper re-enqueues only deliveries whose job was lost.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("event_id", "endpoint_id"),
                      Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
                      Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"))

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    retry_until: Mapped[datetime]  # the end of its retry window (3 days from its first try, or from a replay)
    last_attempt_at: Mapped[datetime | None]
    response_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class PriceVersion(Base):
    """One published version of a priced document (`kind`: rate_card or price_list): the newest prices from now on.

    Versions of a kind count up from 1 and are never changed, so a settlement can name the one it used.
    `origin` says who put it there: `upgrade` (`creditq db upgrade` loading the bundled or RATE_CARD_PATH file)
    or `publish` (`creditq rates publish`); `digest` (SHA-256 of the canonical JSON) tells a changed file apart.
    """

    __tablename__ = "price_versions"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    document: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(64))
    origin: Mapped[str] = mapped_column(String(16))
    published_at: Mapped[datetime]
