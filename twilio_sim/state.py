"""Typed keys for what the application holds (aiohttp ``AppKey``s)."""

import random

from aiohttp import web

from .config import SimulatorConfig
from .status_reporter import StatusReporter
from .store import MessageStore

config_key = web.AppKey("config", SimulatorConfig)
store_key = web.AppKey("store", MessageStore)
rng_key = web.AppKey("rng", random.Random)
reporter_key = web.AppKey("reporter", StatusReporter)
