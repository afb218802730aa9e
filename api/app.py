"""The gateway: `uvicorn api.app:app`. Never imports torch.

Builds the services once at start-up and maps every error to PICPIK's envelope in one place.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from api import metrics
from api.actions import ACTION_PATH, Services
from api.api_router import ActionEndpoint, router
from api.errors import ApiError, InternalError, ServiceUnavailable
from api.generate.celery_message import TaskMessages
from api.generate.submission import Route, Submitter, celery_publisher
from api.openapi import action_operation, component_schemas
from api.protocol_base import Envelope
from models_registry.catalog import load_catalog
from openpik.affinity import AffinityRouter, group_queue_only
from openpik.keys import KeyStore, key_store_from_settings
from openpik.logs import configure_json_logging
from openpik.redis_connection import Role, async_redis_client, redis_client
from openpik.results import ResultSweeper, result_store_from_settings
from openpik.settings import Settings, get_settings
from openpik.task_records import TaskIntake, TaskStore, TaskWatch

log = logging.getLogger("openpik.api")

YOUNG_COLLECTION_THRESHOLD = 10_000


def build_services(settings: Settings, route: Route = group_queue_only) -> tuple[Services, KeyStore]:
    client = redis_client(settings, Role.GATEWAY)
    loop_client = async_redis_client(settings, Role.GATEWAY)
    tasks = TaskStore(client, settings.result_ttl_s)
    intake = TaskIntake(
        loop_client, settings.result_ttl_s, settings.redis_wait_replicas, settings.redis_wait_timeout_ms
    )
    keys = key_store_from_settings(settings, client)
    publisher = celery_publisher(settings)
    services = Services(
        settings=settings,
        catalog=load_catalog(settings.catalog),
        tasks=tasks,
        results=result_store_from_settings(settings),
        submitter=Submitter(
            intake,
            TaskMessages(publisher),
            settings.max_queue_depth,
            settings.max_queued_per_key,
            settings.idempotency_window_s,
            keys.callback_url_prefixes,
            route=route,
        ),
        loop_redis=loop_client,
        publisher=publisher,
    )
    return services, keys


def affinity_router(settings: Settings) -> AffinityRouter | None:
    """Model-affinity routing's view of the workers, reading their heartbeats in a thread; None when off."""
    if not settings.affinity_routing:
        return None
    return AffinityRouter(
        redis_client(settings, Role.GATEWAY),
        settings.affinity_depth_limit,
        settings.affinity_heartbeat_s,
        settings.affinity_heartbeat_ttl_s,
        forget_after_s=2 * settings.visibility_timeout_s,
    ).start()


def create_app(settings: Settings | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_json_logging("openpik")  # the gateway's own loggers and the shared ones (results, translation)
        affinity = affinity_router(settings or get_settings())
        app.state.services, app.state.keys = build_services(
            settings or get_settings(), affinity.route if affinity else group_queue_only
        )
        services = app.state.services
        # The event streams (api/events) read on this loop, through its asyncio client.
        app.state.task_watch = TaskWatch(services.loop_redis)
        sweeper = ResultSweeper(
            services.results, services.settings.result_ttl_s, services.settings.result_sweep_interval_s
        ).start()
        # What start-up built lives as long as the process: out of the collector's sight, so a
        # full collection walks only what requests allocate (a long pause in the p99 otherwise).
        gc.freeze()
        # A request allocates and frees a few hundred containers at once: at the default threshold
        # (700) that set off a young collection every dozen requests, 0.2 ms each (2% of the CPU).
        gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])
        # The JSON lines carry no caller, thread or process: logging need not look them up for
        # each request (the knobs of the "Optimization" section of the logging documentation).
        logging._srcfile = None
        logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
        yield
        sweeper.stop()
        if affinity:
            affinity.stop()
        await services.loop_redis.aclose()

    app = FastAPI(
        title="OpenPik",
        summary="PICPIK-compatible image generation on your own GPUs",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.include_router(router)
    app.add_middleware(ActionEndpoint, on_error=_error_envelope)
    app.add_middleware(metrics.RequestObserver)  # added last: outside ActionEndpoint, it sees every answer
    for error_type in (ApiError, redis.RedisError, Exception):
        app.add_exception_handler(error_type, _error_envelope)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]  # FastAPI's documented way
    return app


async def _error_envelope(request: Request, exc: Exception) -> JSONResponse:
    """Every error a request ends with, as PICPIK's envelope with the RetCode of its type."""
    error = _api_error(exc)
    echo = getattr(request.state, "echo", {})
    body = Envelope(RetCode=error.retcode, Message=error.message, **echo).wire()
    return JSONResponse(body, status_code=error.http_status)


def _api_error(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, redis.RedisError):
        return ServiceUnavailable(f"the task store is unreachable ({type(exc).__name__}); retry later")
    log.error("internal error", exc_info=exc)
    return InternalError("internal error; retry later")


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        schema["paths"] = {ACTION_PATH: {"post": action_operation()}} | schema["paths"]
        schema.setdefault("components", {}).setdefault("schemas", {}).update(component_schemas())
        app.openapi_schema = schema
    return app.openapi_schema


app = create_app()
