"""Gauges of the whole deployment, read from the database and Redis when Prometheus scrapes: the same from any
process, so the web processes and the schedulers serve them (scrape one of each kind, or all: they agree).

Each scrape is a handful of counts over indexed columns (message status, delivery status, the month-end runs) and
a scan of pending holds; queue depths are one LLEN per dramatiq queue.
"""

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from shared.db import Database
from shared.ledger.expiry import utc
from shared.messaging.statuses import FINAL_STATUSES
from shared.models import Account, BillingRun, Hold, Message, WebhookDelivery, WebhookEvent

RECENT_OUTCOMES = timedelta(hours=1)  # the window of creditq_messages_final_recent
DRAMATIQ_NAMESPACE = "dramatiq"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class OperationsCollector(Collector):
    """Queue depth, holds outstanding, settlement lag, parked messages, recent final outcomes by Twilio error code,
    month-end progress and the webhook delivery backlog."""

    def __init__(self, database: Database, redis_client, *, now: Callable[[], datetime] = _utc_now):
        self.database = database
        self.redis = redis_client
        self.now = now
        self._reading = threading.Lock()
        self._reads_begun = 0
        self._last_read: list[GaugeMetricFamily] | None = None  # None: the last read failed, or none was made

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Scrapes that arrive while one is reading (a slow database, a scraper that retries after its timeout)
        take that read's answer when it began after they asked: one read at a time on the process's few
        connections, instead of a queue of them that a busy hour lengthens faster than it drains."""
        asked = self._reads_begun
        with self._reading:
            if self._reads_begun == asked or self._last_read is None:  # none began since it asked, or it failed
                self._reads_begun += 1
                self._last_read = None  # stays so if the read raises: a failure is never handed on
                self._last_read = [*self._queues(), *self._database(self.now())]
            families = self._last_read
        yield from families

    def _queues(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("creditq_queue_depth", "Jobs waiting in each dramatiq queue (.DQ: delayed)",
                                  labels=["queue"])
        dead = GaugeMetricFamily("creditq_queue_dead_letters", "Jobs dramatiq gave up on, per queue", labels=["queue"])
        up = GaugeMetricFamily("creditq_redis_up", "1 when Redis answered this scrape; 0: no queue gauges this time")
        prefix = f"{DRAMATIQ_NAMESPACE}:"
        try:  # Redis away is when the database's gauges matter most: they are still read
            names = sorted({key.decode()[len(prefix):-len(".msgs")]
                            for key in self.redis.scan_iter(match=f"{prefix}*.msgs", count=1000)})
            queues = [name for name in names if not name.endswith(".XQ")]
            pipeline = self.redis.pipeline(transaction=False)
            for name in queues:
                pipeline.llen(prefix + name)
                pipeline.zcard(f"{prefix}{name}.XQ")
            counts = pipeline.execute()
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        for position, name in enumerate(queues):
            depth.add_metric([name], counts[2 * position])
            dead.add_metric([name], counts[2 * position + 1])
        up.add_metric([], 1)
        yield up
        yield depth
        yield dead

    def _database(self, now: datetime) -> Iterator[GaugeMetricFamily]:
        with self.database.read_only() as session:
            holds = session.execute(select(func.count(), func.coalesce(func.sum(Hold.amount), 0))
                                    .where(Hold.status == "pending")).one()
            oldest_unsettled = session.scalar(
                select(func.min(Message.updated_at)).join(Hold, Hold.id == Message.hold_id)
                .where(Message.status.in_(FINAL_STATUSES), Hold.status == "pending"))
            parked = session.scalar(select(func.count()).where(Message.status == "parked"))
            outcomes = session.execute(
                select(Message.status, Message.error_code, func.count())
                .where(Message.status.in_(FINAL_STATUSES), Message.updated_at >= now - RECENT_OUTCOMES)
                .group_by(Message.status, Message.error_code)).all()
            accounts = session.scalar(select(func.count()).select_from(Account))
            period = session.scalar(select(func.max(BillingRun.period)).where(BillingRun.step == "close"))
            closed = session.scalar(select(func.count()).where(BillingRun.step == "close",
                                                               BillingRun.period == period)) if period else 0
            bills = session.scalar(select(func.count()).where(BillingRun.step == "bill",
                                                              BillingRun.status == "pending"))
            undispatched = session.scalar(select(func.count()).where(WebhookEvent.dispatched_at.is_(None)))
            deliveries = session.execute(select(func.count(), func.min(WebhookDelivery.created_at))
                                         .where(WebhookDelivery.status == "pending")).one()
        yield GaugeMetricFamily("creditq_holds_outstanding", "Pending holds", value=holds[0])
        yield GaugeMetricFamily("creditq_holds_outstanding_millicredits", "Credits held by pending holds",
                                value=holds[1])
        yield GaugeMetricFamily("creditq_settlement_lag_seconds",
                                "Age of the oldest final message whose hold is not settled yet (0: none)",
                                value=_age(now, oldest_unsettled))
        yield GaugeMetricFamily("creditq_parked_messages", "Messages parked (locked account, sender blocked)",
                                value=parked)
        recent = GaugeMetricFamily("creditq_messages_final_recent",
                                   "Messages that reached a final status in the last hour, by Twilio error code",
                                   labels=["status", "error_code"])
        for status, error_code, count in outcomes:
            recent.add_metric([status, "" if error_code is None else str(error_code)], count)
        yield recent
        yield GaugeMetricFamily("creditq_accounts", "Accounts", value=accounts)
        progress = GaugeMetricFamily("creditq_month_end_closed_accounts",
                                     "Accounts closed for the latest month-end period", labels=["period"])
        if period:
            progress.add_metric([period], closed)
        yield progress
        yield GaugeMetricFamily("creditq_month_end_bills_pending", "Month-end bills not collected yet", value=bills)
        yield GaugeMetricFamily("creditq_webhook_events_undispatched", "Events whose deliveries are not made yet",
                                value=undispatched)
        yield GaugeMetricFamily("creditq_webhook_deliveries_pending", "Webhook deliveries not succeeded or failed yet",
                                value=deliveries[0])
        yield GaugeMetricFamily("creditq_webhook_delivery_backlog_seconds",
                                "Age of the oldest pending webhook delivery (0: none)", value=_age(now, deliveries[1]))


def _age(now: datetime, since: datetime | None) -> float:
    return 0.0 if since is None else max((now - utc(since)).total_seconds(), 0.0)
