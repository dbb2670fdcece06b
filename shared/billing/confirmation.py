"""A final status the message's own account could have written, asked of Twilio before it counts.

A status callback is verified with the token of the Twilio account its message was sent with. The deployment's
token is ours alone; an account's own subaccount's (or a dunning site's) is the tenant's too, and a tenant that
signs "failed" or "delivered, 0 segments" for a text Twilio delivered in full would send it for nothing. So such a
report is not applied (shared.messaging.statuses.ToConfirm): this fetches the message from Twilio with the
credentials it was sent with and applies Twilio's answer, settling it in the same transaction, as a deployment's
callback would (a record the tenant deleted at Twilio counts as delivered). Twilio not (yet) saying final, or the
sid not stored yet, is for a later try; a message never confirmed is reconciled by the sweeper when its hold
outlives its TTL.
"""

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select

from shared.billing.settling import Followups, settle_finished
from shared.db import Database
from shared.errors import NotFinalYet
from shared.messaging.rates import RateCard
from shared.messaging.statuses import FINAL_STATUSES, TWILIO_FINAL
from shared.messaging.sweeper import fetch_or_gone, owner_credentials, record_fetched
from shared.models import Message


def confirm_final_status(database: Database, sid: str, *, gateway_for: Callable, rate_card: RateCard,
                         now: datetime) -> Followups:
    """Apply what Twilio says of the message `sid` once it is final, and settle it; what to enqueue after.

    Raises NotFinalYet, and Twilio's errors (shared.twilio.errors) as the gateway raises them.
    """
    with database.read_only() as session:
        message = session.scalars(select(Message).where(Message.twilio_sid == sid)).one_or_none()
        if message is None:
            raise NotFinalYet(f"no message has the sid {sid} yet")
        if message.status in FINAL_STATUSES:
            return Followups()
        credentials = owner_credentials(session, message)
    fetched = fetch_or_gone(gateway_for(*credentials), sid)
    if fetched.status not in TWILIO_FINAL:
        raise NotFinalYet(f"Twilio says {sid} is {fetched.status!r}")
    with database.unit_of_work() as session:
        change = record_fetched(session, fetched, now)
        if change is None or not change.became_final:
            return Followups()
        return settle_finished(session, [change.message_id], rate_card=rate_card, now=now)
