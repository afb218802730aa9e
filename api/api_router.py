"""Routes only: the one PICPIK endpoint (POST /, ActionEndpoint), result files, the playground and health checks."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from sse_starlette import EventSourceResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api import playground
from api.actions import ACTIONS, is_action_request
from api.authorize import authorize
from api.body import parse_json_object, read_body
from api.errors import InvalidParameter, MissingAction, UnsupportedAction
from api.events import serving as events_serving
from api.metrics import CONTENT_TYPE, count_ignored_fields, exposition
from api.protocol_base import SignedRequest, unknown_fields
from api.queries import serving as query_serving
from openpik.routing import RESULTS_PATH
from openpik.task_records import TASK_ID_ALPHABET, TASK_ID_LENGTH

router = APIRouter()

RESULT_TASK_ID = re.compile(rf"^[{TASK_ID_ALPHABET}]{{{TASK_ID_LENGTH}}}$")
RESULT_FILE = re.compile(r"^(0|[1-9][0-9]?)\.png$")


ErrorEnvelope = Callable[[Request, Exception], Awaitable[Response]]


class ActionEndpoint:
    """POST /, every PICPIK action, served as a plain ASGI middleware in front of the router.

    It is the one hot path (each submission), and FastAPI's router, dependency machinery and
    exception middleware cost about a tenth of a submission's CPU; it needs none of them: it
    reads the raw body itself and every error it ends with becomes the envelope through
    ``on_error`` (api.app's mapping, the same one the routes' exception handlers use). Its
    OpenAPI operation is written in api.openapi. Other requests go on to the router.
    """

    def __init__(self, app: ASGIApp, on_error: ErrorEnvelope):
        self.app = app
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_action_request(scope):
            return await self.app(scope, receive, send)
        request = Request(scope, receive)
        try:
            response: Response = await dispatch(request)
        except Exception as exc:  # every error is an envelope (api.app's mapping)
            response = await self.on_error(request, exc)
        await response(scope, receive, send)


async def dispatch(request: Request) -> JSONResponse:
    services = request.app.state.services
    settings = services.settings
    raw = await read_body(request, settings.max_body_bytes)
    body = parse_json_object(raw, settings.max_json_depth)
    request.state.echo = _echo(body)
    request.state.body = body  # for the request log line (api.metrics)
    action = ACTIONS.get(_action_name(body))
    if action is None:
        raise UnsupportedAction(f"Action not supported: {body['Action']}")
    keys = request.app.state.keys
    owner = await authorize(body, keys, services.loop_redis, settings, action.bucket, settings.require_timestamp)
    try:
        wire = action.request.model_validate(body)
    except ValidationError as exc:
        raise InvalidParameter(describe_validation_error(exc)) from None
    _ignore_unknown_fields(wire, settings.strict_fields)
    response = await action.answer(services, wire, owner, body, len(raw))
    return JSONResponse(response.model_copy(update=request.state.echo).wire())


@router.get(
    "/events",
    summary="One task's progress as server-sent events, then its final state (ours, spec section 11)",
    description="Query: Action=TaskEvents, PublicKey, TaskUID, Timestamp (mandatory), Signature, signed as a body "
    "of those fields. Events: `progress` {Progress, QueuePosition, TaskStatus}, then one `finished` or `error` "
    "with the task's ListTasksDetails item.",
    response_class=EventSourceResponse,
)
async def task_events(request: Request) -> EventSourceResponse:
    fields = events_serving.query_fields(request.query_params.multi_items())
    request.state.echo = _echo(fields)
    state = request.app.state
    return await events_serving.open_stream(
        state.services, state.keys, state.task_watch, fields, request.headers.get("last-event-id")
    )


@router.get(RESULTS_PATH + "/{task_id}/{name}", summary="A result image, while its task record lives")
async def result_file(task_id: str, name: str, request: Request) -> Response:
    headers = {"X-Content-Type-Options": "nosniff"}
    data = None
    file = RESULT_FILE.match(name)
    if RESULT_TASK_ID.match(task_id) and file:
        services = request.app.state.services
        data = await run_in_threadpool(
            query_serving.result_file, services.tasks, services.results, task_id, int(file[1])
        )
    if data is None:
        return JSONResponse({"detail": "not found"}, status_code=404, headers=headers)
    return Response(data, media_type="image/png", headers=headers)


@router.get("/playground", include_in_schema=False)
async def playground_page() -> Response:
    return playground.page_response()


@router.get("/playground/{name}", include_in_schema=False)
async def playground_asset(name: str) -> Response:
    return playground.asset_response(name)


@router.get("/metrics", summary="Prometheus metrics: this gateway's requests, the queues' depth, tasks by status")
async def metrics(request: Request) -> Response:
    return Response(await run_in_threadpool(exposition, request.app.state.services), media_type=CONTENT_TYPE)


@router.get("/healthz", summary="The gateway process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Redis answers")
async def readyz(request: Request) -> JSONResponse:
    try:
        await run_in_threadpool(request.app.state.services.tasks.ping)
    except Exception as exc:  # any Redis failure means not ready
        return JSONResponse({"status": "unavailable", "reason": type(exc).__name__}, status_code=503)
    return JSONResponse({"status": "ok"})


def _ignore_unknown_fields(wire: SignedRequest, strict: bool) -> None:
    """Fields no wire model declares: ignored and counted (spec section 0), or 230 when strict."""
    unknown = unknown_fields(wire)
    if unknown and strict:
        raise InvalidParameter(f"{unknown[0]}: unknown field (this server has OPENPIK_STRICT_FIELDS on)")
    if unknown:
        count_ignored_fields(wire.Action, unknown)


def _action_name(body: dict[str, Any]) -> str:
    action = body.get("Action")
    if not isinstance(action, str) or not action:
        raise MissingAction("Action: required, a non-empty string")
    return action


def _echo(body: dict[str, Any]) -> dict[str, Any]:
    """The request fields every response echoes."""
    action, request_uuid = body.get("Action"), body.get("request_uuid")
    return {
        "Action": action if isinstance(action, str) else "",
        "request_uuid": request_uuid if isinstance(request_uuid, str) else None,
    }


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem, as 'Field.Path: rule' with PICPIK's field names."""
    error = exc.errors(include_url=False)[0]
    loc = _location(error["loc"])
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        return f"{loc}: unknown field"
    if error["type"] == "missing":
        return f"{loc}: required field is missing"
    if error["type"] == "value_error":
        message = message.removeprefix("Value error, ")
        field, _, rule = message.partition(": ")
        return f"{loc}.{field}: {rule}" if loc and rule else f"{loc or field}: {rule or message}"
    return f"{loc}: {message}"


def _location(loc: tuple[int | str, ...]) -> str:
    parts = [p for p in loc if not (isinstance(p, str) and (p.startswith(("function-", "literal[", "int", "str"))))]
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
    return text.lstrip(".")
