"""Liveness, Prometheus metrics and the OpenAPI document."""

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from ..appkeys import DATABASE, OPENAPI_DOCUMENT
from ..bodies import json_response
from ..policy import PUBLIC, action

routes = web.RouteTableDef()


@routes.get("/healthz")
@action(PUBLIC)
async def healthz(request: web.Request) -> web.Response:
    database = request.app[DATABASE]

    def ping() -> None:
        with database.read_only() as session:  # never waits for a writer
            session.execute(text("SELECT 1"))

    await asyncio.to_thread(ping)
    return json_response({"status": "ok"})


@routes.get("/metrics")
@action(PUBLIC)
async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


@routes.get("/v1/openapi.json")
@action(PUBLIC)
async def openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI_DOCUMENT])


OPENAPI_PATHS = {
    "/healthz": {"get": {"operationId": "getHealth", "summary": "Liveness: answers 200 when the database is reachable",
                         "description": "A read that never waits for a writer, so a long import does not fail it.",
                         "security": [], "responses": {"200": {"description": "ok", "content": {"application/json": {
                             "schema": {"type": "object", "properties": {"status": {"const": "ok"}}}}}}}}},
    "/metrics": {"get": {"operationId": "getMetrics", "summary": "Prometheus metrics", "security": [],
                         "responses": {"200": {"description": "text exposition format",
                                               "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    "/v1/openapi.json": {"get": {"operationId": "getOpenApiDocument", "summary": "This document", "security": [],
                                 "responses": {"200": {"description": "OpenAPI 3.1", "content": {
                                     "application/json": {"schema": {"type": "object"}}}}}}},
}
