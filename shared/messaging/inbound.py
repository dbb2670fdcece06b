"""A message someone sent to one of an account's numbers: stored, free, and obeyed when it is STOP/START/HELP.

Inbound is never charged (no ledger entry), so it is stored even for a locked account. Twilio retries a
webhook it got no answer to: the message's sid makes the second delivery a no-op apart from the reply.
It acts only once the webhook is proven to come from the Twilio account the number belongs to (the
owner's own credentials, or the deployment's): one lookup finds the owner and its credentials.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.errors import CallbackRejected
from shared.events.outbox import message_event
from shared.ids import new_id
from shared.messaging.opt_outs import FROM_STOP_KEYWORD, Keyword, classify_inbound, opt_in, opt_out
from shared.messaging.segments import count_segments
from shared.messaging.shared_short_code import resolve
from shared.messaging.sites import SiteNumber, opt_in_to_site, opt_out_of_site, site_of_number
from shared.messaging.statuses import INBOUND_STATUS
from shared.models import Account, Message, PhoneNumber
from shared.twilio.signatures import Credentials, SignedForm, credentials_of, known_credentials

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inbound:
    sid: str
    from_: str
    to: str
    body: str
    num_segments: int | None = None
    media_urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Received:
    account_id: str | None  # None: a bare STOP to the shared short code, stored on no account
    message_id: str | None  # None when Twilio delivered this sid before (or it was stored nowhere)
    keyword: Keyword | None
    reply: str | None  # what to answer the sender with, through TwiML


_NUMBER_OWNER = (
    select(Account.id, Account.help_text, Account.twilio_account_sid, Account.twilio_auth_token)
    .join(PhoneNumber, PhoneNumber.account_id == Account.id)
    .where(PhoneNumber.phone == bindparam("to"))
)


def receive_inbound(session: Session, inbound: Inbound, form: SignedForm, *, deployment: Credentials,
                    now: datetime, shared_short_code: str | None = None) -> Received | None:
    """Store the message on the account that owns `To`; None when no account has that number.

    The form must name the Twilio account of the number's owner (its own, else the deployment's) and be
    signed with its token; else CallbackRejected, and nothing changes. To a number no account has, the
    form is checked against the credentials we know for its AccountSid, and nothing is stored. A text to
    the deployment's `shared_short_code` answers to the deployment's credentials and is routed by keyword
    (shared.messaging.shared_short_code).
    """
    site = site_of_number(session, inbound.to)
    if site is not None:
        return _receive_on_site(session, inbound, form, site, now=now)
    owner = session.execute(_NUMBER_OWNER, {"to": inbound.to}).one_or_none()
    if owner is None and shared_short_code is not None and inbound.to == shared_short_code:
        return _receive_on_shared_code(session, inbound, form, deployment=deployment, now=now)
    if owner is None:
        if not any(map(form.signed_by, known_credentials(session, form.account_sid, deployment=deployment))):
            raise _rejected(inbound, form)
        log.warning("inbound %r to %r: no account has that number", inbound.sid, inbound.to)
        return None
    account_id, help_text, own_sid, own_token = owner
    number_credentials = credentials_of(own_sid or deployment.account_sid, own_sid=own_sid, own_token=own_token,
                                        deployment=deployment)
    if not form.signed_by(number_credentials):
        raise _rejected(inbound, form)
    first_delivery = _store(session, inbound, account_id, now)
    keyword = classify_inbound(inbound.body)
    if first_delivery:
        # Only the first delivery acts: a retried STOP arriving after a START must not opt out again.
        _obey(session, keyword, [account_id], inbound.from_)
    return Received(
        account_id=account_id,
        message_id=first_delivery,
        keyword=keyword,
        reply=help_text if keyword == "help" and help_text else None,
    )


def _receive_on_site(session: Session, inbound: Inbound, form: SignedForm, site: SiteNumber, *,
                     now: datetime) -> Received:
    """A text to a dunning site's number, signed by the site's credentials: stored on its account; STOP and START
    apply to that site's texts only, HELP is answered with the site's help text."""
    if not form.signed_by(Credentials(site.account_sid, site.auth_token)):
        raise _rejected(inbound, form)
    first_delivery = _store(session, inbound, site.account_id, now)
    keyword = classify_inbound(inbound.body)
    if first_delivery and keyword == "opt_out":
        opt_out_of_site(session, site.id, inbound.from_, now=now)
    elif first_delivery and keyword == "opt_in":
        opt_in_to_site(session, site.id, inbound.from_)
    return Received(account_id=site.account_id, message_id=first_delivery, keyword=keyword,
                    reply=site.help_text if keyword == "help" and site.help_text else None)


def _receive_on_shared_code(session: Session, inbound: Inbound, form: SignedForm, *, deployment: Credentials,
                            now: datetime) -> Received | None:
    """A text to the shared short code, on the account its words name (None: no account, nothing stored).

    A bare STOP that no account texted this sender before is stored nowhere, so each delivery of it acts;
    opting out again changes nothing.
    """
    if not form.signed_by(deployment):  # the shared code is the deployment's number
        raise _rejected(inbound, form)
    routed = resolve(session, inbound.body, inbound.from_, code=inbound.to)
    if routed.account_id is None and not routed.acted_on:
        log.warning("inbound %r to the shared short code %r names no keyword and no account texted %r from it: "
                    "not stored", inbound.sid, inbound.to, inbound.from_)
        return None
    first_delivery = _store(session, inbound, routed.account_id, now) if routed.account_id else None
    if first_delivery or routed.account_id is None:
        _obey(session, routed.route.action, routed.acted_on, inbound.from_)
    help_text = session.scalar(select(Account.help_text).where(Account.id == routed.account_id)) \
        if routed.route.action == "help" and routed.account_id else None
    return Received(account_id=routed.account_id, message_id=first_delivery, keyword=routed.route.action,
                    reply=help_text or None)


def _store(session: Session, inbound: Inbound, account_id: str, now: datetime) -> str | None:
    """Insert the inbound message on the account; its id, or None when Twilio delivered this sid before."""
    counted = count_segments(inbound.body)
    message_id = new_id("msg")
    row = dict(
        id=message_id, account_id=account_id, direction="inbound", to=inbound.to, from_=inbound.from_,
        body=inbound.body, media_urls=list(inbound.media_urls) or None, status=INBOUND_STATUS,
        segments=inbound.num_segments or counted.segments, encoding=counted.encoding,
        credits_estimated=0, credits_charged=0, twilio_sid=inbound.sid, twilio_status="received",
        created_at=now, updated_at=now,
    )
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[session.get_bind().dialect.name]
    first_delivery = session.scalar(
        insert(Message).values(**row).on_conflict_do_nothing(index_elements=[Message.twilio_sid]).returning(Message.id)
    ) is not None
    if first_delivery:
        message_event(session, "message.received", message_id, now=now)
    return message_id if first_delivery else None


def _obey(session: Session, keyword: Keyword | None, account_ids: Iterable[str], phone: str) -> None:
    """A recipient's STOP or START, for each of the accounts it applies to."""
    for account_id in account_ids:
        if keyword == "opt_out":
            opt_out(session, account_id, phone, FROM_STOP_KEYWORD)
        elif keyword == "opt_in":
            opt_in(session, account_id, phone, by_recipient=True)


def _rejected(inbound: Inbound, form: SignedForm) -> CallbackRejected:
    log.warning("rejected an inbound webhook to %r naming AccountSid %r: not signed by the number's Twilio account",
                inbound.to, form.account_sid)
    return CallbackRejected("The webhook is not signed by the Twilio account of the number it is about.")
