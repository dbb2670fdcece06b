"""Stored answers to Idempotency-Key requests: the claim of a (caller, key), its answer, and their purge.

A request claims its key before it runs (an IN_PROGRESS row dated `created_at`), so concurrent twins
cannot both create; its answer then replaces the claim, and the same key with the same request gets
that answer again. A claim whose process died before answering is taken over by a retry once it is
older than the claim timeout (set it above the longest a request may run); until then the retry is
told when to come back, never refused for ever. The claim's `created_at` is its token: a request
that was overtaken that way records nothing over its successor's answer.

Records are kept for KEEP (24 h) and then purged in batches by a scheduled job; after that, the same
key runs the request again.
"""

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from shared.db import Database
from shared.errors import Conflict
from shared.models import IdempotencyRecord

IN_PROGRESS = 0  # status of a claimed key whose request has not answered yet
KEEP = timedelta(hours=24)
PURGE_BATCH = 1000  # rows per delete: each batch is a short transaction
_CLAIM_ATTEMPTS = 3


def claim(database: Database, principal: str, key: str, request_hash: str, *, now: datetime,
          timeout: timedelta) -> IdempotencyRecord | None:
    """None when this request now owns the key (claimed at `now`); otherwise the record that holds it."""
    for _ in range(_CLAIM_ATTEMPTS):
        try:
            with database.unit_of_work() as session:
                session.add(IdempotencyRecord(principal=principal, key=key, request_hash=request_hash,
                                              status=IN_PROGRESS, body="", created_at=now))
            return None
        except IntegrityError:
            pass
        with database.unit_of_work() as session:
            record = session.get(IdempotencyRecord, (principal, key))
            if record is None:  # released between our insert and this read: claim again
                continue
            if record.status != IN_PROGRESS or record.request_hash != request_hash or not _stale(record, now, timeout):
                return record
            taken = session.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.principal == principal, IdempotencyRecord.key == key,
                       IdempotencyRecord.status == IN_PROGRESS, IdempotencyRecord.created_at <= now - timeout)
                .values(created_at=now).execution_options(synchronize_session=False)
            ).rowcount
            if taken:
                return None
    raise Conflict("This Idempotency-Key is being claimed and released concurrently; retry the request.")


def retry_after(record: IdempotencyRecord, *, now: datetime, timeout: timedelta) -> timedelta:
    """How long until a claim still in progress may be taken over."""
    return max(_utc(record.created_at) + timeout - now, timedelta(0))


def record_answer(database: Database, principal: str, key: str, *, claimed_at: datetime, status: int,
                  body: str) -> None:
    with database.unit_of_work() as session:
        session.execute(update(IdempotencyRecord).where(*_owned(principal, key, claimed_at))
                        .values(status=status, body=body))


def release(database: Database, principal: str, key: str, *, claimed_at: datetime) -> None:
    """Give the key back (the request failed in a way a retry should run again)."""
    with database.unit_of_work() as session:
        session.execute(delete(IdempotencyRecord).where(*_owned(principal, key, claimed_at)))


def purge(database: Database, *, now: datetime, batch: int = PURGE_BATCH) -> int:
    """Delete the records older than KEEP, `batch` rows per transaction; how many went."""
    before = now - KEEP
    purged = 0
    while True:
        with database.unit_of_work() as session:
            oldest = (select(IdempotencyRecord.principal, IdempotencyRecord.key)
                      .where(IdempotencyRecord.created_at < before).limit(batch))
            deleted = session.execute(
                delete(IdempotencyRecord)
                .where(tuple_(IdempotencyRecord.principal, IdempotencyRecord.key).in_(oldest))
                .execution_options(synchronize_session=False)
            ).rowcount
        purged += deleted
        if deleted < batch:
            return purged


def _owned(principal: str, key: str, claimed_at: datetime) -> tuple:
    return (IdempotencyRecord.principal == principal, IdempotencyRecord.key == key,
            IdempotencyRecord.status == IN_PROGRESS, IdempotencyRecord.created_at == claimed_at)


def _stale(record: IdempotencyRecord, now: datetime, timeout: timedelta) -> bool:
    return _utc(record.created_at) <= now - timeout


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time creditq stores is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
