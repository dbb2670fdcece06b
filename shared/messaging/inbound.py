"""A message someone sent to one of an account's numbers: stored, free, and obeyed when it is STOP/START/HELP.

Inbound is never charged (no ledger entry), so it is stored even for a locked account. Twilio retries a
webhook it got no answer to: the message's sid makes the second delivery a no-op apart from the reply.
It acts only once the webhook is proven to come from the Twilio account the number belongs to (the
owner's own credentials, or the deployment's): one lookup finds the owner and its credentials.
"""

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.errors import CallbackRejected
from shared.ids import new_id
from shared.messaging.opt_outs import FROM_STOP_KEYWORD, Keyword, classify_inbound, opt_in, opt_out
from shared.messaging.segments import count_segments
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
    account_id: str
    message_id: str | None  # None when Twilio delivered this sid before
    keyword: Keyword | None
    reply: str | None  # what to answer the sender with, through TwiML


_NUMBER_OWNER = (
    select(Account.id, Account.help_text, Account.twilio_account_sid, Account.twilio_auth_token)
    .join(PhoneNumber, PhoneNumber.account_id == Account.id)
    .where(PhoneNumber.phone == bindparam("to"))
)


def receive_inbound(session: Session, inbound: Inbound, form: SignedForm, *, deployment: Credentials,
                    now: datetime) -> Received | None:
    """Store the message on the account that owns `To`; None when no account has that number.

    The form must name the Twilio account of the number's owner (its own, else the deployment's) and be
    signed with its token; else CallbackRejected, and nothing changes. To a number no account has, the
    form is checked against the credentials we know for its AccountSid, and nothing is stored.
    """
    owner = session.execute(_NUMBER_OWNER, {"to": inbound.to}).one_or_none()
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
    keyword = classify_inbound(inbound.body)
    if first_delivery:
        # Only the first delivery acts: a retried STOP arriving after a START must not opt out again.
        if keyword == "opt_out":
            opt_out(session, account_id, inbound.from_, FROM_STOP_KEYWORD)
        elif keyword == "opt_in":
            opt_in(session, account_id, inbound.from_, by_recipient=True)
    return Received(
        account_id=account_id,
        message_id=message_id if first_delivery else None,
        keyword=keyword,
        reply=help_text if keyword == "help" and help_text else None,
    )


def _rejected(inbound: Inbound, form: SignedForm) -> CallbackRejected:
    log.warning("rejected an inbound webhook to %r naming AccountSid %r: not signed by the number's Twilio account",
                inbound.to, form.account_sid)
    return CallbackRejected("The webhook is not signed by the Twilio account of the number it is about.")
