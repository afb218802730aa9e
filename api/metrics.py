"""What operators see of the gateway: Prometheus metrics (GET /metrics) and a JSON line per request.

Request counts and durations are this process's own. Queue depth and tasks by status are
read from Redis at scrape time, so every gateway reports the same cluster-wide values and
none keeps state of its own.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

import redis
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.actions import ACTIONS, Services, is_action_request
from api.errors import InternalError
from openpik.routing import queue_name
from openpik.task_records import TaskStore, queued_key

CONTENT_TYPE = CONTENT_TYPE_LATEST
disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` twin of every series: Prometheus does not need them

REQUESTS = Counter("openpik_requests_total", "POST / requests answered, by Action and RetCode", ["action", "retcode"])
DURATION = Histogram("openpik_request_duration_seconds", "Time to answer POST /, by Action", ["action"])
IGNORED_FIELDS = Counter(
    "openpik_ignored_fields_total",
    "Request fields no wire model declares, ignored, by Action and field",
    ["action", "field"],
)

# Label values besides the Action names and RetCodes, so clients cannot create new series.
MISSING = "none"  # no Action string (a body that is not a JSON object, too), or no RetCode
OTHER_ACTION = "other"  # an Action this server does not support
INTERNAL_ERROR_RETCODE = InternalError.retcode  # what api.app answers for an unhandled exception
LOGGED_TEXT_CHARS = 100  # client strings in the log are cut here
MAX_IGNORED_FIELD_SERIES = 200  # clients name the fields: past this many series they count as OTHER_FIELD
OTHER_FIELD = "other"

log = logging.getLogger("openpik.api.requests")


def action_label(action: object) -> str:
    if not isinstance(action, str) or not action:
        return MISSING
    return action if action in ACTIONS else OTHER_ACTION


_ignored_series: set[tuple[str, str]] = set()


def count_ignored_fields(action: str, paths: list[str]) -> None:
    """Count each ignored field by its path without list indexes (ControlNetParams.Foo), log them."""
    log.debug("ignored unknown fields", extra={"action": action, "fields": paths})
    for path in paths:
        series = (action, re.sub(r"\[\d+\]", "", path))
        if series not in _ignored_series and len(_ignored_series) >= MAX_IGNORED_FIELD_SERIES:
            series = (action, OTHER_FIELD)
        _ignored_series.add(series)
        IGNORED_FIELDS.labels(*series).inc()


class RequestObserver:
    """ASGI middleware: each POST / counts once, is timed, and writes one JSON log line.

    It reads what the route left in the request state (the echoed fields and the parsed
    body) and the envelope it answered (RetCode, TaskUID): the request body is never parsed again.
    Other paths (results, health checks, metrics) pass through untouched.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_action_request(scope):
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        except Exception:
            _observe(state, {"RetCode": INTERNAL_ERROR_RETCODE}, time.perf_counter() - started)
            raise
        _observe(state, _envelope(b"".join(chunks)), time.perf_counter() - started)


def _envelope(body: bytes) -> dict[str, Any]:
    try:
        envelope = json.loads(body)
    except ValueError:
        return {}
    return envelope if isinstance(envelope, dict) else {}


def _observe(state: dict[str, Any], envelope: dict[str, Any], seconds: float) -> None:
    action = action_label(state.get("echo", {}).get("Action"))
    retcode = str(envelope.get("RetCode", MISSING))
    REQUESTS.labels(action, retcode).inc()
    DURATION.labels(action).observe(seconds)
    body = state.get("body", {})
    log.info(
        "request",
        extra={
            "action": action,
            "retcode": envelope.get("RetCode"),
            "duration_ms": round(seconds * 1000, 1),
            "public_key": _text(body.get("PublicKey")),
            "task_uid": _text(envelope.get("TaskUID")),
            "request_uuid": _text(body.get("request_uuid")),
        },
    )


def _text(value: object) -> str | None:
    return value[:LOGGED_TEXT_CHARS] if isinstance(value, str) else None


class _StoreState:
    """Queue depth and oldest waiting task's age per catalog queue, and task records by status,
    read from Redis now.

    When Redis does not answer these are left out and the request metrics still come:
    they are what shows the outage (ServiceUnavailable answers).
    """

    def __init__(self, services: Services):
        self.services = services

    def collect(self) -> Iterator[GaugeMetricFamily]:
        tasks = self.services.tasks
        try:
            queues = _queues(self.services)
            depths = {queue: tasks.queue_depth(queue) for queue in queues}
            ages = oldest_waiting_ages(tasks, queues, time.time())
            by_status = tasks.count_by_status()
        except redis.RedisError as exc:
            log.warning("metrics: Redis unreachable (%s); queue depth and tasks left out", type(exc).__name__)
            return
        yield _gauge("openpik_queue_depth", "Tasks waiting in each queue", "queue", depths)
        yield _gauge(
            "openpik_queue_oldest_task_age_seconds",
            "How long the longest-waiting task of each queue has waited (0: none waits)",
            "queue",
            ages,
        )
        yield _gauge(
            "openpik_tasks", "Task records in Redis by status (records live OPENPIK_RESULT_TTL_S)", "status", by_status
        )


def _queues(services: Services) -> list[str]:
    return sorted({queue_name(model.group) for model in services.catalog.main_models})


def oldest_waiting_ages(tasks: TaskStore, queues: list[str], now: float) -> dict[str, float]:
    """Seconds each queue's oldest waiting task has waited, 0 for an empty queue.

    The queue's waiting set (task_records.queued_key) is scored by enqueue time, so this is
    one ZRANGEBYSCORE per queue, whatever the depth, and no Celery message is parsed. Entries
    older than the record TTL are skipped: their records expired unstarted, so no worker will
    ever run them, and they would otherwise pin the age forever.
    """
    with tasks.redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.zrangebyscore(queued_key(queue), now - tasks.ttl_s, "+inf", start=0, num=1, withscores=True)
        oldest = pipe.execute()
    return {queue: max(0.0, now - first[0][1]) if first else 0.0 for queue, first in zip(queues, oldest)}


def _gauge(name: str, documentation: str, label: str, values: Mapping[str, float]) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in values.items():
        gauge.add_metric([key], value)
    return gauge


def exposition(services: Services) -> bytes:
    """This process's metrics (with prometheus_client's process and Python ones) and the queues'."""
    return generate_latest(REGISTRY) + generate_latest(_StoreState(services))
