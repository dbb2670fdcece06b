"""settle_message: settle (or void) a message Twilio has finished with, then enqueue what follows it
(shared.billing.settling). The status webhook and the send step settle in their own transactions; this job is
the sweeper's, for a final message whose settlement was lost."""

from datetime import UTC, datetime

import dramatiq
from sqlalchemy.orm import Session

from shared.billing.settling import Followups, settle_finished

from . import resources


@dramatiq.actor(queue_name="settle", max_retries=20)
def settle_message(message_id: str) -> None:
    with resources.current().database.unit_of_work() as session:
        followups = settle_here(session, message_id)
    followups.enqueue(dramatiq.get_broker())


def settle_here(session: Session, message_id: str) -> Followups:
    """Settle the message in the caller's unit of work."""
    r = resources.current()
    return settle_finished(session, [message_id], rate_card=r.rate_card, now=datetime.now(UTC))
