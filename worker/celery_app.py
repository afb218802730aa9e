"""The Celery app: `celery -A worker.celery_app worker` (or `openpik-worker`).

The reliability settings (README, "What survives what"): acknowledge late and re-queue a
task whose worker died, one task at a time per GPU (the prefork pool and concurrency are set
here and nowhere else), time limits, and a Redis visibility timeout above the hard limit so a
task that is merely slow is never delivered twice.
"""

from __future__ import annotations

from celery import Celery

from openpik.redis_connection import broker
from openpik.routing import CALLBACK_QUEUE, DEFAULT_QUEUE
from openpik.settings import get_settings


def transport_options(visibility_timeout_s: int, affinity_routing: bool = False) -> dict:
    """Redeliver a dead worker's task soon after its visibility timeout, not minutes later.

    kombu sweeps for expired unacknowledged messages every interval x throttle seconds
    (100 s by default); sweep every few seconds instead (one cheap sorted-set query).
    With model-affinity routing the queues are read in the order given (a worker's direct
    queue first: worker/affinity.py), not round robin.
    """
    return {
        "visibility_timeout": visibility_timeout_s,
        "unacked_restore_interval": max(1, min(10, visibility_timeout_s // 3)),
        "unacked_restore_throttle": 1,
        "queue_order_strategy": "priority" if affinity_routing else "round_robin",
    }


def pool_settings(batch_max: int) -> dict:
    """One task at a time in a prefork child (the default), or, with cross-request batching
    (OPENPIK_BATCH_MAX > 1), ``batch_max`` task threads in the worker process, each holding one
    unacknowledged message, feeding one GPU thread (worker/batching.py). The threads pool enforces
    no time limit: the batcher checks the soft one at every step; there is no hard one."""
    if batch_max <= 1:
        return {"worker_pool": "prefork", "worker_concurrency": 1, "worker_prefetch_multiplier": 1}
    return {"worker_pool": "threads", "worker_concurrency": batch_max, "worker_prefetch_multiplier": 1}


def make_app() -> Celery:
    settings = get_settings()
    broker_url, broker_options = broker(settings)
    app = Celery("openpik", broker=broker_url, include=["worker.tasks", "worker.background_tasks", "worker.callbacks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        **pool_settings(settings.batch_max),
        task_soft_time_limit=settings.soft_time_limit_s,
        task_time_limit=settings.hard_time_limit_s,
        worker_proc_alive_timeout=settings.hard_time_limit_s,  # a compiled worker's child warms up first
        broker_transport_options=transport_options(settings.visibility_timeout_s, settings.affinity_routing)
        | broker_options,
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        task_default_queue=DEFAULT_QUEUE,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
    )
    return app


def serves_only_callbacks(celery: Celery) -> bool:
    """Whether this worker was started for the callbacks queue alone (`--queues openpik.callbacks`):
    it then loads no model, not even to warm up. Known in the pool's children too (they are forked)."""
    return set(celery.amqp.queues.consume_from) == {CALLBACK_QUEUE}


app = make_app()
