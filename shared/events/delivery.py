"""Delivering events: fan-out to the endpoints that take them, then one attempt at a time, with backoff.

`dispatch` makes one WebhookDelivery per (event, endpoint) — unique, so a second dispatch adds nothing — and
marks the event dispatched. `attempt` claims a due delivery with one conditional UPDATE that also moves its
`next_attempt_at` past the request's timeout (a lease): a duplicate job, or the sweeper, finds nothing due
while the attempt is under way, and a worker killed mid-request leaves a delivery the sweeper enqueues once
the lease is over. The URL is checked again (addresses.check_url) and the POST goes to the address that
passed. The outcome is recorded only if the claim is still this attempt's. A failure is retried after
`retry_base_seconds`, doubling up to `retry_max_seconds`, until `retry_until` (3 days after the first try,
by default); the delivery then ends `failed`, and an endpoint that saw no success in that whole window is
disabled with `disabled_reason`. At least once: a receiver may see an event again (a lost answer, a replay);
the `webhook-id` header, the event's id, is the same every time. Attempts hold at most half of a worker's threads,
an account's a share of those (shared.events.slots): the others are deferred, not made, meanwhile.
"""

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.asking import in_turns
from shared.config import WebhookSettings
from shared.db import Database
from shared.errors import NotFound
from shared.events.addresses import Resolver, UnsafeUrl, check_url, resolve
from shared.events.signing import headers as signed_headers
from shared.events.slots import WebhookSlots
from shared.events.transport import Answer, post
from shared.events.types import ALL
from shared.ids import new_id
from shared.models import WebhookDelivery, WebhookEndpoint, WebhookEvent, WebhookSubscription

log = logging.getLogger(__name__)

LEASE_MARGIN_SECONDS = 5.0  # beyond the request's timeout, before a claimed attempt counts as lost
FIRST_DEFERRAL_SECONDS = (1.0, 3.0)  # how long an attempt that first found no slot free waits (spread between)
QUICK_TRIES = 3  # times a deferred attempt's own job tries again (each waiting twice as long), before the sweeper
NO_SLOT = "no webhook slot was free for it during its whole retry window"
MIN_POST_SECONDS = 0.5  # the POST's time when resolving the name took nearly all of the attempt's
SWEEP_BATCH = 500


@dataclass(frozen=True)
class Outcome:
    # succeeded | retrying | failed | not_due (another job has it, or it is not pending) | deferred (no slot: not an
    # attempt, tried again after retry_in_seconds)
    status: str
    retry_in_seconds: float | None = None


def body_of(event: WebhookEvent) -> str:
    """The request body: the same bytes on every attempt of the event."""
    return json.dumps({"type": event.type, "id": event.id, "created_at": _iso(event.created_at),
                       "data": event.data}, separators=(",", ":"), sort_keys=True)


def dispatch(session: Session, event_id: str, *, settings: WebhookSettings, now: datetime) -> list[str]:
    """Make the event's deliveries (once); the ids to attempt now."""
    event = session.get(WebhookEvent, event_id, with_for_update=True)
    if event is None or event.dispatched_at is not None:
        return []
    endpoint_ids = session.scalars(
        select(WebhookEndpoint.id).join(WebhookSubscription, WebhookSubscription.endpoint_id == WebhookEndpoint.id)
        .where(WebhookEndpoint.account_id == event.account_id, WebhookEndpoint.enabled == true(),
               WebhookSubscription.event_type.in_([event.type, ALL])).distinct().order_by(WebhookEndpoint.id)).all()
    rows = [dict(id=new_id("whd"), event_id=event.id, endpoint_id=endpoint_id, status="pending", attempts=0,
                 next_attempt_at=now, retry_until=now + timedelta(seconds=settings.retry_window_seconds),
                 created_at=now, updated_at=now) for endpoint_id in endpoint_ids]
    created = []
    if rows:
        insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[session.get_bind().dialect.name]
        created = session.scalars(insert(WebhookDelivery).values(rows).on_conflict_do_nothing(
            index_elements=[WebhookDelivery.event_id, WebhookDelivery.endpoint_id]).returning(WebhookDelivery.id)).all()
    event.dispatched_at = now
    return list(created)


def attempt(database: Database, delivery_id: str, *, settings: WebhookSettings, development: bool,
            now: Callable[[], datetime], resolver: Resolver = resolve, poster=post, slots: WebhookSlots | None = None,
            deferrals: int = 0) -> Outcome:
    """One attempt of a due delivery; what came of it (and when to try again). With `slots`, an attempt finding no
    slot free is not made but deferred (`_defer`; `deferrals`: how often it was)."""
    started = now()
    lease_seconds = settings.timeout_seconds + LEASE_MARGIN_SECONDS
    due = (WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending",
           WebhookDelivery.next_attempt_at <= started)
    token = account_id = None
    if slots is not None:
        with database.read_only() as session:
            found = session.execute(select(WebhookEndpoint.account_id, WebhookDelivery.retry_until)
                                    .join(WebhookDelivery, WebhookDelivery.endpoint_id == WebhookEndpoint.id)
                                    .where(*due)).one_or_none()
        if found is None:
            return Outcome("not_due")
        account_id, token = found.account_id, slots.take(found.account_id, seconds=lease_seconds)
        if token is None:
            with database.unit_of_work() as session:
                return _defer(session, due, _utc(found.retry_until), deferrals, started)
    try:
        return _attempt(database, delivery_id, due, settings=settings, development=development, now=now,
                        started=started, lease_seconds=lease_seconds, resolver=resolver, poster=poster)
    finally:
        if token is not None:
            slots.give_back(account_id, token)


