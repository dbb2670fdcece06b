"""send_message and the send_campaign_message actors: one message to Twilio (shared.messaging.sending does the work).

One job, on several queues: a campaign's texts queue apart from single texts (an API send, a dunning text, a
resend) and rank after them in a worker's hands (dramatiq's actor priority), so that one account's 100,000
recipients never stand between another account's single text and the workers; and they queue by account, on one
of four queues (shared.campaigns.bulk_queues), so that they never stand between another account's campaign and
the workers either.
"""

from collections import defaultdict

import dramatiq

from shared.broker import enqueue_many
from shared.campaigns.bulk_queues import BULK_ACTORS, BULK_QUEUES, bulk_actor_for
from shared.messaging import sending

from . import resources
from .settling import settle_here


@dramatiq.actor(queue_name="send", max_retries=20)
def send_message(message_id: str, slot_booked: bool = False) -> None:
    """Transient Twilio failures retry with backoff (or Twilio's Retry-After); permanent ones do not raise."""
    _send(send_message, message_id, slot_booked)


def _campaign_sender(actor_name: str, queue_name: str) -> dramatiq.Actor:
    def send_campaign_message(message_id: str, slot_booked: bool = False) -> None:
        """send_message for a campaign's text."""
        _send(campaign_senders[actor_name], message_id, slot_booked)

    return dramatiq.actor(send_campaign_message, actor_name=actor_name, queue_name=queue_name, priority=10,
                          max_retries=20)


campaign_senders: dict[str, dramatiq.Actor] = {
    actor_name: _campaign_sender(actor_name, queue_name) for actor_name, queue_name in zip(BULK_ACTORS, BULK_QUEUES)}


def campaign_sender_for(account_id: str) -> dramatiq.Actor:
    """The actor that sends the account's campaign texts, on its account's queue."""
    return campaign_senders[bulk_actor_for(account_id)]


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


def enqueue_sends(message_ids: list[str], bulk: dict[str, str]) -> None:
    """The send jobs of messages of any kind (the sweeper's, a release's), each on its own actor's queue: `bulk`
    maps those that are a campaign's to their account (shared.messaging.messages.in_campaigns), whose
    send_campaign_message queue they go on; the others go on send_message's."""
    by_actor: dict[dramatiq.Actor, list[tuple]] = defaultdict(list)
    for message_id in message_ids:
        by_actor[campaign_sender_for(bulk[message_id]) if message_id in bulk else send_message].append((message_id,))
    for actor, args_list in by_actor.items():
        enqueue_many(actor, args_list)
