"""settle_message: settle (or void) a message Twilio has finished with, then enqueue what follows it
(shared.billing.settling). The status webhook and the send step settle in their own transactions; this job is
the sweeper's, for a final message whose settlement was lost.

confirm_message_status: a final report signed with a token the message's account holds too, asked of Twilio
(shared.billing.confirmation)."""

from datetime import UTC, datetime

import dramatiq
from sqlalchemy.orm import Session

from shared.billing.confirmation import confirm_final_status
from shared.billing.settling import CONFIRM_ACTOR, Followups, settle_finished
from shared.errors import NotFinalYet

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


@dramatiq.actor(actor_name=CONFIRM_ACTOR, queue_name="settle", max_retries=8, min_backoff=5_000,
                max_backoff=600_000)
def confirm_message_status(sid: str) -> None:
    """Tried again, backing off from 5 s, while Twilio does not say final (or the sid is not stored yet): for about
    20 minutes, past the hold's TTL, after which the sweeper's reconciliation has the message."""
    r = resources.current()
    try:
        followups = confirm_final_status(r.database, sid, gateway_for=r.gateway_for, rate_card=r.rate_card,
                                         now=datetime.now(UTC))
    except NotFinalYet as not_yet:
        raise dramatiq.Retry(str(not_yet)) from not_yet
    followups.enqueue(dramatiq.get_broker())
