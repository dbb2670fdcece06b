"""The outbox: an event is a row written in the transaction of the change it describes, so none is lost or
invented when a process dies between the change and its delivery.

Each event costs its caller one statement, INSERT ... SELECT ... WHERE EXISTS: the row is written only when an
enabled endpoint of the account takes the type (an indexed lookup of webhook_subscriptions), so an account
without endpoints pays one index probe and nothing else; the hot message steps ask that with a statement they run
anyway (`takes_any`) and leave the event's statement out where no endpoint takes it. `key` names the change; it
is unique, so a replayed step writes nothing twice and keeps the first event's id. The ids written are handed,
after the commit, to the dispatcher the process registered (`on_written`: the workers' and the web's enqueue of
the fan-out job); the sweeper dispatches what a crash lost between the commit and that hand-over.
"""

import functools
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import JSON, DateTime, String, bindparam, event, exists, func, literal, select, true
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.db import any_of, dialect_name, run
from shared.events.types import ALL, EVENT_TYPES, LOCK_TYPES
from shared.ids import new_id
from shared.models import Message, WebhookEndpoint, WebhookEvent, WebhookSubscription
from shared.money import format_credits

log = logging.getLogger(__name__)

_WRITTEN = "webhook_events_written"  # Session.info: ids written in the current transaction
_dispatcher: Callable[[list[str]], None] | None = None


def on_written(dispatcher: Callable[[list[str]], None] | None) -> None:
    """Register what this process does with the ids of events its transactions committed (None: nothing; the
    sweeper dispatches them)."""
    global _dispatcher
    _dispatcher = dispatcher


def emit(session: Session, event_type: str, *, account_id: str, key: str, data: dict, now: datetime) -> str | None:
    """Write the event if an enabled endpoint of the account takes `event_type`; its id, or None (nobody takes
    it, or `key` was written before)."""
    session.flush()  # as a query would: the endpoints it checks may have been added in this transaction
    return _inserted(session, session.connection().execute(_event(dialect_name(session), event_type), dict(
        event_id=new_id("evt"), account_id=account_id, key=key, data=data, now=now)).scalar_one_or_none())


@functools.cache
def _event(dialect: str, event_type: str):
    """Prebuilt per dialect and type, its values bound: compiled once, not at every event."""
    account_id = bindparam("account_id", type_=String())
    columns = select(bindparam("event_id", type_=String()), account_id, literal(event_type, String()),
                     bindparam("key", type_=String()), bindparam("data", type_=JSON()),
                     bindparam("now", type_=DateTime(timezone=True))).where(_taken(account_id, event_type))
    return _insert_statement(dialect, columns)


def takers(session: Session, account_ids: list[str], event_type: str) -> set[str]:
    """Of these accounts, those with an enabled endpoint taking `event_type`: one statement for a batch, so a
    set-wise job emits only where an event would be written."""
    return set(session.scalars(select(WebhookSubscription.account_id).distinct().join(
        WebhookEndpoint, WebhookEndpoint.id == WebhookSubscription.endpoint_id).where(
        any_of(session, WebhookSubscription.account_id, account_ids), WebhookSubscription.event_type.in_([event_type, ALL]),
        WebhookEndpoint.enabled == true())))


def message_event(session: Session, event_type: str, message_id: str, *, now: datetime) -> str | None:
    """The message's event (message.sent, .delivered, .failed, .received) with the message as it is now in this
    transaction: one statement that reads the row, checks the account's endpoints and writes the event."""
    assert event_type in EVENT_TYPES and event_type not in LOCK_TYPES, event_type
    session.flush()  # the message's pending changes are what the event shows
    return _inserted(session, run(session.connection(), _message_event(dialect_name(session)), dict(
        event_id=new_id("evt"), event_type=event_type, key=f"{event_type}:{message_id}", now=now,
        message_id=message_id)).scalar_one_or_none())


