"""Moves accepted messages through their planned statuses and POSTs Twilio's status callbacks.

Nothing here runs inside the create request: ``track`` only arms a timer. Callbacks go out
from a fixed pool of workers sharing one ClientSession, one message's callbacks one after
another (so "in order" really is in order), with bounded, backed-off retries while the
receiver is down, as Twilio does. Each callback is signed with the auth token of the account
that sent the message, as Twilio signs them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from urllib.parse import urlencode

import aiohttp

from .accounts import AccountRegistry
from .config import SimulatorConfig
from .message import API_VERSION, Message
from .signature import twilio_signature

log = logging.getLogger(__name__)
FORM = "application/x-www-form-urlencoded"


@dataclass(slots=True)
class _Report:
    """The callbacks still owed for one message."""

    message: Message
    statuses: list[str]
    generation: int
    index: int = 0
    attempt: int = 0

    @property
    def status(self) -> str:
        return self.statuses[self.index]


class StatusReporter:
    def __init__(
        self,
        config: SimulatorConfig,
        accounts: AccountRegistry,
        rng: random.Random,
        session: aiohttp.ClientSession,
    ) -> None:
        self._config = config
        self._accounts = accounts
        self._rng = rng
        self._session = session
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[_Report] = asyncio.Queue()
        self._generation = 0
        self._workers = [
            asyncio.create_task(self._work(), name=f"twilio-sim-callbacks-{n}")
            for n in range(config.callback_concurrency)
        ]

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    def track(self, message: Message) -> None:
        """Start the message's life after ``queued``, applying the callback fault knobs."""
        statuses = list(message.plan.statuses)
        if len(statuses) > 1 and self._rng.random() < self._config.out_of_order_rate:
            statuses.reverse()
        if message.status_callback and self._config.duplicate_callback_rate:
            rate = self._config.duplicate_callback_rate
            statuses = [s for s in statuses for _ in range(2 if self._rng.random() < rate else 1)]
        self._arm(_Report(message, statuses, self._generation))

    def forget_all(self) -> None:
        """Drop every pending status change and callback (the simulator was reset)."""
        self._generation += 1
        while not self._queue.empty():
            self._queue.get_nowait()

    def _arm(self, report: _Report) -> None:
        self._loop.call_later(self._config.callback_delay_ms / 1000, self._due, report)

    def _due(self, report: _Report) -> None:
        if report.generation != self._generation:
            return
        report.message.advance(report.status)
        if report.message.status_callback:
            self._queue.put_nowait(report)
        else:
            self._next(report)

    def _next(self, report: _Report) -> None:
        report.index += 1
        report.attempt = 0
        if report.index < len(report.statuses):
            self._arm(report)

    def _requeue(self, report: _Report) -> None:
        if report.generation == self._generation:
            self._queue.put_nowait(report)

    async def _work(self) -> None:
        while True:
            report = await self._queue.get()
            if report.generation != self._generation:
                continue
            try:
                done = await self._send(report)
            except Exception:  # a bad URL must not cost the pool a worker
                log.exception("status callback for %s crashed", report.message.sid)
                done = True
            if done or report.attempt >= self._config.callback_retries:
                self._next(report)
            else:
                report.attempt += 1
                backoff_s = self._config.callback_retry_delay_ms / 1000 * 2 ** (report.attempt - 1)
                self._loop.call_later(backoff_s, self._requeue, report)

    async def _send(self, report: _Report) -> bool:
        """POST one callback; False when it should be retried (receiver down, 5xx or 429)."""
        url = report.message.status_callback
        assert url is not None
        sender = self._accounts.get(report.message.account_sid)
        if sender is None:  # the subaccount was forgotten (a reset): nobody could sign for it
            return True
        params = callback_params(report.message, report.status)
        headers = {"X-Twilio-Signature": twilio_signature(sender.auth_token, url, params), "Content-Type": FORM}
        timeout = aiohttp.ClientTimeout(total=self._config.callback_timeout_s)
        try:
            # the body encoded here, as aiohttp's FormData would: that class cost a fifth of the simulator's CPU
            async with self._session.post(url, data=urlencode(params).encode(), headers=headers,
                                          timeout=timeout) as response:
                retry = response.status >= 500 or response.status == 429
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            log.debug("status callback to %s failed: %r", url, error)
            retry = True
        if retry and report.attempt >= self._config.callback_retries:
            log.warning("giving up on %s callback for %s", report.status, report.message.sid)
        return not retry


def callback_params(message: Message, status: str) -> dict[str, str]:
    """The form fields Twilio POSTs to a StatusCallback URL."""
    params = {
        "AccountSid": message.account_sid,
        "ApiVersion": API_VERSION,
        "MessageSid": message.sid,
        "SmsSid": message.sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "To": message.to,
        "NumSegments": str(message.num_segments),
    }
    if message.from_ is not None:
        params["From"] = message.from_
    if message.messaging_service_sid is not None:
        params["MessagingServiceSid"] = message.messaging_service_sid
    if status in ("undelivered", "failed"):
        params["ErrorCode"] = str(message.plan.error_code)
    return params
