"""The gateway: `uvicorn api.app:app`. Never imports torch.

Builds the services once at start-up and maps every error to PICPIK's envelope in one place.
"""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

import redis
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from api import metrics
from api.actions import Services
from api.api_router import router
from api.errors import ApiError, InternalError, ServiceUnavailable
from api.generate.submission import Submitter, celery_enqueue
from api.keys import key_store_from_settings
from api.openapi import component_schemas
from api.protocol_base import Envelope
from models_registry.catalog import load_catalog
from openpik.logs import configure_json_logging
from openpik.results import result_store_from_settings
from openpik.settings import Settings, get_settings
from openpik.task_records import TaskStore

log = logging.getLogger("openpik.api")


def build_services(settings: Settings) -> tuple[Services, object]:
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
    tasks = TaskStore(client, settings.result_ttl_s)
    services = Services(settings=settings, catalog=load_catalog(settings.catalog), tasks=tasks,
                        results=result_store_from_settings(settings),
                        submitter=Submitter(tasks, celery_enqueue(settings), settings.max_queue_depth,
                                            settings.max_queued_per_key))
    return services, key_store_from_settings(settings, client)


def create_app(settings: Settings | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        configure_json_logging("openpik.api")
        app.state.services, app.state.keys = build_services(settings or get_settings())
        yield

    app = FastAPI(title="OpenPik", summary="PICPIK-compatible image generation on your own GPUs",
                  version="0.1.0", lifespan=lifespan)
    app.include_router(router)
    app.add_middleware(metrics.RequestObserver)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(redis.RedisError, _redis_error)
    app.add_exception_handler(Exception, _internal_error)
    app.openapi = lambda: _openapi(app)
    return app


def _envelope(request: Request, status: int, retcode: int, message: str) -> JSONResponse:
    echo = getattr(request.state, "echo", {})
    body = Envelope(RetCode=retcode, Message=message, **echo).model_dump()
    return JSONResponse(body, status_code=status)


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return _envelope(request, exc.http_status, exc.retcode, exc.message)


async def _redis_error(request: Request, exc: redis.RedisError) -> JSONResponse:
    unavailable = ServiceUnavailable(f"the task store is unreachable ({type(exc).__name__}); retry later")
    return await _api_error(request, unavailable)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error")
    return await _api_error(request, InternalError("internal error; retry later"))


def _openapi(app: FastAPI) -> dict:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        schema.setdefault("components", {}).setdefault("schemas", {}).update(component_schemas())
        app.openapi_schema = schema
    return app.openapi_schema


app = create_app()