@functools.cache
def _message_event(dialect: str):
    """Prebuilt per dialect (the JSON function differs): the message's steps run it for every text."""
    json_object = func.json_build_object if dialect == "postgresql" else func.json_object
    snapshot = json_object(
        "id", Message.id, "account_id", Message.account_id, "direction", Message.direction,
        "status", Message.status, "from", Message.from_, "to", Message.to, "body", Message.body,
        "segments", Message.segments, "error_code", Message.error_code, "error_message", Message.error_message,
        "campaign_id", Message.campaign_id, "user_id", Message.user_id)
    event_type = bindparam("event_type", type_=String())
    taken = exists().where(WebhookSubscription.account_id == Message.account_id,
                           WebhookSubscription.event_type.in_([event_type, literal(ALL, String())]),
                           WebhookEndpoint.id == WebhookSubscription.endpoint_id, WebhookEndpoint.enabled == true())
    columns = (select(bindparam("event_id", type_=String()), Message.account_id, event_type,
                      bindparam("key", type_=String()), snapshot, bindparam("now", type_=DateTime(timezone=True)))
               .where(Message.id == bindparam("message_id"), taken))
    return _insert_statement(dialect, columns)


def takes_any(account_id, event_types: Sequence[str]):
    """Whether an enabled endpoint of the account takes any of the types: a column for a statement a message's step
    runs anyway, so that a step whose account takes none leaves out `message_event`'s statement (most accounts
    have no endpoint). The types are constants of the statement: prebuilt, it keeps one text."""
    types = [literal(event_type, String()) for event_type in sorted({*event_types, ALL})]
    return exists().where(WebhookSubscription.account_id == account_id, WebhookSubscription.event_type.in_(types),
                          WebhookEndpoint.id == WebhookSubscription.endpoint_id, WebhookEndpoint.enabled == true())


def _taken(account_id, event_type: str):
    """Whether an enabled endpoint of the account takes the type (the lock pair counts as one: see LOCK_TYPES)."""
    assert event_type in EVENT_TYPES, event_type
    return takes_any(account_id, LOCK_TYPES if event_type in LOCK_TYPES else (event_type,))


def _insert_statement(dialect: str, columns):
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
    return (insert(WebhookEvent).from_select(["id", "account_id", "type", "key", "data", "created_at"], columns)
            .on_conflict_do_nothing(index_elements=[WebhookEvent.key]).returning(WebhookEvent.id))


def _inserted(session: Session, event_id: str | None) -> str | None:
    """Note a written event's id for the dispatch after the commit."""
    if event_id is not None:
        session.info.setdefault(_WRITTEN, []).append(event_id)
    return event_id


def account_locked(session: Session, account_id: str, *, reason: str, balance: int, now: datetime) -> str | None:
    """account.locked, when it is news: the account's locks announced so far are all followed by an unlock.

    Counted, not ordered, so events of the same instant cannot confuse it; the count is in the key, so two
    transactions that find the same lock write it once.
    """
    locks, unlocks = _lock_counts(session, account_id)
    if locks > unlocks:
        return None
    return emit(session, "account.locked", account_id=account_id, key=f"account.locked:{account_id}:{locks + 1}",
                now=now, data={"account_id": account_id, "status": "locked", "reason": reason,
                               "balance": format_credits(balance)})


def account_unlocked(session: Session, account_id: str, *, balance: int, now: datetime) -> str | None:
    """account.unlocked, when an account.locked was announced and not yet followed by one."""
    locks, unlocks = _lock_counts(session, account_id)
    if locks <= unlocks:
        return None
    return emit(session, "account.unlocked", account_id=account_id,
                key=f"account.unlocked:{account_id}:{unlocks + 1}", now=now,
                data={"account_id": account_id, "status": "active", "balance": format_credits(balance)})


def _lock_counts(session: Session, account_id: str) -> tuple[int, int]:
    counts = dict(session.execute(select(WebhookEvent.type, func.count()).where(
        WebhookEvent.account_id == account_id, WebhookEvent.type.in_(LOCK_TYPES)).group_by(WebhookEvent.type)).all())
    return counts.get("account.locked", 0), counts.get("account.unlocked", 0)


def written_in(session: Session) -> Sequence[str]:
    """The ids of the events written so far in the session's transaction (tests, and callers that dispatch)."""
    return tuple(session.info.get(_WRITTEN, ()))


@event.listens_for(Session, "after_commit")
def _dispatch_committed(session: Session) -> None:
    written = session.info.pop(_WRITTEN, None)
    if not written or _dispatcher is None:
        return
    try:
        _dispatcher(written)
    except Exception:  # committed already: the sweeper dispatches what this could not
        log.exception("could not dispatch %d webhook events; the sweeper will", len(written))


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_WRITTEN, None)

