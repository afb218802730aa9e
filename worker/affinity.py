"""The worker's half of model-affinity routing (openpik/affinity.py): its direct queues and its heartbeat.

`openpik-worker` consumes, in this order (kombu's `priority` queue order, set in
celery_app.py): its own direct queue of each group, the callbacks queue, then the group
queues. Direct first, so a task sent to it for the model it holds never waits behind the
shared queue; callbacks before the groups, so webhooks are not held back while a group's
queue is long (there is one delivery per ended task, so they cannot starve generation).

The heartbeat is written by the pool's child, which holds the models: when it starts,
when a task starts and ends, and every OPENPIK_AFFINITY_HEARTBEAT_S from a thread of its
own (so a long task keeps its worker alive to the gateways). A failed write is logged and
never fails a task: without heartbeats tasks simply go to the group queues.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from functools import cache

import redis

from openpik.affinity import Heartbeat, write_heartbeat
from openpik.redis_connection import Role, redis_client
from openpik.routing import CALLBACK_QUEUE, direct_queue
from openpik.settings import get_settings

log = logging.getLogger("openpik.worker.affinity")

_state: dict[str, Heartbeat] = {}
"""This process's latest heartbeat, under "current": set by configure in the Celery parent
before the pool forks (so the child inherits the worker's name and queues), then updated by the child."""
_lock = threading.Lock()


def consumed_queues(queues: list[str], worker: str) -> list[str]:
    """The queues ``worker`` consumes for the ``queues`` it was given, in priority order."""
    groups = [queue for queue in queues if queue != CALLBACK_QUEUE]
    callbacks = [CALLBACK_QUEUE] if CALLBACK_QUEUE in queues else []
    return [*(direct_queue(group, worker) for group in groups), *callbacks, *groups]


def configure(queues: list[str], worker: str) -> list[str]:
    """In the Celery parent, before the pool forks: this worker's first heartbeat (nothing held,
    idle), inherited by its pool child; the queues it consumes (consumed_queues)."""
    groups = [queue for queue in queues if queue != CALLBACK_QUEUE]
    _state["current"] = Heartbeat(worker=worker, queues={group: direct_queue(group, worker) for group in groups})
    return consumed_queues(queues, worker)


def enabled() -> bool:
    """Whether this process beats: routing on, and a worker that serves a model group."""
    current = _state.get("current")
    return current is not None and bool(current.queues)


def start_beating() -> None:
    """In the pool's child, as it starts: the first beat, then one every interval from a daemon thread."""
    if not enabled():
        return
    beat()
    threading.Thread(target=_beat_forever, name="openpik-heartbeat", daemon=True).start()


def task_started() -> None:
    _update(busy=True)


def task_ended() -> None:
    _update(busy=False)


def ran(engine: object) -> None:
    """After a run, before its results are stored: idle again, holding what the engine's model cache
    holds now (the stub engine holds none). Said before the record says Finished, so a client that
    sends its next task on seeing Finished finds this worker idle."""
    cache_ = getattr(engine, "cache", None)
    held = cache_.held() if cache_ is not None else ((), ())
    _update(busy=False, models=held[0], loras=held[1])


def beat() -> None:
    """Write the current heartbeat now; a failure is logged, never raised."""
    current = _state.get("current")
    if current is None:
        return
    settings = get_settings()
    try:
        write_heartbeat(_client(), current, settings.affinity_heartbeat_ttl_s)
    except redis.RedisError as exc:
        log.warning("heartbeat not written (%s)", type(exc).__name__)


def _update(**changes: object) -> None:
    """Change the heartbeat and write it at once, if anything changed."""
    if not enabled():
        return
    with _lock:
        before = _state["current"]
        _state["current"] = replace(before, **changes)  # type: ignore[arg-type]
        changed = _state["current"] != before
    if changed:
        beat()


def _beat_forever() -> None:
    interval = get_settings().affinity_heartbeat_s
    while True:
        time.sleep(interval)
        beat()


@cache
def _client() -> redis.Redis:
    return redis_client(get_settings(), Role.WORKER)
