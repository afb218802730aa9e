"""Task records -> the three query shapes, and the result files. A key sees only its own tasks.

A record names its images; the URLs are built here, from the answering gateway's
OPENPIK_PUBLIC_URL, so every gateway hands out URLs that lead to itself."""

from __future__ import annotations

from typing import Any

from api.errors import TaskNotFound
from api.queries.protocol import LegacyListItem, LegacyTaskDetail, TaskDetail
from openpik.results import ResultStore
from openpik.routing import result_name, result_url
from openpik.task_records import TaskRecord, TaskStore
from openpik.vocabulary import TaskStatus


def own_tasks(tasks: TaskStore, task_ids: list[str], owner: str) -> list[TaskRecord]:
    """The caller's records among ``task_ids``, in order; unknown and foreign ids alike are left out.

    When none is left the answer is TaskNotFound, the same for unknown and foreign ids, so a key
    cannot probe which ids exist.
    """
    found = [r for r in tasks.get_many(task_ids) if r is not None and r.owner == owner]
    if not found:
        raise TaskNotFound(f"Task not found: {', '.join(task_ids[:3])}{' ...' if len(task_ids) > 3 else ''}")
    return found


def _extensions(tasks: TaskStore, record: TaskRecord) -> dict[str, Any]:
    queued = record.status == TaskStatus.QUEUING
    return dict(
        Progress=record.progress,
        Seeds=record.seeds,
        QueuePosition=tasks.queue_position(record) if queued else None,
        Note=record.note,
    )


def urls(record: TaskRecord, public_url: str) -> list[str]:
    """The record's images as absolute URLs under ``public_url``."""
    return [result_url(public_url, name) for name in record.results]


def legacy_detail(tasks: TaskStore, record: TaskRecord, public_url: str) -> dict[str, Any]:
    return LegacyTaskDetail(
        TaskStatus=record.status.value,
        FinalPictureUrls=urls(record, public_url),
        TaskErrorMsg=record.error_message,
        TaskErrorCode=record.error_code,
        **_extensions(tasks, record),
    ).model_dump()


def legacy_list_item(tasks: TaskStore, record: TaskRecord, public_url: str) -> LegacyListItem:
    return LegacyListItem(TaskUid=record.task_id, **legacy_detail(tasks, record, public_url))


def task_detail(tasks: TaskStore, record: TaskRecord, public_url: str) -> TaskDetail:
    return TaskDetail(
        TaskUID=record.task_id,
        Action=record.action,
        Status=record.status.value,
        ImgList=urls(record, public_url),
        Seed=record.seeds[0] if record.seeds else -1,
        ErrorCode=record.error_code,
        ErrorMassage=record.error_message,
        ErrorMessage=record.error_message,
        **_extensions(tasks, record),
    )


def result_file(tasks: TaskStore, results: ResultStore, task_id: str, index: int) -> bytes | None:
    """A result image, only while its task record lives and lists it: an expired task's images
    are never served, even in the minutes before the sweep deletes them."""
    name = result_name(task_id, index)
    names = tasks.result_names(task_id)
    return results.get(name) if names is not None and name in names else None
