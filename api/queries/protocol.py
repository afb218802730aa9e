"""Wire models of the task queries (spec section 4), odd spellings included.

The ListTasksDetails item (TaskDetail) and our extensions live in openpik.task_details: the
callback workers send the same item.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from api.protocol_base import Envelope, SignedRequest
from openpik.task_details import TaskDetail, TaskExtensions

TaskUid = str
MAX_TASKS_PER_QUERY = 100


class GetGenerateTaskDetailRequest(SignedRequest):
    Action: Literal["GetGenerateTaskDetail"]
    TaskUID: TaskUid = Field(max_length=64)


class ListGenerateTaskDetailRequest(SignedRequest):
    Action: Literal["ListGenerateTaskDetail"]
    TaskUIDs: list[TaskUid] = Field(min_length=1, max_length=MAX_TASKS_PER_QUERY)


class ListTasksDetailsRequest(SignedRequest):
    Action: Literal["ListTasksDetails"]
    TaskUIDList: list[TaskUid] = Field(min_length=1, max_length=MAX_TASKS_PER_QUERY)


class LegacyTaskDetail(TaskExtensions):
    TaskType: str = "TaskGeneratePicture"
    TaskStatus: str
    FinalPictureUrls: list[str]
    TaskErrorMsg: str
    TaskErrorCode: int


class GetGenerateTaskDetailResponse(Envelope, LegacyTaskDetail):
    TaskUID: TaskUid


class LegacyListItem(LegacyTaskDetail):
    TaskUid: TaskUid  # sic: the documented spelling


class ListGenerateTaskDetailResponse(Envelope):
    TaskDetailList: list[LegacyListItem]


class ListTasksDetailsResponse(Envelope):
    TaskDetailList: list[TaskDetail]


class CancelTaskRequest(SignedRequest):
    """Ours (spec section 11): stop a task; the answer is its status after the request."""

    Action: Literal["CancelTask"]
    TaskUID: TaskUid = Field(max_length=64)


class CancelTaskResponse(Envelope):
    TaskStatus: str
    """Error for a task that was queued (it ended now, TaskErrorCode 1004); Running for one that
    stops at its next step; a task that had already ended keeps its status."""
    Progress: int = 0
    """Where the task stood when the request arrived."""


QUERY_REQUESTS = (
    GetGenerateTaskDetailRequest,
    ListGenerateTaskDetailRequest,
    ListTasksDetailsRequest,
    CancelTaskRequest,
)
