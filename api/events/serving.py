"""GET /events: one task's progress as server-sent events, then its final state (spec section 11).

Where progress comes from: the task record, read on the event loop every poll interval with
the asyncio Redis client (openpik.task_records.TaskWatch), not a pub/sub channel. Why:
- The record is already the one authority on a task (DESIGN.md), and every way a task moves
  writes it: a worker's progress, start, finish and failure, the gateway's cancel of a queued
  task, a redelivery after a lost worker. Nothing has to remember to publish, and a stream
  opened or reopened at any moment starts from the truth, with no subscribe-then-read race.
- QueuePosition changes when *other* tasks start; no write to this task would publish that.
- Each read is one round trip (one script: the record and its queue rank) on a shared
  connection pool; a subscription would hold a Redis connection per stream (redis-py's
  PubSub), or need a per-process dispatcher. With the default 0.25 s interval, 1000 open
  streams cost about 4000 small reads a second: well within one Redis.
- A stream between reads is a suspended coroutine: no thread per stream (sse-starlette
  drives the generator on the event loop), and a Redis failover is just a read that fails.
The interval follows OPENPIK_PROGRESS_INTERVAL_S, how often workers write progress (polling
faster would read the same value again), but never below POLL_FLOOR_S.

Event ids count the events a client has been sent, across reconnections: a reconnect with
Last-Event-ID n continues at n + 1. The stream always starts from the record as it is now, so
a reconnect never loses anything, the final event included: a task that has ended answers
its final event at once, however often it is asked.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Mapping

import redis
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from api.actions import Services
from api.authorize import authorize
from api.errors import InvalidParameter, MissingAction, StreamTaskNotFound, UnsupportedAction
from api.events.protocol import ACTION, FINAL_EVENTS, MAX_TASK_UID_CHARS, TASK_UID_FIELD, Event, Progress
from api.queries import serving as query_serving
from openpik.keys import Bucket, KeyStore
from openpik.task_records import TaskRecord, TaskWatch
from openpik.vocabulary import ENDED_STATUSES

log = logging.getLogger("openpik.api.events")

POLL_FLOOR_S = 0.1
"""Least time between two reads of a stream's record, whatever OPENPIK_PROGRESS_INTERVAL_S says."""

Snapshot = tuple[TaskRecord, int | None]
"""A record and its queue position (None unless it waits)."""


def query_fields(items: list[tuple[str, str]]) -> dict[str, str]:
    """The query string as the flat body it is signed as; a name given twice is 230 (which one was signed?)."""
    fields: dict[str, str] = {}
    for name, value in items:
        if name in fields:
            raise InvalidParameter(f"{name}: given more than once")
        fields[name] = value
    return fields


async def open_stream(
    services: Services, keys: KeyStore, watch: TaskWatch, fields: Mapping[str, str], last_event_id: str | None
) -> EventSourceResponse:
    """Check the request as POST / checks a body (Timestamp mandatory), then stream the caller's task.

    Every refusal happens here, before the stream starts, so it is an ordinary envelope answer:
    the signature RetCodes as for POST /, and 404 + RetCode 250 for an unknown or foreign task.
    """
    _check_action(fields)
    settings = services.settings
    owner = await authorize(fields, keys, services.loop_redis, settings, Bucket.QUERY, True)
    task_id = _task_uid(fields)
    first = await watch.read(task_id)
    if first is None or first[0].owner != owner:
        raise StreamTaskNotFound(f"Task not found: {task_id}")
    interval = max(POLL_FLOOR_S, settings.progress_interval_s)
    return EventSourceResponse(_events(watch, first, interval, services, _first_id(last_event_id)))


def _check_action(fields: Mapping[str, str]) -> None:
    action = fields.get("Action")
    if not action:
        raise MissingAction("Action: required, a non-empty string")
    if action != ACTION:
        raise UnsupportedAction(f"Action not supported on GET /events: {action} (only {ACTION})")


def _task_uid(fields: Mapping[str, str]) -> str:
    task_id = fields.get(TASK_UID_FIELD, "")
    if not task_id:
        raise InvalidParameter(f"{TASK_UID_FIELD}: required field is missing")
    if len(task_id) > MAX_TASK_UID_CHARS:
        raise InvalidParameter(f"{TASK_UID_FIELD}: at most {MAX_TASK_UID_CHARS} characters")
    return task_id


def _first_id(last_event_id: str | None) -> int:
    """1 on a first connection; after the last id the client saw on a reconnection (any other text: 1)."""
    text = (last_event_id or "").strip()
    return int(text) + 1 if text.isascii() and text.isdigit() and len(text) < 19 else 1


async def _events(
    watch: TaskWatch, snapshot: Snapshot, interval: float, services: Services, first_id: int
) -> AsyncIterator[ServerSentEvent]:
    """`progress` whenever Progress, QueuePosition or TaskStatus changed, then the one final event.

    A record that disappears meanwhile (its TTL ran out) or a Redis that stops answering ends
    the stream without a final event; the client's reconnection then gets the answer (250, 150).
    """
    ids = itertools.count(first_id)
    sent: Progress | None = None
    record, position = snapshot
    while record.status not in ENDED_STATUSES:
        progress = Progress(Progress=record.progress, QueuePosition=position, TaskStatus=record.status.value)
        if progress != sent:
            yield ServerSentEvent(progress.model_dump_json(), event=Event.PROGRESS, id=str(next(ids)))
            sent = progress
        await asyncio.sleep(interval)
        try:
            now = await watch.read(record.task_id)
        except redis.RedisError as exc:
            log.warning("event stream of %s ended: Redis unreachable (%s)", record.task_id, type(exc).__name__)
            return
        if now is None:
            return
        record, position = now
    item = await run_in_threadpool(query_serving.task_detail, services.tasks, record, services.settings.public_url)
    yield ServerSentEvent(item.model_dump_json(), event=FINAL_EVENTS[record.status], id=str(next(ids)))
