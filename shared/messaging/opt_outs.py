"""Who an account must not text: recipients who replied STOP, whom Twilio reports unsubscribed (21610),
or whom the customer listed (API, do-not-contact import).

A recipient's own STOP is also enforced by Twilio itself until they text START, so only the recipient
can lift it: the API may remove the opt-outs the customer made, not the recipient's.
"""

import csv
import io
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.db import Database
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.messaging.phone_numbers import parse_e164
from shared.models import Account, OptOut

# Where an opt-out came from (OptOut.source).
FROM_STOP_KEYWORD = "stop_keyword"
FROM_TWILIO_21610 = "twilio_21610"
FROM_API = "api"
FROM_IMPORT = "import"
SOURCES = (FROM_STOP_KEYWORD, FROM_TWILIO_21610, FROM_API, FROM_IMPORT)
RECIPIENT_SOURCES = frozenset({FROM_STOP_KEYWORD, FROM_TWILIO_21610})

# Twilio's default opt-out handling keywords (https://help.twilio.com/articles/223134027).
OPT_OUT_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})

_CHUNK = 500  # phones per statement: below every database's bound-parameter limit
IMPORT_CHUNK = 5_000  # phones per unit of work of an import: ~50 ms of write lock on SQLite
_PHONE_HEADERS = ("phone", "phone_number", "number", "to", "mobile")

Keyword = Literal["opt_out", "opt_in", "help"]


@dataclass(frozen=True)
class InvalidRow:
    line: int  # 1-based line of the CSV
    value: str
    reason: str


def classify_inbound(body: str) -> Keyword | None:
    """What an inbound message asks for, when the whole trimmed message is one of Twilio's keywords."""
    word = (body or "").strip().upper()
    if word in OPT_OUT_KEYWORDS:
        return "opt_out"
    if word in OPT_IN_KEYWORDS:
        return "opt_in"
    if word in HELP_KEYWORDS:
        return "help"
    return None


def is_opted_out(session: Session, account_id: str, phone: str) -> bool:
    return session.scalar(
        select(OptOut.id).where(OptOut.account_id == account_id, OptOut.phone == phone).limit(1)
    ) is not None


def opted_out_among(session: Session, account_id: str, phones: Iterable[str]) -> set[str]:
    """The phones of `phones` this account must not text, in one query per 500 phones."""
    unique = list(dict.fromkeys(phones))
    found: set[str] = set()
    for start in range(0, len(unique), _CHUNK):
        found.update(session.scalars(
            select(OptOut.phone).where(OptOut.account_id == account_id, OptOut.phone.in_(unique[start:start + _CHUNK]))
        ))
    return found


def opt_out(session: Session, account_id: str, phone: str, source: str) -> bool:
    """Record that the account must not text `phone`; True if it was new. Replays and races change nothing."""
    return _insert_ignoring_existing(session, account_id, [phone], source) == 1


def opt_in(session: Session, account_id: str, phone: str, *, by_recipient: bool) -> bool:
    """Lift the opt-out of `phone`; True if there was one.

    `by_recipient` (they texted START) lifts any opt-out. The customer (by_recipient=False) may only lift
    its own, else Conflict: Twilio keeps refusing a recipient who said STOP (21610) until they say START.
    """
    source = session.scalar(select(OptOut.source).where(OptOut.account_id == account_id, OptOut.phone == phone))
    if source is None:
        return False
    if not by_recipient and source in RECIPIENT_SOURCES:
        raise Conflict(f"{phone} opted out themselves ({source}); only they can opt back in, by texting START.")
    session.execute(delete(OptOut).where(OptOut.account_id == account_id, OptOut.phone == phone))
    return True


def get_opt_out(session: Session, account_id: str, phone: str) -> OptOut:
    opt = session.scalar(select(OptOut).where(OptOut.account_id == account_id, OptOut.phone == phone))
    if opt is None:
        raise NotFound(f"{phone} is not opted out.")
    return opt


def list_opt_outs(session: Session, account_id: str, *, limit: int, before_id: int | None = None,
                  source: str | None = None, phone: str | None = None, created_after: datetime | None = None,
                  created_before: datetime | None = None) -> list[OptOut]:
    """Newest first, those matching every filter given; `before_id` continues after the last row of the previous
    page. Created after is inclusive, before exclusive."""
    query = select(OptOut).where(OptOut.account_id == account_id)
    if source is not None:
        query = query.where(OptOut.source == source)
    if phone is not None:
        query = query.where(OptOut.phone == phone)
    if created_after is not None:
        query = query.where(OptOut.created_at >= created_after)
    if created_before is not None:
        query = query.where(OptOut.created_at < created_before)
    if before_id is not None:
        query = query.where(OptOut.id < before_id)
    return list(session.scalars(query.order_by(OptOut.id.desc()).limit(limit)))


