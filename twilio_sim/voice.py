"""Plays each call's life on the simulated clock and POSTs what Twilio would: status callbacks, and for a call to
one of the account's numbers its voice webhook, the <Dial> action, recording and transcription callbacks.

One asyncio task per call, so a call's callbacks go out in its own order (reversed or doubled by the fault
knobs). Each callback is signed with the auth token of the account that owns the call, and retried, backed off,
while the receiver is down or answers 5xx / 429, as Twilio does. Simulated seconds become real time through
``call_minute_ms``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp

from .accounts import AccountRegistry
from .call import Call, CallPlan, plan_call
from .config import SimulatorConfig
from .message import API_VERSION, new_sid
from .signature import twilio_signature

log = logging.getLogger(__name__)

ALL_EVENTS = frozenset({"initiated", "ringing", "answered", "completed"})
_EVENT_OF_STATUS = {"initiated": "initiated", "ringing": "ringing", "in-progress": "answered"}


class CallStore:
    """Every call the simulator placed or received, by sid, in creation order."""

    def __init__(self) -> None:
        self._calls: dict[str, Call] = {}

    def add(self, call: Call) -> None:
        self._calls[call.sid] = call

    def get(self, sid: str) -> Call | None:
        return self._calls.get(sid)

    def newest_first(self, account_sid: str, *, to: str | None = None, from_: str | None = None,
                     status: str | None = None, parent_call_sid: str | None = None) -> list[Call]:
        return [call for call in reversed(self._calls.values())
                if call.account_sid == account_sid and (to is None or call.to == to)
                and (from_ is None or call.from_ == from_) and (status is None or call.status == status)
                and (parent_call_sid is None or call.parent_call_sid == parent_call_sid)]

    def clear(self) -> None:
        self._calls.clear()

    def __iter__(self) -> Iterator[Call]:
        return iter(self._calls.values())


@dataclass(frozen=True)
class InboundCall:
    """A caller dialing one of the account's numbers, as ``POST /_sim/calls/inbound`` describes it."""

    account_sid: str
    from_: str
    to: str
    url: str
    """The number's voice URL: where Twilio asks what to do with the call."""
    status_callback: str | None
    forwarded_outcome: str
    """What the phone a <Dial> rings does: completed (picks up), busy, no-answer or failed."""
    forwarded_seconds: int
    """How long the forwarded conversation lasts once picked up (before the Dial's timeLimit)."""
    voicemail_seconds: int
    """How long the caller speaks after the beep of a <Record> (0: hangs up without a message)."""


