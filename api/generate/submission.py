"""Submitting a translated request: idempotency, backpressure, the task record, the enqueue.

All of it is one script on the gateway's asyncio Redis client (openpik.task_records.TaskIntake):
one round trip on the event loop per submission, no thread. The Celery message is built here
(api.generate.celery_message) and pushed by the same script, so a TaskUID is returned only once
Redis holds both the record and the queued message, and, with OPENPIK_REDIS_WAIT_REPLICAS, once
that many replicas hold them too (a failover then loses no accepted task). A refused submission
leaves nothing behind (nor a claimed request_uuid). When the replicas do not confirm in time the
client gets 150 and the record is deleted: a worker that takes the message anyway finds no record
and drops it (as for an expired one), so a task whose TaskUID was never returned runs unseen at
most, and never shows up in a query or a count. Were Redis down for that delete, the record expires.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from celery import Celery

from api.errors import ApiError, InvalidParameter, LoadShedding, ServiceUnavailable, TooManyQueued
from api.generate.celery_message import TaskMessages
from api.generate.serving import Submission
from openpik.callbacks import CallbackStatus, callback_allowed
from openpik.job import QueuedJob
from openpik.redis_connection import broker
from openpik.settings import Settings
from openpik.task_records import Admission, Refusal, TaskIntake, TaskRecord, idempotency_key, new_task_id

Route = Callable[[str, QueuedJob], str]
"""(the queue of the Job's model group, the Job) -> the queue to publish it to (model-affinity routing)."""
CallbackPrefixes = Callable[[str], list[str]]
"""A PublicKey -> the URL prefixes its callbacks may go to (openpik.keys.KeyStore.callback_url_prefixes)."""

UNSIGNED_FIELDS = ("Signature", "Timestamp")
PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0.2}


def celery_publisher(settings: Settings) -> Celery:
    """The gateway's Celery app: what submissions build their messages with (TaskMessages), and
    what it hands openpik.callbacks.notify_task_ended when it ends a task itself. That publishing
    fails fast instead of retrying when Redis is down, so the client gets ServiceUnavailable and
    retries itself."""
    broker_url, broker_options = broker(settings)
    client = Celery("openpik-api", broker=broker_url)
    client.conf.update(
        broker_connection_retry_on_startup=False,
        broker_connection_max_retries=0,
        task_publish_retry_policy=PUBLISH_RETRY,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s} | broker_options,
    )
    return client


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
        intake: TaskIntake,
        messages: TaskMessages,
        max_queue_depth: int = 0,
        max_queued_per_key: int = 0,
        idempotency_window_s: int = 0,
        callback_prefixes: CallbackPrefixes = lambda owner: [],
        route: Route = lambda queue, job: queue,
    ):
        self.intake = intake
        self.messages = messages
        self.max_queue_depth = max_queue_depth
        self.max_queued_per_key = max_queued_per_key
        self.idempotency_window_s = idempotency_window_s
        self.callback_prefixes = callback_prefixes
        self.route = route

    async def submit(self, submission: Submission, action: str, owner: str, body: dict[str, Any]) -> str:
        """The new task's TaskUID (or the earlier one's, for a retried request_uuid); one round trip."""
        self._check_callback(submission.callback_url, owner)
        task_id = new_task_id()
        # The route decides; a job with no main model (background removal) stays on its group queue.
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
        job = submission.job.model_copy(update={"task_id": task_id})
        message = self.messages.build(submission.task_name, task_id, [job.model_dump(mode="json")], queue)
        admission = self._admission(submission.queue, owner, body)
        try:
            submitted = await self.intake.submit(record, submission.images, admission, message.queue, message.payload)
        except Exception as exc:
            await self._forget(record, submission, admission.claim_key)
            raise ServiceUnavailable(f"the task queue is unreachable ({type(exc).__name__}); retry later") from exc
        if submitted.refusal is not None:
            raise self._refused(submitted.refusal)
        return submitted.task_id

    def _check_callback(self, url: str, owner: str) -> None:
        if url and not callback_allowed(url, self.callback_prefixes(owner)):
            raise InvalidParameter(
                "CallbackUrl: not under any callback URL prefix this key may use "
                "(the operator allows prefixes with openpik-keys allow-callback)"
            )

    def _refused(self, refusal: Refusal) -> ApiError:
        """What the client gets for a refusal of the submit script."""
        return {
            Refusal.QUEUE_FULL: LoadShedding(f"the queue holds {self.max_queue_depth} tasks or more; retry later"),
            Refusal.TOO_MANY_QUEUED: TooManyQueued(
                f"this key already has {self.max_queued_per_key} tasks waiting; retry when some have started"
            ),
        }[refusal]

    def _admission(self, depth_queue: str, owner: str, body: dict[str, Any]) -> Admission:
        """The limits, and the claim of the request's request_uuid when it has one and idempotency is on."""
        limits = Admission(depth_queue, self.max_queue_depth, self.max_queued_per_key)
        request_uuid = body.get("request_uuid")
        if not (self.idempotency_window_s and isinstance(request_uuid, str) and request_uuid):
            return limits
        return replace(
            limits,
            claim_key=idempotency_key(owner, request_uuid),
            fingerprint=_fingerprint(body),
            window_s=self.idempotency_window_s,
        )

    async def _forget(self, record: TaskRecord, submission: Submission, claim_key: str) -> None:
        with contextlib.suppress(Exception):  # Redis is down: the record and claim expire with their TTL
            await self.intake.forget(record, list(submission.images), claim_key)


def _fingerprint(body: dict[str, Any]) -> str:
    """The request's parameters, independent of when and how it was signed."""
    unsigned = {k: v for k, v in body.items() if k not in UNSIGNED_FIELDS}
    return hashlib.sha256(json.dumps(unsigned, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