def _defer(session: Session, due: tuple, retry_until: datetime, deferrals: int, started: datetime) -> Outcome:
    """An attempt that found no slot free: tried again by its own job QUICK_TRIES times, after a few seconds
    doubling (a burst of a quick endpoint's deliveries finds slots free by then); after that left to the sweeper
    (`lost`), which enqueues a batch every 15 s in turns across accounts, so that a backlog of thousands waiting on a
    slow endpoint costs a few jobs a second, not thousands. Past its retry window it fails, as its failed attempts
    would have."""
    if started > retry_until:
        failed = session.execute(update(WebhookDelivery).where(*due).values(
            status="failed", next_attempt_at=None, error=NO_SLOT, updated_at=started)).rowcount
        return Outcome("failed") if failed else Outcome("not_due")
    wait = random.uniform(*FIRST_DEFERRAL_SECONDS) * 2 ** deferrals if deferrals < QUICK_TRIES else None
    deferred = session.execute(update(WebhookDelivery).where(*due).values(
        next_attempt_at=started + timedelta(seconds=wait or 0), updated_at=started)).rowcount
    return Outcome("deferred", wait) if deferred else Outcome("not_due")


def _attempt(database: Database, delivery_id: str, due: tuple, *, settings: WebhookSettings, development: bool,
             now: Callable[[], datetime], started: datetime, lease_seconds: float, resolver: Resolver,
             poster) -> Outcome:
    with database.unit_of_work() as session:
        claimed = session.execute(
            update(WebhookDelivery).where(*due)
            .values(attempts=WebhookDelivery.attempts + 1, next_attempt_at=started + timedelta(seconds=lease_seconds),
                    last_attempt_at=started, updated_at=started)
            .returning(WebhookDelivery.attempts).execution_options(synchronize_session=False)).scalar_one_or_none()
        if claimed is None:
            return Outcome("not_due")
        delivery = session.get(WebhookDelivery, delivery_id)
        endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
        event = session.get(WebhookEvent, delivery.event_id)
        if endpoint.deleted_at is not None or not endpoint.enabled:
            why = "the endpoint was deleted" if endpoint.deleted_at is not None else "the endpoint is disabled"
            _finish(delivery, "failed", None, why, started)
            return Outcome("failed")
        url, secret, body = endpoint.url, endpoint.secret, body_of(event)
    answer: Answer | None = None
    ends = time.monotonic() + settings.timeout_seconds  # resolving and posting together, within the attempt's lease
    try:
        target = _within(settings.timeout_seconds, check_url, url, development=development, resolver=resolver)
        answer = poster(target, body, signed_headers(secret, event.id, body, at=started),
                        timeout=max(ends - time.monotonic(), MIN_POST_SECONDS))
        error = None if 200 <= answer.status < 300 else f"HTTP {answer.status}: {answer.body}"
    except UnsafeUrl as refused:
        error = str(refused)
    except OSError as failure:  # refused, reset, timed out, TLS
        error = f"no answer: {failure!r}"
    with database.unit_of_work() as session:
        return _record(session, delivery_id, claimed, answer, error, settings=settings, now=now())


def _within(seconds: float, call: Callable, *args, **kwargs):
    """`call`'s answer, or TimeoutError once `seconds` are over. It runs in a thread of its own: a name server that
    never answers keeps getaddrinfo, which nothing interrupts, until the system's resolver gives up, and that thread
    ends then; the worker's thread goes back to its queues at once."""
    outcome: dict = {}
    done = threading.Event()

    def run():
        try:
            outcome["answer"] = call(*args, **kwargs)
        except BaseException as error:
            outcome["error"] = error
        finally:
            done.set()

    threading.Thread(target=run, daemon=True, name="webhook-resolve").start()
    if not done.wait(seconds):
        raise TimeoutError(f"the host name did not resolve within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["answer"]


def _record(session: Session, delivery_id: str, claimed: int, answer: Answer | None, error: str | None, *,
            settings: WebhookSettings, now: datetime) -> Outcome:
    delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if delivery.status != "pending" or delivery.attempts != claimed:
        return Outcome("not_due")  # the lease ran out and another attempt took it: its outcome counts
    status_code = answer.status if answer is not None else None
    if error is None:
        _finish(delivery, "succeeded", status_code, None, now)
        session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == delivery.endpoint_id)
                        .values(last_success_at=now))
        return Outcome("succeeded")
    delay = min(settings.retry_base_seconds * 2 ** (claimed - 1), settings.retry_max_seconds)
    if now + timedelta(seconds=delay) > _utc(delivery.retry_until):
        _finish(delivery, "failed", status_code, error, now)
        _disable_if_never_answered(session, delivery, error, settings=settings, now=now)
        return Outcome("failed")
    delivery.next_attempt_at = now + timedelta(seconds=delay)
    delivery.response_status, delivery.error, delivery.updated_at = status_code, error[:500], now
    return Outcome("retrying", delay)


