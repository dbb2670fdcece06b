"""The deployment's shared short code (SHARED_SHORT_CODE): accounts without a short code of their own send from
it under a keyword, and texts to it are routed to an account by that keyword.

An account's keyword is letters and digits, stored in capitals under a unique index, so two accounts
can never hold one keyword in any case: of two claiming it at once, the second write fails on the
index and is answered as a conflict that names the keyword, never its holder. Reserved words (Twilio's
opt-out, opt-in and help keywords and their like) are refused, since a recipient's STOP must never
reach an account as a keyword. The account row also keeps the code the keyword was set on, so the send
step, the throttle and settlement see a short-code sender without reading the deployment's settings; the
code stays after the keyword is released, so a text sent before still settles at the short-code rate.

Every text sent through the code carries its keyword in front (`ACME: body`), and that prefixed body
is what is estimated, held, sent and charged. An inbound text is routed by its first word (`ACME ...`);
`STOP ACME` opts the sender out of that account alone, a bare opt-out word out of every account with a
keyword on the code and every account that texted the sender from it (a bare START lifts those again,
never an account's do-not-contact list); a text naming no keyword goes to the account that last texted
the sender from it.
"""

import re
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.errors import Conflict, NotFound, ValidationFailed
from shared.messaging.opt_outs import (
    HELP_KEYWORDS,
    OPT_IN_KEYWORDS,
    OPT_OUT_KEYWORDS,
    RECIPIENT_SOURCES,
    Keyword,
    classify_inbound,
)
from shared.models import Account, Message, OptOut

FIELD = "settings.shared_short_code.keyword"
MIN_LENGTH, MAX_LENGTH = 2, 15
# Twilio's keywords and other words recipients answer a short code with to mean the same (ARRET: French STOP).
RESERVED = OPT_OUT_KEYWORDS | OPT_IN_KEYWORDS | HELP_KEYWORDS | frozenset(
    {"NO", "SUBSCRIBE", "OPTIN", "RESUME", "CONTINUE", "ARRET"})
_KEYWORD = re.compile(rf"[A-Z0-9]{{{MIN_LENGTH},{MAX_LENGTH}}}")
OFF = "This deployment has no shared short code (SHARED_SHORT_CODE is not set)."


def parse_keyword(raw: object) -> str:
    """The keyword in capitals; ValidationFailed naming FIELD when it is not letters and digits or is reserved."""
    if not isinstance(raw, str) or not raw.isascii() or not _KEYWORD.fullmatch(raw.strip().upper()):
        reason = f"must be {MIN_LENGTH} to {MAX_LENGTH} letters (A-Z) and digits"
        raise ValidationFailed(f"keyword {reason}", errors={FIELD: reason})
    keyword = raw.strip().upper()
    if keyword in RESERVED:
        reason = f"{keyword} is reserved for recipients' replies (STOP, START, HELP and their like)"
        raise ValidationFailed(f"keyword {reason}", errors={FIELD: reason})
    return keyword


def set_keyword(session: Session, account_id: str, keyword: str | None, *, code: str | None) -> Account:
    """Give the account `keyword` (parsed) on the deployment's `code`, or with None release its keyword.

    Conflict when the deployment has no code, or when another account holds the keyword.
    """
    account = session.get(Account, account_id, with_for_update=True)
    if account is None:
        raise NotFound(f"No account {account_id}.")
    if keyword is None:
        account.shared_short_code_keyword = None  # the code stays: texts sent from it may still be settling
        return account
    if code is None:
        raise Conflict(OFF)
    taken = Conflict(f"The keyword {keyword} is taken on the shared short code {code}; choose another.")
    if session.scalar(select(Account.id).where(Account.shared_short_code_keyword == keyword,
                                               Account.id != account_id)) is not None:
        raise taken
    account.shared_short_code, account.shared_short_code_keyword = code, keyword
    try:
        session.flush()
    except IntegrityError:  # claimed by another account meanwhile; the unit of work rolls back
        raise taken from None
    return account


