"""settle_message: charge (or void) a message Twilio has finished with, and make its toll-free resend when it
qualifies (shared.messaging.reprocessing); enqueued by the status webhook."""

from datetime import UTC, datetime

import dramatiq

from shared.billing import low_balance
from shared.billing.auto_recharge import due_after_settling
from shared.messaging.reprocessing import resend_from_toll_free
from shared.messaging.settlement import settle_message as settle

from . import resources
from .payments import auto_recharge, billing


@dramatiq.actor(queue_name="settle", max_retries=20)
def settle_message(message_id: str) -> None:
    """The low-credit notices a settlement owes are written with it and sent after the commit; a replay
    (settle answers `skipped`) sends those a killed run left unsent, and never one twice."""
    r = resources.current()
    now = datetime.now(UTC)
    with r.database.unit_of_work() as session:
        outcome = settle(session, message_id, rate_card=r.rate_card, now=now)
        settled = outcome == "settled"
        resend = resend_from_toll_free(session, message_id, now=now)
        to_notify = (low_balance.note_settlement(session, message_id, now=now) > 0 if settled
                     else outcome == "skipped" and low_balance.unsent(session, message_id))
        recharge_account = settled and due_after_settling(session, message_id, now=now)
    if resend is not None:  # lost if we die here: this job's redelivery enqueues it again, or the sweeper does
        from .sending import send_message  # here, not at the top: workers.sending imports this module

        send_message.send(resend)
    if to_notify:
        low_balance.send_pending(r.database, billing().email, message_id=message_id, now=now)
    if recharge_account:
        auto_recharge.send(recharge_account)  # lost if we die here: the dunning tick catches up