class CallRunner:
    def __init__(self, config: SimulatorConfig, accounts: AccountRegistry, rng: random.Random,
                 session: aiohttp.ClientSession, store: CallStore) -> None:
        self._config = config
        self._accounts = accounts
        self._rng = rng
        self._session = session
        self._store = store
        self._tasks: set[asyncio.Task] = set()

    def place(self, *, account_sid: str, to: str, from_: str, twiml: str | None, status_callback: str | None,
              events: frozenset[str], time_limit: int | None, machine_detection: bool) -> Call:
        """Create an outbound call and start its life; answered at once with its `queued` resource."""
        call = Call(sid=new_sid("CA"), account_sid=account_sid, to=to, from_=from_, direction="outbound-api",
                    plan=plan_call(self._config, self._rng, machine_detection=machine_detection), twiml=twiml,
                    status_callback=status_callback, callback_events=events, time_limit=time_limit,
                    price_per_minute=self._config.price_per_minute)
        self._store.add(call)
        self._start(self._outbound(call))
        return call

    def receive(self, inbound: InboundCall) -> Call:
        """Start an inbound call: the voice webhook is asked for its TwiML, which is then played."""
        call = Call(sid=new_sid("CA"), account_sid=inbound.account_sid, to=inbound.to, from_=inbound.from_,
                    direction="inbound", plan=CallPlan("completed", 0, None), twiml=None,
                    status_callback=inbound.status_callback, callback_events=frozenset({"completed"}),
                    time_limit=None, price_per_minute=self._config.price_per_minute, status="ringing")
        self._store.add(call)
        self._start(self._inbound(call, inbound))
        return call

    async def close(self) -> None:
        await self.forget_all()

    async def forget_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sleep(self, simulated_seconds: float) -> None:
        await asyncio.sleep(simulated_seconds * self._config.call_minute_ms / 60_000)

    # --- outbound -------------------------------------------------------------------------------------------

    async def _outbound(self, call: Call) -> None:
        try:
            await self._play_outbound(call)
        except Exception:  # one call's bad URL must not stop the others
            log.exception("call %s crashed", call.sid)

    async def _play_outbound(self, call: Call) -> None:
        """queued -> initiated -> ringing -> (in-progress ->) its outcome. With out-of-order delivery the
        call's callbacks are held to its end and sent last first (a `completed` before its `ringing`)."""
        reversed_order = self._rng.random() < self._config.out_of_order_rate
        owed: list[dict[str, str]] = []
        await asyncio.sleep(self._config.callback_delay_ms / 1000)
        for status in ("initiated", "ringing"):
            call.advance(status)
            owed += self._progress(call, status)
        await self._flush(call, owed, hold=reversed_order)
        await self._sleep(self._config.ring_seconds)
        if call.plan.outcome == "completed":
            call.advance("in-progress")
            owed += self._progress(call, "in-progress")
            await self._flush(call, owed, hold=reversed_order)
            await self._sleep(call.talk_seconds)
        call.advance(call.plan.outcome)
        owed += self._progress(call, call.plan.outcome)
        await self._flush(call, owed[::-1] if reversed_order else owed, hold=False)

    def _progress(self, call: Call, status: str) -> list[dict[str, str]]:
        """The callback this status change owes, if the call asked for its event."""
        event = _EVENT_OF_STATUS.get(status, "completed")
        if event not in call.callback_events or not call.status_callback:
            return []
        params = call_params(call, status)
        if event == "completed":
            params["CallDuration"] = str(call.duration or 0)
            params["Duration"] = str(call.minutes)
        if call.answered_by is not None:
            params["AnsweredBy"] = call.answered_by
        params["CallbackSource"] = "call-progress-events"
        return [params]

    async def _flush(self, call: Call, owed: list[dict[str, str]], *, hold: bool) -> None:
        if hold:
            return
        for params in owed:
            for _ in range(2 if self._rng.random() < self._config.duplicate_callback_rate else 1):
                await self._post(call.account_sid, call.status_callback, params)
        owed.clear()

    # --- inbound --------------------------------------------------------------------------------------------

    async def _inbound(self, call: Call, inbound: InboundCall) -> None:
        try:
            await self._play_inbound(call, inbound)
        except Exception:
            log.exception("inbound call %s crashed", call.sid)

    async def _play_inbound(self, call: Call, inbound: InboundCall) -> None:
        twiml = await self._ask(call.account_sid, inbound.url, call_params(call, "ringing"))
        call.advance("in-progress")
        talked = 0
        verbs = list(_verbs(twiml))
        while verbs:
            verb = verbs.pop(0)
            if verb.tag == "Dial":
                talked, leg = await self._dial(call, inbound, verb)
                action = verb.get("action")
                if action:
                    params = {**call_params(call, "in-progress"), "DialCallSid": leg.sid,
                              "DialCallStatus": leg.status, "DialCallDuration": str(leg.duration or 0)}
                    verbs = list(_verbs(await self._ask(call.account_sid, action, params)))
            elif verb.tag == "Record":
                talked += await self._record(call, inbound, verb)
                verbs = []
            elif verb.tag == "Hangup":
                verbs = []
            else:  # Say, Play, Pause: a few seconds each
                await self._sleep(3)
                talked += 3
        call.plan = CallPlan("completed", talked, None)
        call.advance("completed")
        if call.status_callback:
            params = {**call_params(call, "completed"), "CallDuration": str(call.duration or 0),
                      "Duration": str(call.minutes)}
            await self._post(call.account_sid, call.status_callback, params)

    async def _dial(self, call: Call, inbound: InboundCall, verb: ElementTree.Element) -> tuple[int, Call]:
        """Ring the forwarded phone: the leg is a child call, cut at the Dial's timeLimit."""
        number = (verb.findtext("Number") or verb.text or "").strip()
        time_limit = int(verb.get("timeLimit", "14400"))
        leg = Call(sid=new_sid("CA"), account_sid=call.account_sid, to=number, from_=call.from_,
                   direction="outbound-dial", plan=CallPlan(inbound.forwarded_outcome, inbound.forwarded_seconds, None),
                   twiml=None, status_callback=None, callback_events=frozenset(), time_limit=time_limit,
                   price_per_minute=self._config.price_per_minute, parent_call_sid=call.sid)
        self._store.add(leg)
        leg.advance("ringing")
        await self._sleep(min(self._config.ring_seconds, int(verb.get("timeout", "30"))))
        if leg.plan.outcome == "completed" and time_limit > 0:
            leg.advance("in-progress")
            await self._sleep(leg.talk_seconds)
            leg.advance("completed")
        else:
            leg.advance("no-answer" if leg.plan.outcome == "completed" else leg.plan.outcome)
        return leg.duration or 0, leg

    async def _record(self, call: Call, inbound: InboundCall, verb: ElementTree.Element) -> int:
        seconds = min(inbound.voicemail_seconds, int(verb.get("maxLength", "3600")))
        await self._sleep(seconds)
        if seconds == 0:
            return 0
        recording_sid = new_sid("RE")
        recording_url = f"https://api.twilio.com/{API_VERSION}/Accounts/{call.account_sid}/Recordings/{recording_sid}"
        call.recordings.append({"sid": recording_sid, "url": recording_url, "duration": seconds,
                                "transcription": None})
        base = {"AccountSid": call.account_sid, "CallSid": call.sid, "RecordingSid": recording_sid,
                "RecordingUrl": recording_url}
        callbacks = []
        if verb.get("recordingStatusCallback"):
            callbacks.append((verb.get("recordingStatusCallback"), {
                **base, "RecordingStatus": "completed", "RecordingDuration": str(seconds), "RecordingChannels": "1",
                "RecordingSource": "RecordVerb"}))
        if verb.get("transcribe") == "true" and verb.get("transcribeCallback"):
            text = self._config.transcription_text
            call.recordings[-1]["transcription"] = text
            callbacks.append((verb.get("transcribeCallback"), {
                **base, "TranscriptionSid": new_sid("TR"), "TranscriptionText": text,
                "TranscriptionStatus": "completed", "TranscriptionType": "fast",
                "TranscriptionUrl": f"{recording_url}/Transcriptions", "From": call.from_, "To": call.to,
                "ApiVersion": API_VERSION}))
        if len(callbacks) > 1 and self._rng.random() < self._config.out_of_order_rate:
            callbacks.reverse()
        for url, params in callbacks:
            for _ in range(2 if self._rng.random() < self._config.duplicate_callback_rate else 1):
                await self._post(call.account_sid, url, params)
        return seconds

    # --- HTTP -----------------------------------------------------------------------------------------------

    async def _ask(self, account_sid: str, url: str, params: dict[str, str]) -> str:
        """POST a webhook whose answer is TwiML; an error or no answer plays as an empty document (hang up)."""
        response = await self._post(account_sid, url, params, want_body=True)
        return response or "<Response/>"

    async def _post(self, account_sid: str, url: str | None, params: dict[str, str], *,
                    want_body: bool = False) -> str | None:
        if not url:
            return None
        account = self._accounts.get(account_sid)
        if account is None:
            return None
        headers = {"X-Twilio-Signature": twilio_signature(account.auth_token, url, params)}
        timeout = aiohttp.ClientTimeout(total=self._config.callback_timeout_s)
        for attempt in range(self._config.callback_retries + 1):
            try:
                async with self._session.post(url, data=params, headers=headers, timeout=timeout) as response:
                    if response.status < 500 and response.status != 429:
                        return await response.text() if want_body and response.status == 200 else None
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                log.debug("call callback to %s failed: %r", url, error)
            await asyncio.sleep(self._config.callback_retry_delay_ms / 1000 * 2 ** attempt)
        log.warning("giving up on a call callback to %s", url)
        return None


def call_params(call: Call, status: str) -> dict[str, str]:
    """The form fields Twilio POSTs about a call (voice URL and status callbacks)."""
    return {"AccountSid": call.account_sid, "ApiVersion": API_VERSION, "CallSid": call.sid, "CallStatus": status,
            "Direction": call.direction, "From": call.from_, "To": call.to, "Called": call.to, "Caller": call.from_}


def _verbs(twiml: str) -> list[ElementTree.Element]:
    try:
        root = ElementTree.fromstring(twiml)
    except ElementTree.ParseError:
        return []
    return list(root) if root.tag == "Response" else []

