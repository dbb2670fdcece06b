"""The event types an endpoint may take, and when each one is written."""

EVENT_TYPES: dict[str, str] = {
    "message.sent": "Twilio took an outbound message (its sid is stored).",
    "message.delivered": "The carrier reported an outbound message delivered.",
    "message.failed": "An outbound message ended undelivered or failed (Twilio refused it, or the carrier did).",
    "message.received": "Someone texted one of the account's numbers (an inbound reply).",
    "call.completed": "A call ended and was charged (outgoing, bridged, broadcast or inbound): the call as GET "
                      "/v1/calls/{id} shows it.",
    "balance.low": "A settlement left a wallet (the company pool or a user's credits) under the account's "
                   "low_balance_threshold; at most once a day per user told, as the low-credit email.",
    "account.locked": "A charge took a prepaid account's pool below zero: no new sends until credits land.",
    "account.unlocked": "Credits brought a locked account's pool back to zero or above.",
    "credits.expiring": "The month's report: credits that expire when the account's local month ends, sent once "
                        "a month in its last 7 days, with the plan advice for the last three months.",
    "plan.advice": "Month-end: which plan (or credit hold, or rollover protection) would have cost least for the "
                   "last three months' usage, with the saving, and when the credits are forecast to run out.",
    "campaign.completed": "Every step of a campaign fanned out and none of its messages is waiting any more.",
    "payment.succeeded": "A payment (a purchase, an auto-recharge, a bill) was taken.",
    "payment.failed": "A payment was declined or failed.",
    "dunning.step_sent": "A step of a customer's dunning run did its sends: what its e-mail and its text did "
                         "(the text's message id, whose own events follow it).",
    "dunning.exhausted": "A customer's dunning run went through its last step and is still unpaid.",
}
# A message's final status, and the event that tells it (canceled is the customer's or creditq's doing: none).
MESSAGE_EVENT_FOR_FINAL_STATUS = {"delivered": "message.delivered", "undelivered": "message.failed",
                                  "failed": "message.failed"}
ALL = "*"  # an endpoint taking every type, present and future
# Both written when an endpoint takes either: their counts tell whether an account.locked is news.
LOCK_TYPES = ("account.locked", "account.unlocked")
