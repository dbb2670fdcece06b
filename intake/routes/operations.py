"""Liveness, readiness, Prometheus metrics (operator key) and the OpenAPI document."""

import asyncio
import os
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from sqlalchemy import text

from shared.broker import redis_beside
from shared.operations.metrics import OperationsCollector

from ..appkeys import DATABASE, DEPLOYMENT_METRICS, ENQUEUER, OPENAPI_DOCUMENT, REDIS
from ..bodies import json_response
from ..errors import problem_response
from ..openapi import problem
from ..policy import OPERATE, PUBLIC, action

routes = web.RouteTableDef()
CHECK_TIMEOUT_SECONDS = 5  # a dependency that has not answered by then counts as away


@routes.get("/livez")
@action(PUBLIC)
async def livez(request: web.Request) -> web.Response:
    """The process serves: restart it only when this fails, never because PostgreSQL or Redis is away."""
    return json_response({"status": "ok"})


@routes.get("/healthz")
@action(PUBLIC)
async def healthz(request: web.Request) -> web.Response:
    """Ready to serve: the database and Redis both answer; else 503 naming which is away, so a load balancer
    sends the requests elsewhere until they are back."""
    database = request.app[DATABASE]

    def ping_database() -> None:
        with database.read_only() as session:  # never waits for a writer
            session.execute(text("SELECT 1"))

    checks = {"database": asyncio.to_thread(ping_database), "redis": request.app[REDIS].ping()}
    outcomes = await asyncio.gather(*(asyncio.wait_for(check, CHECK_TIMEOUT_SECONDS) for check in checks.values()),
                                    return_exceptions=True)
    away = [name for name, outcome in zip(checks, outcomes) if isinstance(outcome, BaseException)]
    if away:
        return problem_response(503, "Service Unavailable", f"Not ready: {' and '.join(away)} not answering.",
                                headers={"Retry-After": "5"}, away=away)
    return json_response({"status": "ok", "database": "ok", "redis": "ok"})


@routes.get("/metrics")
@action(OPERATE)
async def metrics(request: web.Request) -> web.Response:
    """The web's metrics (summed over its processes when it runs several: `creditq web --processes`), and the
    deployment's gauges read from the database and Redis."""
    def render() -> bytes:
        return generate_latest(_web_registry()) + generate_latest(request.app[DEPLOYMENT_METRICS])

    response = web.Response(body=await asyncio.to_thread(render))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def deployment_metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """The deployment's gauges, one collector for the process: scrapes that overlap share its reads. Their Redis is
    the broker's, or beside RabbitMQ the one REDIS_URL names (whose queues RabbitMQ keeps: no queue gauges then)."""
    broker = app[ENQUEUER].broker
    client = redis_beside(broker)
    registry = app[DEPLOYMENT_METRICS] = CollectorRegistry(auto_describe=False)
    registry.register(OperationsCollector(app[DATABASE], client))
    yield
    if client is not getattr(broker, "client", None):  # made here, not the broker's own
        client.close()


def _web_registry() -> CollectorRegistry:
    """This process's registry, or with several processes the sum of the files each writes its metrics to."""
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir is None:
        return REGISTRY
    summed = CollectorRegistry()
    multiprocess.MultiProcessCollector(summed, metrics_dir)
    return summed


@routes.get("/v1/openapi.json")
@action(PUBLIC)
async def openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI_DOCUMENT])


OPENAPI_PATHS = {
    "/livez": {"get": {"operationId": "getLiveness", "summary": "Liveness: answers 200 while the process serves",
                       "description": "Checks nothing outside the process: a restart would not bring back a database "
                                      "or Redis that is away.",
                       "security": [], "responses": {"200": {"description": "ok", "content": {"application/json": {
                           "schema": {"type": "object", "properties": {"status": {"const": "ok"}}}}}}}}},
    "/healthz": {"get": {"operationId": "getHealth",
                         "summary": "Readiness: 200 when the database and Redis answer, else 503",
                         "description": "A database read that never waits for a writer (a long import does not fail "
                                        "it) and a Redis PING, each given 5 s.",
                         "security": [], "responses": {
                             "200": {"description": "ready", "content": {"application/json": {"schema": {
                                 "type": "object", "properties": {"status": {"const": "ok"},
                                                                  "database": {"const": "ok"},
                                                                  "redis": {"const": "ok"}}}}}},
                             "503": problem(503, "the database or Redis is away (`away` names which)")}}},
    "/metrics": {"get": {"operationId": "getMetrics", "summary": "Prometheus metrics (the operator key)",
                         "description": "This web process's request counts and latencies, and the deployment's "
                                        "gauges: queue depth, holds outstanding, settlement lag, parked messages, "
                                        "final outcomes by Twilio error code, month-end progress, webhook backlog.",
                         "responses": {"200": {"description": "text exposition format",
                                               "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    "/v1/openapi.json": {"get": {"operationId": "getOpenApiDocument", "summary": "This document", "security": [],
                                 "responses": {"200": {"description": "OpenAPI 3.1", "content": {
                                     "application/json": {"schema": {"type": "object"}}}}}}},
}