@dataclass(frozen=True)
class DoNotContactList:
    """A parsed do-not-contact CSV: its valid phones (E.164, each once, in order) and the rows that are not."""

    phones: list[str]
    invalid: list[InvalidRow]


def parse_do_not_contact(csv_text: str) -> DoNotContactList:
    """One phone per row: the first column, or a column headed phone/number/...; no database needed.

    Rows are read one at a time and dropped once parsed, so a list of 200,000 rows never holds 200,000
    row objects for the garbage collector to walk (a full collection would pause every thread).
    Raises ValidationFailed when the list has no rows at all.
    """
    reader = csv.reader(io.StringIO(csv_text))
    phones: list[str] = []
    invalid: list[InvalidRow] = []
    try:
        header = next(reader, [])
        column, first = _phone_column(header)
        has_rows = any(cell.strip() for cell in header)
        for line, row in enumerate(itertools.chain([header][:1 - first], reader), start=first + 1):
            value = row[column].strip() if column < len(row) else ""
            if not value and not any(cell.strip() for cell in row):
                continue  # blank line
            has_rows = True
            try:
                phones.append(parse_e164(value, field="phone", drop_extension=True))
            except ValidationFailed as error:
                invalid.append(InvalidRow(line, value, error.errors.get("phone", str(error))))
    except csv.Error as error:  # a field past the csv module's limit (131,072 characters), ...
        raise ValidationFailed(f"The do-not-contact list is not valid CSV: {error}",
                               errors={"csv": f"is not valid CSV: {error}"}) from None
    if not has_rows:
        raise ValidationFailed("The do-not-contact list is empty.", errors={"csv": "has no rows"})
    return DoNotContactList(list(dict.fromkeys(phones)), invalid)


def import_do_not_contact(database: Database, account_id: str, csv_text: str) -> tuple[int, list[InvalidRow]]:
    """Opt out every valid phone of a CSV; returns how many were new and the rows that are not valid numbers.

    The list is parsed and validated before any transaction, then written IMPORT_CHUNK phones per unit
    of work, yielding the write lock between chunks: a 10 MB list never holds it for more than one
    chunk, so other tenants' writes wait a chunk at most. Each chunk inserts only what is missing, so an import stopped half-way (a
    crash, a lost connection) is finished by sending the same list again, and a repeat adds nothing.
    """
    with database.read_only() as session:
        if session.get(Account, account_id) is None:
            raise NotFound(f"No account {account_id}.")
    parsed = parse_do_not_contact(csv_text)
    added = 0
    for start in range(0, len(parsed.phones), IMPORT_CHUNK):
        if start:
            database.yield_to_writers()
        with database.unit_of_work() as session:
            added += _opt_out_all(session, account_id, parsed.phones[start:start + IMPORT_CHUNK], FROM_IMPORT)
    return added, parsed.invalid


def _opt_out_all(session: Session, account_id: str, phones: list[str], source: str) -> int:
    """Opt out each of `phones` not opted out yet, _CHUNK per statement; how many were new."""
    return sum(_insert_ignoring_existing(session, account_id, phones[start:start + _CHUNK], source)
               for start in range(0, len(phones), _CHUNK))


def _phone_column(header: list[str]) -> tuple[int, int]:
    """(column index, index of the first data row): a header names the phone column, else column 0, no header."""
    names = [cell.strip().lower() for cell in header]
    for name in _PHONE_HEADERS:
        if name in names:
            return names.index(name), 1
    return 0, 0


def _insert_ignoring_existing(session: Session, account_id: str, phones: list[str], source: str) -> int:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING on (account_id, phone): the number of rows actually added."""
    if not phones:
        return 0
    dialect = session.get_bind().dialect.name
    statement = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(dialect)
    if statement is None:
        raise NotImplementedError(f"opt-outs need an upsert on {dialect}")
    rows = [{"account_id": account_id, "phone": phone, "source": source} for phone in phones]
    added = session.scalars(statement(OptOut).values(rows).on_conflict_do_nothing(
        index_elements=[OptOut.account_id, OptOut.phone]).returning(OptOut.id))
    return len(added.all())
