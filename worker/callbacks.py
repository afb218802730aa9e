"""Webhook delivery: the Celery task on the callbacks queue that POSTs an ended task's item.

Queued once per ended task by openpik.callbacks.notify_task_ended. Each attempt POSTs the
task's ListTasksDetails item (without CallbackStatus, which this very delivery decides) as
JSON, signed as Standard Webhooks with the owner's current PrivateKey: the HMAC key is the
key's UTF-8 bytes, not a ``whsec_`` base64 secret. A 2xx answer delivers it. Anything else
fails the attempt: other statuses, timeouts, connection errors, and redirects (3xx), which
are never followed, so a receiver cannot send the signed item elsewhere. A failed attempt is
retried with exponential backoff and jitter until OPENPIK_CALLBACK_RETRY_S after the task
ended, then the callback is failed. Light: no torch, never on a model's time beyond one
bounded POST (a dedicated callback worker takes even that off the GPU workers).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from functools import cache

import httpx
from standardwebhooks import Webhook

from openpik.callbacks import CallbackStatus, retry_delay
from openpik.keys import KeyStore, key_store_from_settings
from openpik.routing import CALLBACK_TASK
from openpik.settings import Settings, get_settings
from openpik.task_details import task_detail
from openpik.task_records import TaskRecord, TaskStore
from worker import metrics
from worker.celery_app import app
from worker.tasks import task_store

log = logging.getLogger("openpik.worker.callbacks")

USER_AGENT = "OpenPik-Webhook/1"


@cache
def key_store() -> KeyStore:
    """The gateway's key store (OPENPIK_KEY_STORE): a rotated PrivateKey signs from the next attempt on."""
    return key_store_from_settings(get_settings())


@app.task(name=CALLBACK_TASK, bind=True, ignore_result=True, max_retries=None)  # the window decides
def deliver_callback(self, task_id: str) -> None:
    settings = get_settings()
    tasks = task_store()
    record = tasks.get(task_id)
    if record is None or record.callback_status != CallbackStatus.PENDING or not record.callback_url:
        return  # expired, or settled by an earlier copy of this message
    secret = key_store().private_key(record.owner)
    if secret is None:
        _settle(tasks, record, CallbackStatus.FAILED, "its key is unknown or disabled: nothing to sign with")
        return
    problem = post_webhook(record.callback_url, webhook_body(record, settings), secret, record.task_id, settings)
    if problem is None:
        _settle(tasks, record, CallbackStatus.DELIVERED, "")
        return
    attempt = self.request.retries + 1
    delay = retry_delay(attempt, settings.callback_backoff_s, _longest_wait(settings))
    ended = record.finished_at or time.time()
    if time.time() + delay > ended + settings.callback_retry_s:
        _settle(tasks, record, CallbackStatus.FAILED, f"attempt {attempt}: {problem}; retry window over")
        return
    metrics.callback_attempted("retried")
    log.info("callback of task %s: attempt %d: %s; retry in %.1f s", task_id, attempt, problem, delay)
    raise self.retry(countdown=delay)


def webhook_body(record: TaskRecord, settings: Settings) -> bytes:
    """The task's ListTasksDetails item, as the gateway would answer it now, as compact UTF-8 JSON."""
    item = task_detail(record, settings.public_url, None).model_dump(exclude={"CallbackStatus"})
    return json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()


def webhook_headers(body: bytes, secret: str, message_id: str, now: datetime) -> dict[str, str]:
    """Standard Webhooks headers; the same id on every attempt, so a receiver can drop repeats."""
    timestamp = now.replace(microsecond=0)
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": Webhook(secret.encode()).sign(message_id, timestamp, body),
    }


def post_webhook(url: str, body: bytes, secret: str, message_id: str, settings: Settings) -> str | None:
    """One attempt, signed afresh (receivers refuse timestamps over 5 minutes old); None when delivered,
    else why not."""
    headers = webhook_headers(body, secret, message_id, datetime.now(UTC))
    try:
        response = httpx.post(
            url, content=body, headers=headers, timeout=settings.callback_timeout_s, follow_redirects=False
        )
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    if response.is_success:
        return None
    if response.is_redirect:
        return f"HTTP {response.status_code} redirect (not followed)"
    return f"HTTP {response.status_code}"


def _longest_wait(settings: Settings) -> float:
    """A retry waits in Redis as an unacknowledged message: past the visibility timeout it would be
    delivered twice, so no wait comes near it."""
    return min(settings.callback_backoff_max_s, settings.visibility_timeout_s / 2)


def _settle(tasks: TaskStore, record: TaskRecord, status: CallbackStatus, why: str) -> None:
    tasks.update(record.task_id, callback_status=status.value)
    metrics.callback_attempted(status.value)
    if why:
        log.warning("callback of task %s %s: %s", record.task_id, status.value, why)
