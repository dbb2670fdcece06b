"""send_message and send_campaign_message: one message to Twilio (shared.messaging.sending does the work).

Two actors on two queues for one job: a campaign's texts queue apart from single texts (an API send, a dunning
text, a resend) and rank after them in a worker's hands (dramatiq's actor priority), so that one account's
100,000 recipients never stand between another account's single text and the workers.
"""

import dramatiq

from shared.broker import enqueue_many
from shared.messaging import sending

from . import resources
from .settling import settle_here


@dramatiq.actor(queue_name="send", max_retries=20)
def send_message(message_id: str, slot_booked: bool = False) -> None:
    """Transient Twilio failures retry with backoff (or Twilio's Retry-After); permanent ones do not raise."""
    _send(send_message, message_id, slot_booked)


@dramatiq.actor(queue_name="send_bulk", priority=10, max_retries=20)
def send_campaign_message(message_id: str, slot_booked: bool = False) -> None:
    """send_message for a campaign's text."""
    _send(send_campaign_message, message_id, slot_booked)


def _send(actor: dramatiq.Actor, message_id: str, slot_booked: bool) -> None:
    r = resources.current()
    settled = []  # what settling brought, when early callbacks made the message final as its sid was stored
    try:
        sending.send_message(r.database, message_id, gateway_for=r.gateway_for, throttle=r.throttle,
                             hold_ttl_seconds=r.hold_ttl_seconds, slot_booked=slot_booked, claims=r.claims,
                             settle_final=lambda session, message_id: settled.append(settle_here(session, message_id)))
    except sending.SendLater as later:
        delay_ms = None if later.delay_seconds is None else int(later.delay_seconds * 1000)
        if later.slot_booked:
            # The throttle booked a slot `delay_ms` ahead: run then, without booking another.
            actor.send_with_options(args=(message_id, True), delay=delay_ms)
            return
        raise dramatiq.Retry(str(later), delay=delay_ms) from later
    for followups in settled:
        followups.enqueue(dramatiq.get_broker())


def enqueue_sends(message_ids: list[str], bulk: set[str]) -> None:
    """The send jobs of messages of any kind (the sweeper's, a release's), each on its own actor's queue: `bulk`,
    those that are a campaign's (shared.messaging.messages.in_campaigns), on send_campaign_message's."""
    enqueue_many(send_campaign_message, [(message_id,) for message_id in message_ids if message_id in bulk])
    enqueue_many(send_message, [(message_id,) for message_id in message_ids if message_id not in bulk])
