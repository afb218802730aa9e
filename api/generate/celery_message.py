"""Celery task messages as kombu's Redis transport pushes them, built without publishing them.

The gateway writes a task's record and its message in one Redis round trip (one script,
api.generate.submission), so it builds the message itself instead of letting Celery publish it.
Celery builds the task part (``app.amqp.as_task_v2``: message protocol 2, which
tests/test_submission_script.py pins and compares with a real ``send_task``); this module wraps
it as ``kombu.messaging.Producer.publish`` and the virtual channel's ``prepare_message`` /
``basic_publish`` do, and names the Redis list kombu's ``_put`` pushes it onto. Body and envelope
are JSON written by orjson (the same values kombu's json serializer writes, without its spaces,
in a tenth of the time).

``argsrepr`` is given, so Celery does not build a printable copy of the Job for a header: the
worker's log shows ``JOB_REPR`` instead of the whole Job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from celery import Celery
from celery.utils.nodenames import anon_nodename
from kombu.transport.virtual.base import Base64
from kombu.utils.uuid import uuid

PROTOCOL = 2
"""The Celery message protocol built here (as_task_v2); the workers' Celery reads it."""
JOB_REPR = "(<Job>,)"
KWARGS_REPR = "{}"
SERIALIZER = "json"
"""Celery's default task serializer; kombu registers it as this content type and encoding."""
JSON_CONTENT_TYPE = "application/json"
JSON_ENCODING = "utf-8"
PERSISTENT = 2
"""AMQP delivery mode 2: what Celery's default exchange asks for (kombu stores it, Redis ignores it)."""
BODY_ENCODING = "base64"
"""kombu's virtual channels carry the serialized body base64-encoded (Channel.body_encoding)."""
_BODY_CODEC = Base64()


@dataclass(frozen=True)
class QueuedMessage:
    """A message ready to push: LPUSH ``payload`` onto ``queue`` is what kombu's ``_put`` does."""

    queue: str
    """The Redis list of the Celery queue (priority 0: the queue's own name)."""
    payload: bytes


class TaskMessages:
    """Builds the messages of one Celery app (its serializer, its reply_to id, this process as origin)."""

    def __init__(self, app: Celery):
        if app.conf.task_protocol != PROTOCOL:
            raise ValueError(f"task_protocol {app.conf.task_protocol}: only protocol {PROTOCOL} is built here")
        if app.conf.task_serializer != SERIALIZER:
            raise ValueError(f"task_serializer {app.conf.task_serializer}: only {SERIALIZER} is built here")
        self.app = app
        self.origin = anon_nodename()
        self.reply_to = app.thread_oid

    def build(self, task_name: str, task_id: str, args: list[Any], queue: str) -> QueuedMessage:
        """``task_name(*args)`` as task ``task_id``, for the workers of ``queue``."""
        headers, properties, body, _ = self.app.amqp.as_task_v2(
            task_id,
            task_name,
            args=args,
            reply_to=self.reply_to,
            origin=self.origin,
            argsrepr=JOB_REPR,
            kwargsrepr=KWARGS_REPR,
            ignore_result=None,  # as send_task without the option: the task's own setting applies
        )
        message = {
            "body": _BODY_CODEC.encode(orjson.dumps(body)),  # type: ignore[no-untyped-call]  # kombu is untyped
            "content-encoding": JSON_ENCODING,
            "content-type": JSON_CONTENT_TYPE,
            "headers": headers,
            "properties": properties
            | {
                "delivery_mode": PERSISTENT,
                # Celery sends a direct-exchange task on the anonymous exchange, routed by queue name.
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": BODY_ENCODING,
                "delivery_tag": uuid(),
            },
        }
        return QueuedMessage(queue=queue, payload=orjson.dumps(message))
