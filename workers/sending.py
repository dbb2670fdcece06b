"""send_message: one message to Twilio (shared.messaging.sending does the work)."""

import dramatiq

from shared.messaging import sending

from . import resources
from .settling import settle_here


@dramatiq.actor(queue_name="send", max_retries=20)
def send_message(message_id: str, slot_booked: bool = False) -> None:
    """Transient Twilio failures retry with backoff (or Twilio's Retry-After); permanent ones do not raise."""
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
            send_message.send_with_options(args=(message_id, True), delay=delay_ms)
            return
        raise dramatiq.Retry(str(later), delay=delay_ms) from later
    for followups in settled:
        followups.enqueue(dramatiq.get_broker())
