"""Fan-out: a campaign step becomes messages, one chunk of recipients at a time.

A step is claimed once (pending -> fanning_out) and split into chunks of CHUNK_SIZE recipient
positions. Each chunk, in one unit of work keyed by (campaign, step, chunk): validates its numbers
fully, skips late opt-outs, renders and prices each body, decides when each message may go (quiet
hours), then holds the credits of the whole chunk with one `book.reserve_many`: the holds and the
messages are inserted first (COPY on PostgreSQL), and the account row is updated once, last, so
concurrent chunks (jobs of their own, on any worker process) insert side by side and queue on that
row only from its UPDATE to their commit. The caller enqueues the ids returned, in bulk, after the
commit; if it dies first, the sweeper enqueues `accepted` messages whose job never came, as it does
for single messages.

When the chunk's hold does not fit a prepaid account, the chunk is inserted `parked`: the sweeper
releases parked messages once a top-up makes room, and the send step reserves for each then. So a
campaign never overspends by more than one chunk's settlement overage.

The chunks' jobs live only in the broker: a Redis that restarts empty, or a worker killed holding one, loses
them. A step still fanning out a while after it started is `stalled`; its fan-out job, run again, enqueues the
chunks that have no row yet, and only those.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

import phonenumbers
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from shared.campaigns.creation import Pricer, render_body
from shared.campaigns.recipients import opt_out_sources, skip_reason_for
from shared.campaigns.templates import compile_template
from shared.db import copy_rows, insert_on_conflict
from shared.errors import AccountLocked, InsufficientCredits, ValidationFailed
from shared.ids import new_id
from shared.ledger import book
from shared.ledger.expiry import utc
from shared.messaging.estimate import sender_type_of
from shared.messaging.parking import blocked_reason
from shared.messaging.phone_numbers import time_zones_of
from shared.messaging.quiet_hours import next_allowed, zones
from shared.messaging.rates import RateCard
from shared.messaging.send_policy import PAUSED, window_of
from shared.models import Account, Campaign, CampaignChunk, CampaignRecipient, CampaignStep, Message

CHUNK_SIZE = 1000
_ZONE_PREFIX = 10  # "+" and libphonenumber's longest time-zone prefix (9 digits): numbers sharing it share zones


@dataclass(frozen=True)
class StepStart:
    campaign_id: str
    step: int
    chunks: int
    missing: tuple[int, ...]  # the chunks not made yet: what the fan-out job enqueues


def due_steps(session: Session, now: datetime) -> list[tuple[str, int]]:
    """Steps whose time has come, of campaigns neither paused nor canceled."""
    return list(session.execute(
        select(CampaignStep.campaign_id, CampaignStep.step).join(Campaign, Campaign.id == CampaignStep.campaign_id)
        .where(CampaignStep.status == "pending", CampaignStep.starts_at <= now,
               Campaign.status.in_(("scheduled", "running")))
        .order_by(CampaignStep.starts_at).limit(100)).all())


def stalled_steps(session: Session, before: datetime) -> list[tuple[str, int]]:
    """Steps fanning out since before `before` (they start at `starts_at`) of campaigns running: some chunk's job
    may be lost. Indexed by (status, starts_at); a step leaves the list once its last chunk is made."""
    return list(session.execute(
        select(CampaignStep.campaign_id, CampaignStep.step).join(Campaign, Campaign.id == CampaignStep.campaign_id)
        .where(CampaignStep.status == "fanning_out", CampaignStep.starts_at <= before, Campaign.status == "running")
        .order_by(CampaignStep.starts_at).limit(100)).all())


def start_step(session: Session, campaign_id: str, step: int, *, now: datetime) -> StepStart | None:
    """Claim a due step and say which chunks it still needs; a step already fanning out answers again (replay, or
    the campaign_steps job re-driving a stalled step)."""
    campaign = session.get(Campaign, campaign_id, with_for_update=True)
    row = session.scalar(select(CampaignStep).where(CampaignStep.campaign_id == campaign_id,
                                                    CampaignStep.step == step))
    if campaign is None or row is None or campaign.status in ("paused", "canceled"):
        return None
    if row.status == "pending":
        if utc(row.starts_at) > now:
            return None
        row.status = "fanning_out"
        row.chunks = max(1, -(-campaign.recipients // CHUNK_SIZE))
        if campaign.status == "scheduled":
            campaign.status, campaign.updated_at = "running", now
    if row.status != "fanning_out":
        return None
    made = set(session.scalars(select(CampaignChunk.chunk).where(CampaignChunk.campaign_id == campaign_id,
                                                                 CampaignChunk.step == step)))
    return StepStart(campaign_id, step, row.chunks, tuple(c for c in range(row.chunks) if c not in made))


def fan_out_chunk(session: Session, campaign_id: str, step: int, chunk: int, *, rate_card: RateCard,
                  hold_ttl_seconds: int, now: datetime) -> list[str]:
    """Make the chunk's messages; returns the ids to enqueue now. A replayed chunk returns []."""
    if not _claim_chunk(session, campaign_id, step, chunk, now):
        return []
    campaign = session.get(Campaign, campaign_id)
    step_row = session.scalar(select(CampaignStep).where(CampaignStep.campaign_id == campaign_id,
                                                         CampaignStep.step == step))
    done = session.scalar(select(func.count()).select_from(CampaignChunk).where(
        CampaignChunk.campaign_id == campaign_id, CampaignChunk.step == step))
    if done >= step_row.chunks and step_row.status == "fanning_out":
        step_row.status = "done"
    if campaign.status == "canceled":
        return []
    return _make_messages(session, campaign, step_row, chunk, rate_card, hold_ttl_seconds, now)


