"""The Twilio simulator and a status-callback receiver, served in-process for sync tests.

Both run on one event loop in a background thread, on free ports, so tests can drive them
with the official (synchronous) twilio client. Import the fixtures into a test module:
``from tests.twilio_sim_fixtures import callback_receiver, simulator  # noqa: F401``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from aiohttp import web
from twilio.rest import Client

from twilio_sim import SimulatorConfig, init_app
from twilio_sim.client import simulated_client


class BackgroundLoop:
    """An asyncio loop in a daemon thread, serving aiohttp apps on free local ports."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._runners: list[web.AppRunner] = []

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def serve(self, app: web.Application) -> str:
        """Start ``app`` on 127.0.0.1 and a free port; returns its base URL."""

        async def start() -> str:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self._runners.append(runner)
            host, port = runner.addresses[0][:2]
            return f"http://{host}:{port}"

        return self.call(start())

    def close(self) -> None:
        for runner in reversed(self._runners):
            self.call(runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@dataclass
class SimulatorHandle:
    """A running simulator: its URL, credentials and the ``/_sim`` control API."""

    url: str
    account_sid: str
    auth_token: str

    def client(self, auth_token: str | None = None) -> Client:
        return simulated_client(self.url, self.account_sid, auth_token or self.auth_token)

    def configure(self, **changes: Any) -> dict[str, Any]:
        response = requests.post(f"{self.url}/_sim/config", json=changes, timeout=10)
        response.raise_for_status()
        return response.json()

    def add_account(self, **fields: str) -> dict[str, Any]:
        """A new subaccount (its sid and auth_token among the fields), as ``POST /_sim/accounts`` answers it."""
        response = requests.post(f"{self.url}/_sim/accounts", json=fields, timeout=10)
        response.raise_for_status()
        return response.json()

    def sent(self) -> dict[str, Any]:
        return requests.get(f"{self.url}/_sim/messages", timeout=10).json()

    def faults(self) -> dict[str, int]:
        return requests.get(f"{self.url}/_sim/faults", timeout=10).json()

    def reset(self) -> None:
        requests.post(f"{self.url}/_sim/reset", timeout=10).raise_for_status()


@dataclass(frozen=True)
class ReceivedCallback:
    url: str
    params: list[tuple[str, str]]
    signature: str | None

    @property
    def form(self) -> dict[str, str]:
        return dict(self.params)


class CallbackReceiver:
    """Collects status callbacks; can answer 503 to the next few to play a receiver that is down."""

    def __init__(self) -> None:
        self.received: list[ReceivedCallback] = []
        self.failures_to_serve = 0
        self.attempts: Counter[str] = Counter()
        """POSTs received per MessageSid, including the ones answered 503."""
        self._lock = threading.Lock()
        self.app = web.Application()
        self.app.router.add_post("/status", self._receive)
        self.url = ""

    @property
    def status_url(self) -> str:
        return f"{self.url}/status"

    async def _receive(self, request: web.Request) -> web.Response:
        form = await request.post()
        with self._lock:
            self.attempts[str(form["MessageSid"])] += 1
            if self.failures_to_serve > 0:
                self.failures_to_serve -= 1
                return web.Response(status=503)
            self.received.append(
                ReceivedCallback(
                    str(request.url),
                    [(name, str(value)) for name, value in form.items()],
                    request.headers.get("X-Twilio-Signature"),
                )
            )
        return web.Response(status=204)

    def for_message(self, sid: str) -> list[ReceivedCallback]:
        with self._lock:
            return [callback for callback in self.received if callback.form["MessageSid"] == sid]

    def wait_for(
        self, sid: str, until: Callable[[list[ReceivedCallback]], bool], timeout: float = 5.0
    ) -> list[ReceivedCallback]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            callbacks = self.for_message(sid)
            if until(callbacks):
                return callbacks
            time.sleep(0.01)
        raise AssertionError(f"callbacks for {sid} never matched; got {self.for_message(sid)}")

    def clear(self) -> None:
        with self._lock:
            self.received.clear()
            self.failures_to_serve = 0
            self.attempts.clear()


@pytest.fixture(scope="module")
def background_loop() -> Iterator[BackgroundLoop]:
    background = BackgroundLoop()
    yield background
    background.close()


@pytest.fixture(scope="module")
def _simulator_server(background_loop: BackgroundLoop) -> SimulatorHandle:
    config = SimulatorConfig(callback_delay_ms=10, callback_retry_delay_ms=20, seed=1234)
    url = background_loop.serve(init_app(config))
    return SimulatorHandle(url, config.account_sid, config.auth_token)


@pytest.fixture
def simulator(_simulator_server: SimulatorHandle) -> Iterator[SimulatorHandle]:
    """The shared simulator, reset to its start-up configuration around each test."""
    _simulator_server.reset()
    yield _simulator_server
    _simulator_server.reset()


@pytest.fixture(scope="module")
def _callback_receiver_server(background_loop: BackgroundLoop) -> CallbackReceiver:
    receiver = CallbackReceiver()
    receiver.url = background_loop.serve(receiver.app)
    return receiver


@pytest.fixture
def callback_receiver(_callback_receiver_server: CallbackReceiver) -> CallbackReceiver:
    _callback_receiver_server.clear()
    return _callback_receiver_server
