"""Task records -> the three query shapes, and the result files. A key sees only its own tasks.

A record names its images; the URLs are built here, from the answering gateway's
OPENPIK_PUBLIC_URL, so every gateway hands out URLs that lead to itself."""

from __future__ import annotations

from typing import Any

from api.errors import TaskNotFound
from api.queries.protocol import LegacyListItem, LegacyTaskDetail
from openpik.results import ResultStore
from openpik.routing import result_name
from openpik.task_details import TaskDetail, extensions, result_urls
from openpik.task_details import task_detail as shared_task_detail
from openpik.task_records import CancelOutcome, TaskRecord, TaskStore
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


def _queue_position(tasks: TaskStore, record: TaskRecord) -> int | None:
    return tasks.queue_position(record) if record.status == TaskStatus.QUEUING else None


def legacy_detail(tasks: TaskStore, record: TaskRecord, public_url: str) -> dict[str, Any]:
    return LegacyTaskDetail(
        TaskStatus=record.status.value,
        FinalPictureUrls=result_urls(record, public_url),
        TaskErrorMsg=record.error_message,
        TaskErrorCode=record.error_code,
        **extensions(record, _queue_position(tasks, record)),
    ).model_dump()


def legacy_list_item(tasks: TaskStore, record: TaskRecord, public_url: str) -> LegacyListItem:
    return LegacyListItem(TaskUid=record.task_id, **legacy_detail(tasks, record, public_url))


def task_detail(tasks: TaskStore, record: TaskRecord, public_url: str) -> TaskDetail:
    """The ListTasksDetails item; the callback workers send the same (openpik.task_details)."""
    return shared_task_detail(record, public_url, _queue_position(tasks, record))


def result_file(tasks: TaskStore, results: ResultStore, task_id: str, index: int) -> bytes | None:
    """A result image, only while its task record lives and lists it: an expired task's images
    are never served, even in the minutes before the sweep deletes them."""
    name = result_name(task_id, index)
    names = tasks.result_names(task_id)
    return results.get(name) if names is not None and name in names else None


def cancel(tasks: TaskStore, task_id: str, owner: str) -> tuple[CancelOutcome, TaskRecord]:
    """CancelTask on the caller's own task (TaskStore.cancel); TaskNotFound as for a query."""
    (record,) = own_tasks(tasks, [task_id], owner)
    cancelled = tasks.cancel(record)
    if cancelled is None:  # expired between the two calls
        raise TaskNotFound(f"Task not found: {task_id}")
    return cancelled