def _claim_chunk(session: Session, campaign_id: str, step: int, chunk: int, now: datetime) -> bool:
    """Insert the chunk's row first: a twin waits on the unique key, then finds it and does nothing."""
    inserted = session.execute(
        insert_on_conflict(session, CampaignChunk).values(campaign_id=campaign_id, step=step, chunk=chunk,
                                                          messages=0, credits_held=0, created_at=now)
        .on_conflict_do_nothing(index_elements=["campaign_id", "step", "chunk"]).returning(CampaignChunk.id)
    ).scalar()
    return inserted is not None


def _make_messages(session: Session, campaign: Campaign, step_row: CampaignStep, chunk: int, rate_card: RateCard,
                   hold_ttl_seconds: int, now: datetime) -> list[str]:
    first = chunk * CHUNK_SIZE
    recipients = list(session.connection().execute(  # Core: the ORM's row machinery costs more than the read
        select(CampaignRecipient.id, CampaignRecipient.to, CampaignRecipient.fields)
        .where(CampaignRecipient.campaign_id == campaign.id, CampaignRecipient.skip_reason.is_(None),
               CampaignRecipient.position >= first, CampaignRecipient.position < first + CHUNK_SIZE)
        .order_by(CampaignRecipient.position)))
    template = compile_template(step_row.body, field=f"step {step_row.step}")
    sender_type = sender_type_of(session, campaign.from_, account_id=campaign.account_id)
    pricer = Pricer(rate_card, sender_type)
    window = window_of(campaign)
    sources = opt_out_sources(session, campaign.account_id, {r.to for r in recipients})
    account_zone = session.scalar(select(Account.timezone).where(Account.id == campaign.account_id))
    skips: dict[str, list[int]] = {}
    allowed_by_prefix: dict[str, datetime] = {}  # the chunk shares `now` and the window: the prefix decides
    numbers = NumberCheck()
    rows: list[dict] = []
    for recipient in recipients:
        country = numbers.country(recipient.to)
        reason = ("invalid_number" if country is None else
                  "unsupported_country" if not rate_card.prices_country(country) else
                  skip_reason_for(sources[recipient.to]) if recipient.to in sources else None)
        if reason:
            skips.setdefault(reason, []).append(recipient.id)
            continue
        try:
            body = render_body(template, {**recipient.fields, "to": recipient.to}, recipient=recipient.to)
        except ValidationFailed:  # checked at creation; a body that still fails is not sent
            skips.setdefault("invalid_number", []).append(recipient.id)
            continue
        priced = pricer.price(body, recipient.to, country)
        prefix = recipient.to[:_ZONE_PREFIX]
        allowed = allowed_by_prefix.get(prefix)
        if allowed is None:
            allowed = allowed_by_prefix[prefix] = next_allowed(
                now, zones(time_zones_of(recipient.to), account_zone), window)
        paused = campaign.status == "paused"
        rows.append({  # keyed by column name, for copy_rows
            "id": new_id("msg"), "account_id": campaign.account_id, "user_id": campaign.user_id,
            "campaign_id": campaign.id, "direction": "outbound", "to": recipient.to, "from": campaign.from_,
            "body": body, "media_urls": None,
            "status": "scheduled" if paused or allowed > now else "accepted", "segments": priced.segments,
            "encoding": priced.encoding, "credits_estimated": priced.credits, "credits_charged": None,
            "hold_id": None, "error_message": PAUSED if paused else None,
            "send_at": None if paused or allowed <= now else allowed, "attempts": 0, "created_at": now,
            "updated_at": now,
        })
    for reason, recipient_ids in skips.items():
        session.execute(update(CampaignRecipient).where(CampaignRecipient.id.in_(recipient_ids))
                        .values(skip_reason=reason).execution_options(synchronize_session=False))
    _insert_chunk(session, campaign, step_row.step, chunk, rows, hold_ttl_seconds, now)
    return [row["id"] for row in rows if row["status"] == "accepted"]


