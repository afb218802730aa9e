"""Submitting a translated request: idempotency, backpressure, the task record, the enqueue.

A TaskUID is returned only once Redis holds both the record and the queued message, and,
with OPENPIK_REDIS_WAIT_REPLICAS, once that many replicas hold them too (a failover then
loses no accepted task). A refused or failed submission leaves neither behind (nor a claimed
request_uuid). When the replicas do not confirm in time the client gets 150 and the record
is deleted: a worker that takes the message anyway finds no record and drops it (as for an
expired one), so a task whose TaskUID was never returned runs unseen at most, and never
shows up in a query or a count. Were Redis down for that delete, the record expires.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from celery import Celery

from api.errors import InvalidParameter, LoadShedding, ServiceUnavailable, TooManyQueued
from api.generate.serving import Submission
from openpik.callbacks import CallbackStatus, callback_allowed
from openpik.job import Job
from openpik.redis_connection import broker, broker_redis, confirm_replicated
from openpik.settings import Settings
from openpik.task_records import TaskRecord, TaskStore, new_task_id

Enqueue = Callable[[str, Job, str], None]
"""Publish a Job (its task_id set) as the Celery task named first, to the queue named last;
raises when the broker did not take it."""
Route = Callable[[str, Job], str]
"""(the queue of the Job's model group, the Job) -> the queue to publish it to (model-affinity routing)."""
CallbackPrefixes = Callable[[str], list[str]]
"""A PublicKey -> the URL prefixes its callbacks may go to (openpik.keys.KeyStore.callback_url_prefixes)."""

UNSIGNED_FIELDS = ("Signature", "Timestamp")
PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0.2}


def celery_publisher(settings: Settings) -> Celery:
    """The gateway's Celery app, only for publishing: it fails fast instead of retrying when Redis
    is down, so the client gets ServiceUnavailable and retries itself. Also what the gateway hands
    openpik.callbacks.notify_task_ended when it ends a task itself."""
    broker_url, broker_options = broker(settings)
    client = Celery("openpik-api", broker=broker_url)
    client.conf.update(
        broker_connection_retry_on_startup=False,
        broker_connection_max_retries=0,
        task_publish_retry_policy=PUBLISH_RETRY,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s} | broker_options,
    )
    return client


def celery_enqueue(settings: Settings, client: Celery | None = None) -> Enqueue:
    """Publishing through ``client`` (default: a celery_publisher of its own).

    With OPENPIK_REDIS_WAIT_REPLICAS, the message is confirmed by a WAIT on the connection
    that published it (the producer is held meanwhile, so no other thread uses its channel)."""
    client = client or celery_publisher(settings)

    def enqueue(task_name: str, job: Job, queue: str) -> None:
        with client.producer_or_acquire() as producer:
            client.send_task(
                task_name,
                args=[job.model_dump(mode="json")],
                queue=queue,
                task_id=job.task_id,
                retry=True,
                retry_policy=PUBLISH_RETRY,
                producer=producer,
            )
            confirm_replicated(
                broker_redis(producer.channel), settings.redis_wait_replicas, settings.redis_wait_timeout_ms
            )

    return enqueue


class Submitter:
    """Stores a validated Submission, enqueues it, and keeps request_uuid idempotent.

    request_uuid (spec section 5): the same uuid with identical parameters within
    ``idempotency_window_s`` is a retry and gets the earlier TaskUID; with other parameters, or
    later, it is a new task (never an error: some clients send a constant uuid). 0: off.

    Backpressure: a queue deeper than ``max_queue_depth`` sheds new work (LoadShedding) and
    one key may have at most ``max_queued_per_key`` tasks waiting (TooManyQueued), so a burst
    from one client cannot starve the others. 0 turns a limit off.

    Callbacks: a Submission's callback_url must start with one of the caller's
    ``callback_prefixes`` (the key store's callback_url_prefixes), else 230 and nothing is queued.
    """

    def __init__(
        self,
        tasks: TaskStore,
        enqueue: Enqueue,
        max_queue_depth: int = 0,
        max_queued_per_key: int = 0,
        idempotency_window_s: int = 0,
        callback_prefixes: CallbackPrefixes = lambda owner: [],
        route: Route = lambda queue, job: queue,
    ):
        self.tasks = tasks
        self.enqueue = enqueue
        self.max_queue_depth = max_queue_depth
        self.max_queued_per_key = max_queued_per_key
        self.idempotency_window_s = idempotency_window_s
        self.callback_prefixes = callback_prefixes
        self.route = route

    def submit(self, submission: Submission, action: str, owner: str, body: dict[str, Any]) -> str:
        self._check_callback(submission.callback_url, owner)
        task_id = new_task_id()
        request_uuid = self._claimed_uuid(body)
        if request_uuid:
            earlier = self.tasks.retry_of(owner, request_uuid, _fingerprint(body), task_id, self.idempotency_window_s)
            if earlier is not None:
                return earlier
        try:
            self._check_limits(submission.queue, owner)
        except (LoadShedding, TooManyQueued):
            if request_uuid:
                self.tasks.release_request(owner, request_uuid)
            raise
        queue = self.route(submission.queue, submission.job)
        record = TaskRecord(
            task_id=task_id,
            owner=owner,
            action=action,
            queue=queue,
            note=submission.note,
            callback_url=submission.callback_url,
            callback_status=CallbackStatus.PENDING.value if submission.callback_url else "",
        )
        try:
            self.tasks.create(record, submission.images)
            self.enqueue(submission.task_name, submission.job.model_copy(update={"task_id": task_id}), queue)
        except Exception as exc:
            self._forget(record, submission, request_uuid)
            raise ServiceUnavailable(f"the task queue is unreachable ({type(exc).__name__}); retry later") from exc
        return task_id

    def _check_callback(self, url: str, owner: str) -> None:
        if url and not callback_allowed(url, self.callback_prefixes(owner)):
            raise InvalidParameter(
                "CallbackUrl: not under any callback URL prefix this key may use "
                "(the operator allows prefixes with openpik-keys allow-callback)"
            )

    def _check_limits(self, queue: str, owner: str) -> None:
        if self.max_queue_depth and self.tasks.queue_depth(queue) >= self.max_queue_depth:
            raise LoadShedding(f"the queue holds {self.max_queue_depth} tasks or more; retry later")
        if self.max_queued_per_key and self.tasks.queued_for(owner) >= self.max_queued_per_key:
            raise TooManyQueued(
                f"this key already has {self.max_queued_per_key} tasks waiting; retry when some have started"
            )

    def _claimed_uuid(self, body: dict[str, Any]) -> str | None:
        """The request_uuid that makes this submission idempotent, if any and if on."""
        request_uuid = body.get("request_uuid")
        return request_uuid if self.idempotency_window_s and isinstance(request_uuid, str) and request_uuid else None

    def _forget(self, record: TaskRecord, submission: Submission, request_uuid: str | None) -> None:
        try:
            self.tasks.delete(record, list(submission.images))
            if request_uuid:
                self.tasks.release_request(record.owner, request_uuid)
        except Exception:  # Redis is down: the record and claim expire with their TTL
            pass


def _fingerprint(body: dict[str, Any]) -> str:
    """The request's parameters, independent of when and how it was signed."""
    unsigned = {k: v for k, v in body.items() if k not in UNSIGNED_FIELDS}
    return hashlib.sha256(json.dumps(unsigned, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
