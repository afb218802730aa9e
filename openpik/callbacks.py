"""Webhooks (spec section 11): which URLs a key may use, when to retry, and the one call an ended task makes.

The gateway checks a CallbackUrl against the key's ``callback_url_prefixes``; every code path
that ends a task calls ``notify_task_ended`` right after writing the end, which queues one
delivery on the callbacks queue (worker/callbacks.py POSTs it). Light: no torch, no api/.
"""

from __future__ import annotations

import logging
import random
from enum import StrEnum
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from openpik.routing import CALLBACK_QUEUE, CALLBACK_TASK
from openpik.task_records import TaskStore

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger("openpik.callbacks")

SCHEMES = ("http", "https")
MAX_URL_LENGTH = 2048


class CallbackStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class CallbackUrlError(ValueError):
    """Not a URL a webhook can go to; the message says why (never quotes a secret: URLs are not)."""


def normalized_url(url: str) -> str:
    """``url`` with its scheme and host in lower case and a path of at least "/", or CallbackUrlError.

    Both CallbackUrls and the key store's prefixes go through this, so a prefix always ends its
    host with "/": https://hooks.example.com allows https://hooks.example.com/..., never
    https://hooks.example.com.attacker.net/.
    """
    if len(url) > MAX_URL_LENGTH:
        raise CallbackUrlError(f"longer than {MAX_URL_LENGTH} characters")
    if any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in url):
        raise CallbackUrlError("must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError on a port that is not a number
    except ValueError as exc:
        raise CallbackUrlError(f"not a URL: {exc}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise CallbackUrlError("must start with http:// or https://")
    if not parts.hostname:
        raise CallbackUrlError("must name a host")
    if parts.username is not None or parts.password is not None:
        raise CallbackUrlError("must not carry a user name or password")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, parts.fragment))


def callback_allowed(url: str, prefixes: list[str]) -> bool:
    """Whether ``url`` (normalized) starts with one of ``prefixes`` (normalized); none allows nothing."""
    return any(url.startswith(prefix) for prefix in prefixes)


def retry_delay(attempt: int, first_s: float, max_s: float) -> float:
    """Seconds before retry ``attempt`` (1 for the first): doubling from ``first_s`` up to ``max_s``,
    the upper half of it random, so receivers that failed together are not retried together."""
    ceiling = min(max_s, first_s * 2.0 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def notify_task_ended(tasks: TaskStore, app: Celery, task_id: str) -> bool:
    """Call right after writing a task's end (Finished or Error), from every path that ends one.

    Queues the task's webhook on the callbacks queue when it has a CallbackUrl, once per task
    however many paths report the end; True when this call queued it. A queue that cannot be
    reached marks the callback failed rather than raising: the task's end is already written.
    """
    if not tasks.claim_callback(task_id):
        return False
    try:
        app.send_task(CALLBACK_TASK, args=[task_id], queue=CALLBACK_QUEUE)
    except Exception:
        log.exception("the callback of task %s could not be queued", task_id)
        tasks.update(task_id, callback_status=CallbackStatus.FAILED.value)
        return False
    return True