def _insert_chunk(session: Session, campaign: Campaign, step: int, chunk: int, rows: list[dict],
                  hold_ttl_seconds: int, now: datetime) -> None:
    """The chunk's messages with one reservation (a hold per message, so each settles on its own): holds and
    messages are inserted before the account row is locked, by the reservation's last statement. Parks the
    chunk if it does not fit, or cancels it when the account was canceled (this chunk read its campaign
    before the cancel committed)."""
    account = session.get(Account, campaign.account_id)
    reason = blocked_reason(account) if rows else None
    if rows and reason is None:
        requests = [book.HoldRequest(
            idempotency_key=f"campaign:{campaign.id}:message:{row['id']}:hold", amount=row["credits_estimated"],
            reference=row["id"],
            expires_at=(row["send_at"] or now) + timedelta(seconds=hold_ttl_seconds)) for row in rows]

        def insert_held(holds: list[book.HoldView]) -> None:
            for row, hold in zip(rows, holds):
                row["hold_id"] = hold.id
            _insert_messages(session, campaign.id, step, chunk, rows, held=sum(h.amount for h in holds))

        try:
            book.reserve_many(session, campaign.account_id, requests, now=now, alongside=insert_held,
                              user_id=campaign.user_id, fresh_keys=True)  # keyed by the message ids made above
            return
        except (InsufficientCredits, AccountLocked) as error:
            session.refresh(account)  # canceled since this chunk read it?
            reason = blocked_reason(account) if account.status == "canceled" else (
                f"Not enough credits for the campaign's next chunk: {error}")
    for row in rows:  # no hold: the one a refused reservation gave each was rolled back
        row.update(status="canceled" if account.status == "canceled" else "parked", error_message=reason[:500],
                   hold_id=None)
    _insert_messages(session, campaign.id, step, chunk, rows, held=0)


def _insert_messages(session: Session, campaign_id: str, step: int, chunk: int, rows: list[dict], *,
                     held: int) -> None:
    """The messages in one COPY (see shared.db.copy_rows), and the chunk's counts."""
    copy_rows(session, Message.__table__, rows)
    session.execute(update(CampaignChunk).where(CampaignChunk.campaign_id == campaign_id, CampaignChunk.step == step,
                                                CampaignChunk.chunk == chunk)
                    .values(messages=len(rows), credits_held=held))


class NumberCheck:
    """libphonenumber's validity and country of E.164 numbers, fast for North America.

    A NANP number ('+1' and ten digits) is built without parsing, and its region, which its area code
    decides, is looked up once per area code; every number is still checked against its region's patterns.
    """

    def __init__(self):
        self._nanp_regions: dict[str, str | None] = {}

    def country(self, number: str) -> str | None:
        """The number's country when it is a valid number, else None."""
        if len(number) == 12 and number.startswith("+1") and number[2:].isdigit():
            parsed = phonenumbers.PhoneNumber(country_code=1, national_number=int(number[2:]))
            area = number[:5]
            if area not in self._nanp_regions:
                self._nanp_regions[area] = phonenumbers.region_code_for_number(parsed)
            region = self._nanp_regions[area]
        else:
            try:
                parsed = phonenumbers.parse(number, None)
            except phonenumbers.NumberParseException:
                return None
            region = phonenumbers.region_code_for_number(parsed)
        return region if region and phonenumbers.is_valid_number_for_region(parsed, region) else None
