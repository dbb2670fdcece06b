"""Typed keys for what the application and each request carry."""

from aiohttp import web

from shared.config import Settings
from shared.db import Database

from .enqueue import Enqueuer
from .principal import Principal

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", Database)
PRINCIPAL = web.RequestKey("principal", Principal)
KEY_CACHE = web.AppKey("api_key_cache", dict)  # plain key -> account id, so auth is not a query per request
OPENAPI_DOCUMENT = web.AppKey("openapi_document", dict)
ENQUEUER = web.AppKey("enqueuer", Enqueuer)
