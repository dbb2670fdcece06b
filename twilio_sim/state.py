"""Typed keys for what the application holds (aiohttp ``AppKey``s)."""

import random
from collections import Counter

from aiohttp import web

from .accounts import AccountRegistry
from .config import SimulatorConfig
from .status_reporter import StatusReporter
from .store import MessageStore
from .voice import CallRunner, CallStore

config_key = web.AppKey("config", SimulatorConfig)
accounts_key = web.AppKey("accounts", AccountRegistry)
store_key = web.AppKey("store", MessageStore)
rng_key = web.AppKey("rng", random.Random)
reporter_key = web.AppKey("reporter", StatusReporter)
faults_key = web.AppKey("faults", Counter)  # injected errors served so far, by kind ("429", "5xx")
call_store_key = web.AppKey("call_store", CallStore)
call_runner_key = web.AppKey("call_runner", CallRunner)