def _disable_if_never_answered(session: Session, delivery: WebhookDelivery, error: str, *,
                               settings: WebhookSettings, now: datetime) -> None:
    """No delivery to the endpoint succeeded during this one's whole retry window: stop sending to it."""
    endpoint = session.get(WebhookEndpoint, delivery.endpoint_id, with_for_update=True)
    window_start = _utc(delivery.retry_until) - timedelta(seconds=settings.retry_window_seconds)
    if not endpoint.enabled or (endpoint.last_success_at is not None and _utc(endpoint.last_success_at) >= window_start):
        return
    hours = settings.retry_window_seconds / 3600
    endpoint.enabled = False
    endpoint.disabled_reason = (f"every delivery failed for {hours:g} hours (last: {error})")[:500]
    endpoint.updated_at = now
    log.warning("webhook endpoint %s of %s disabled: %s", endpoint.id, endpoint.account_id, endpoint.disabled_reason)


def _finish(delivery: WebhookDelivery, status: str, response_status: int | None, error: str | None,
            now: datetime) -> None:
    delivery.status, delivery.next_attempt_at = status, None
    delivery.response_status, delivery.error = response_status, None if error is None else error[:500]
    delivery.updated_at = now


def replay(session: Session, account_id: str, endpoint_id: str, delivery_id: str, *,
           settings: WebhookSettings, now: datetime) -> WebhookDelivery:
    """Send the delivery's event again (same event id), with a fresh retry window; the caller enqueues it."""
    delivery = get_delivery(session, account_id, endpoint_id, delivery_id, for_update=True)
    delivery.status, delivery.next_attempt_at = "pending", now
    delivery.retry_until = now + timedelta(seconds=settings.retry_window_seconds)
    delivery.updated_at = now
    return delivery


def get_delivery(session: Session, account_id: str, endpoint_id: str, delivery_id: str, *,
                 for_update: bool = False) -> WebhookDelivery:
    query = (select(WebhookDelivery).join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
             .where(WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint_id,
                    WebhookEndpoint.account_id == account_id, WebhookEndpoint.deleted_at.is_(None)))
    row = session.scalars(query.with_for_update(of=WebhookDelivery) if for_update else query).one_or_none()
    if row is None:
        raise NotFound(f"No delivery {delivery_id} of webhook endpoint {endpoint_id}.")
    return row


def list_deliveries(session: Session, endpoint_id: str, *, limit: int, before: str | None = None,
                    status: str | None = None) -> list[tuple[WebhookDelivery, str]]:
    """The endpoint's deliveries (in `status`, if given) with their event types, newest first; page on with the
    last id as `before`."""
    query = (select(WebhookDelivery, WebhookEvent.type).join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
             .where(WebhookDelivery.endpoint_id == endpoint_id))
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if before is not None:
        query = query.where(WebhookDelivery.id < before)
    return [(row[0], row[1]) for row in session.execute(query.order_by(WebhookDelivery.id.desc()).limit(limit))]


@dataclass(frozen=True)
class Lost:
    events: list[str]  # written but never dispatched (the process died before enqueueing)
    deliveries: list[str]  # due for a while with no job taking them (lost, or its worker killed)


def lost(session: Session, *, now: datetime, stale_after: timedelta) -> Lost:
    """What the sweeper enqueues again, deliveries in turns across accounts (shared.asking.in_turns: a backlog of one
    account's, deferred for want of a slot, fills no batch); anything younger than `stale_after` is left to its own
    job."""
    cutoff = now - stale_after
    events = session.scalars(select(WebhookEvent.id).where(WebhookEvent.dispatched_at.is_(None),
                                                            WebhookEvent.created_at <= cutoff)
                             .order_by(WebhookEvent.created_at).limit(SWEEP_BATCH)).all()
    due = (select(WebhookDelivery.id).join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
           .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= cutoff))
    deliveries = session.scalars(in_turns(due, WebhookEndpoint.account_id, WebhookDelivery.next_attempt_at,
                                          limit=SWEEP_BATCH)).all()
    return Lost(list(events), list(deliveries))


def _utc(instant: datetime) -> datetime:
    """Aware UTC (SQLite hands back naive datetimes, stored as UTC)."""
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


def _iso(instant: datetime) -> str:
    return _utc(instant).isoformat()
