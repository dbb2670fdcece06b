"""Settling the messages Twilio has finished with, and what each settlement brings with it, in the same
transaction: the toll-free resend it qualifies for, the low-credit notices it owes, and whether the
account's auto-recharge is now due.

The caller commits, then calls `Followups.enqueue`. A job lost between the two is found again from the
database: the sweeper sends accepted messages, the billing schedule sends pending notices and starts due
recharges, and a confirmation lost is done by the sweeper when the message's hold outlives its TTL. A replayed
settlement (`skipped`) hands back the notices a killed run left unsent.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime

import dramatiq
from sqlalchemy.orm import Session

from shared.billing import auto_recharge, low_balance
from shared.broker import enqueue_many
from shared.messaging.rates import RateCard
from shared.messaging.reprocessing import resend_from_toll_free
from shared.messaging.settlement import settle_messages

log = logging.getLogger(__name__)

SEND_ACTOR = "send_message"
NOTICES_ACTOR = "send_low_balance_notices"
RECHARGE_ACTOR = "auto_recharge"
CONFIRM_ACTOR = "confirm_message_status"


@dataclass
class Followups:
    """What to enqueue once the settlements are committed."""

    resends: list[str] = field(default_factory=list)  # toll-free resends waiting for their send job
    notices: list[str] = field(default_factory=list)  # messages whose settlement wrote notices to send
    recharges: list[str] = field(default_factory=list)  # accounts whose auto-recharge is due
    confirmations: list[str] = field(default_factory=list)  # sids whose final status Twilio is to be asked

    def enqueue(self, broker: dramatiq.Broker) -> None:
        """After the commit: one Redis round trip per actor. A failure is logged, not raised: the settlements are
        committed, and what their jobs would do is found again from the database."""
        wanted = {SEND_ACTOR: self.resends, NOTICES_ACTOR: self.notices,
                  RECHARGE_ACTOR: list(dict.fromkeys(self.recharges)),
                  CONFIRM_ACTOR: list(dict.fromkeys(self.confirmations))}
        for actor_name, arguments in wanted.items():
            if not arguments:
                continue
            try:
                enqueue_many(broker.get_actor(actor_name), [(argument,) for argument in arguments])
            except Exception:
                log.exception("could not enqueue %d %s jobs; the sweeper will", len(arguments), actor_name)


def settle_finished(session: Session, message_ids: list[str], *, rate_card: RateCard, now: datetime) -> Followups:
    """Settle (or void) each message, in the order given: callers order them by account, so two transactions
    settling messages of the same accounts take the account rows in the same order."""
    followups = Followups()
    for settled in settle_messages(session, message_ids, rate_card=rate_card, now=now):
        message_id = settled.message_id
        if (resend := resend_from_toll_free(session, settled, now=now)) is not None:
            followups.resends.append(resend)
        wants_notices = settled.low_balance_threshold > 0  # read with the message: most accounts ask nothing more
        if settled.outcome == "settled":
            if wants_notices and low_balance.note_settlement(session, message_id, now=now):
                followups.notices.append(message_id)
            if settled.has_auto_recharge and auto_recharge.due(session, settled.account_id, now=now):
                followups.recharges.append(settled.account_id)
        elif settled.outcome == "skipped" and wants_notices and low_balance.unsent(session, message_id):
            followups.notices.append(message_id)
    return followups