def setting(account: Account) -> dict | None:
    """The API's shape of the setting: the keyword and the code to send from, or None."""
    if account.shared_short_code_keyword is None:
        return None
    return {"keyword": account.shared_short_code_keyword, "code": account.shared_short_code}


def prefixed(keyword: str | None, body: object) -> object:
    """What a text sent through the shared code says: its keyword in front, so the recipient knows who sends it.

    Without a keyword, or without text (a body still to be refused, or media only), the body as it is.
    """
    if keyword is None or not isinstance(body, str) or not body.strip():
        return body
    return f"{keyword}: {body}"


def keyword_for(session: Session, account_id: str, from_: str, *, code: str | None) -> str | None:
    """The account's keyword when `from_` is the deployment's shared code and the keyword is set on it."""
    if code is None or from_ != code:
        return None
    return session.scalar(select(Account.shared_short_code_keyword)
                          .where(Account.id == account_id, Account.shared_short_code == code))  # None once released


@dataclass(frozen=True)
class Route:
    """Where an inbound text to the shared code belongs, read from its words alone."""

    keyword: str | None  # the keyword it names; None: none
    action: Keyword | None  # what it asks (opt_out, opt_in, help) of the account(s)
    every_account: bool = False  # a bare opt-out or opt-in word: every account with a keyword on the code


def route(body: str, keywords: Collection[str]) -> Route:
    """Route a text by its first word among `keywords` (capitals): `ACME hi`, `ACME STOP`, `STOP ACME`, `STOP`."""
    words = (body or "").split()
    first = words[0].upper() if words else ""
    if first in keywords:
        return Route(first, classify_inbound(" ".join(words[1:])))
    action = classify_inbound(first)
    if action is not None and len(words) == 2 and words[1].upper() in keywords:
        return Route(words[1].upper(), action)
    if action is not None and len(words) == 1:
        return Route(None, action, every_account=action != "help")
    return Route(None, None)


@dataclass(frozen=True)
class Routed:
    route: Route
    account_id: str | None  # where the text is stored; None: no account
    acted_on: tuple[str, ...]  # the accounts its opt-out or opt-in applies to


def resolve(session: Session, body: str, sender: str, *, code: str) -> Routed:
    """The accounts an inbound text from `sender` to the shared `code` belongs to and acts on."""
    candidates = [word.upper() for word in (body or "").split()[:2]]
    holders = dict(session.execute(select(Account.shared_short_code_keyword, Account.id).where(
        Account.shared_short_code == code, Account.shared_short_code_keyword.in_(candidates))).all())
    found = route(body, holders)
    if found.keyword is not None:
        return Routed(found, holders[found.keyword], (holders[found.keyword],) if found.action else ())
    last = _last_texted(session, sender, code)
    if found.every_account:
        # every account on the code now, and every one that texted this sender from it (a released keyword's
        # texts may still be in flight): the sender asked the code, not a program on it, to stop
        texted = select(Message.account_id).where(Message.to == sender, Message.from_ == code,
                                                  Message.direction == "outbound")
        every = select(Account.id).where(or_(
            and_(Account.shared_short_code == code, Account.shared_short_code_keyword.is_not(None)),
            Account.id.in_(texted)))
        if found.action == "opt_in":  # lifts what recipients asked for, never an account's own do-not-contact list
            every = every.where(select(OptOut.id).where(OptOut.account_id == Account.id, OptOut.phone == sender,
                                                        OptOut.source.in_(RECIPIENT_SOURCES)).exists())
        return Routed(found, last, tuple(session.scalars(every)))
    return Routed(found, last, (last,) if last and found.action else ())


def _last_texted(session: Session, phone: str, code: str) -> str | None:
    """The account that last texted `phone` from the shared code (index ix_messages_to_from)."""
    return session.scalar(select(Message.account_id).where(
        Message.to == phone, Message.from_ == code, Message.direction == "outbound")
        .order_by(Message.created_at.desc(), Message.id.desc()).limit(1))
