"""The aiohttp application keys shared by the stand-in's modules."""

from aiohttp import web

from .config import SimulatorConfig
from .store import Store

config_key = web.AppKey("config", SimulatorConfig)
store_key = web.AppKey("store", Store)
