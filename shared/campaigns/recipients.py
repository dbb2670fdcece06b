"""Who a campaign goes to: recipients from CSV or a JSON list, and why some are skipped.

Skip reasons: `invalid_number` (not E.164's shape here; the fan-out checks each fully), `duplicate`,
`opted_out` (the recipient's own STOP, or Twilio's 21610), `do_not_contact` (the customer's own
list) and `unsupported_country` (found by the fan-out).
"""

import csv
import io
import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db import any_of
from shared.errors import ValidationFailed
from shared.messaging.opt_outs import RECIPIENT_SOURCES
from shared.models import OptOut

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_FORMATTING = str.maketrans("", "", " -().\t")
_QUERY_CHUNK = 1000  # phones per IN (...): below every database's bound-parameter limit


@dataclass(frozen=True)
class Recipient:
    where: str  # "recipients[3]" or "csv line 4", for error messages
    to: str  # as given
    fields: dict



def parse_csv(text: object) -> list[Recipient]:
    """CSV with a header row: a `to` column, every other column a field. Bad CSV raises ValidationFailed."""
    if not isinstance(text, str):
        raise ValidationFailed("csv must be text: a header row and one row per recipient",
                               errors={"csv": "must be a string"})
    if not text.strip():
        raise ValidationFailed("csv is empty: a header row and one row per recipient are needed",
                               errors={"csv": "is empty"})
    try:
        rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff")), strict=True))
    except csv.Error as error:
        raise _csv_error(f"is not valid CSV: {error}") from None
    header = [name.strip() for name in rows[0]]
    if "to" not in header:
        raise _csv_error("line 1: the header row needs a `to` column (the recipient's number)")
    if len(set(header)) != len(header) or "" in header:
        raise _csv_error("line 1: column names must be unique and not empty")
    recipients = []
    for line, row in enumerate(rows[1:], start=2):
        if not "".join(row).strip():  # a blank line, or only separators and spaces
            continue
        if len(row) != len(header):
            raise _csv_error(f"line {line}: {len(row)} columns, the header has {len(header)}")
        values = dict(zip(header, row))
        to = values.pop("to")
        recipients.append(Recipient(f"csv line {line}", to, values))
    return recipients


def parse_inline(raw: object) -> list[Recipient]:
    """[{to, fields?}, ...] -> recipients; field values are strings, numbers or booleans."""
    if not isinstance(raw, list) or not raw:
        raise ValidationFailed("recipients must be a non-empty list of {to, fields}",
                               errors={"recipients": "must be a non-empty list"})
    recipients = []
    for index, item in enumerate(raw):
        where = f"recipients[{index}]"
        fields = item.get("fields", {}) if isinstance(item, dict) else None
        if not isinstance(item, dict) or not isinstance(item.get("to"), str) or not isinstance(fields, dict) \
                or not all(isinstance(v, (str, int, float, bool)) or v is None for v in fields.values()):
            reason = "must be {to: string, fields: {name: string|number|boolean}}"
            raise ValidationFailed(f"{where} {reason}", errors={where: reason})
        if unknown := sorted(set(item) - {"to", "fields"}):  # a field for the template put beside `to` by mistake
            reason = "is not a field of a recipient: to and fields only (a template's values go in fields)"
            raise ValidationFailed(f"{where}.{unknown[0]} {reason}", errors={f"{where}.{name}": reason
                                                                            for name in unknown})
        recipients.append(Recipient(where, item["to"], dict(fields)))
    return recipients


def looks_like_e164(raw: str) -> str | None:
    """'+1 (415) 555-0100' -> '+14155550100' when it has E.164's shape; None otherwise."""
    compact = raw.translate(_FORMATTING)
    return compact if _E164.fullmatch(compact) else None


def _csv_error(reason: str) -> ValidationFailed:
    return ValidationFailed(f"csv {reason}", errors={"csv": reason})



def skip_reasons(session: Session, account_id: str,
                 recipients: list[Recipient]) -> tuple[list[str | None], list[str | None]]:
    """Each recipient's normalized number (None if malformed) and why it is skipped (None: it is sent)."""
    numbers = [looks_like_e164(recipient.to) for recipient in recipients]
    sources = opt_out_sources(session, account_id, {number for number in numbers if number})
    seen: set[str] = set()
    skips: list[str | None] = []
    for number in numbers:
        if number is None:
            skips.append("invalid_number")
        elif number in seen:
            skips.append("duplicate")
        elif number in sources:
            skips.append(skip_reason_for(sources[number]))
        else:
            skips.append(None)
        if number:
            seen.add(number)
    return numbers, skips


def opt_out_sources(session: Session, account_id: str, phones: set[str]) -> dict[str, str]:
    """phone -> where its opt-out came from, for the phones of `phones` the account must not text."""
    ordered = sorted(phones)
    found: dict[str, str] = {}
    for start in range(0, len(ordered), _QUERY_CHUNK):
        found.update(session.execute(select(OptOut.phone, OptOut.source).where(
            OptOut.account_id == account_id, any_of(session, OptOut.phone, ordered[start:start + _QUERY_CHUNK]))).all())
    return found


def skip_reason_for(source: str) -> str:
    """A recipient's own STOP (or Twilio's 21610) is an opt-out; the customer's own list is do-not-contact."""
    return "opted_out" if source in RECIPIENT_SOURCES else "do_not_contact"
