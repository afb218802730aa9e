"""A task record as the queries show it: the ListTasksDetails item, built in one place.

The gateway answers queries with it and the callback workers POST it as a webhook's body, so
both import it from here (worker/ never imports api/). URLs are built from the caller's
OPENPIK_PUBLIC_URL when the item is built, never stored (openpik.routing.result_url).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from openpik.routing import result_url
from openpik.task_records import TaskRecord


class TaskExtensions(BaseModel):
    """Ours; extra fields are harmless to existing clients."""

    Progress: int = 0
    Seeds: list[int] = []
    QueuePosition: int | None = None
    Note: str = ""
    """What the client should know about how its task ran, e.g. that a prompt needed a translation
    this server has no translator for and was passed unchanged; "" when nothing."""
    CallbackStatus: str | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="pending, delivered or failed; only on tasks submitted with a CallbackUrl",
    )


class TaskDetail(TaskExtensions):
    TaskUID: str
    Action: str
    Status: str
    ImgList: list[str]
    Seed: int
    TxtList: list[str] = []
    ConsumeApiPoint: int = 0
    ErrorCode: int
    ErrorMassage: str  # sic: the documented spelling
    ErrorMessage: str


def extensions(record: TaskRecord, queue_position: int | None) -> dict[str, Any]:
    """Our fields of every query shape; CallbackStatus only where the task has a callback."""
    return dict(
        Progress=record.progress,
        Seeds=record.seeds,
        QueuePosition=queue_position,
        Note=record.note,
        CallbackStatus=record.callback_status or None,
    )


def result_urls(record: TaskRecord, public_url: str) -> list[str]:
    """The record's images as absolute URLs under ``public_url``."""
    return [result_url(public_url, name) for name in record.results]


def task_detail(record: TaskRecord, public_url: str, queue_position: int | None) -> TaskDetail:
    """The ListTasksDetails item of ``record``; ``queue_position`` only while it waits."""
    return TaskDetail(
        TaskUID=record.task_id,
        Action=record.action,
        Status=record.status.value,
        ImgList=result_urls(record, public_url),
        Seed=record.seeds[0] if record.seeds else -1,
        ErrorCode=record.error_code,
        ErrorMassage=record.error_message,
        ErrorMessage=record.error_message,
        **extensions(record, queue_position),
    )
