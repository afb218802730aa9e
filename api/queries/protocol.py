"""Wire models of the task queries (spec section 4), odd spellings included."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from api.protocol_base import Envelope, SignedRequest

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


class _Extensions(BaseModel):
    """Ours; extra fields are harmless to existing clients."""

    Progress: int = 0
    Seeds: list[int] = []
    QueuePosition: int | None = None
    Note: str = ""
    """What the client should know about how its task ran, e.g. that a prompt needed a translation
    this server has no translator for and was passed unchanged; "" when nothing."""


class LegacyTaskDetail(_Extensions):
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


class TaskDetail(_Extensions):
    TaskUID: TaskUid
    Action: str
    Status: str
    ImgList: list[str]
    Seed: int
    TxtList: list[str] = []
    ConsumeApiPoint: int = 0
    ErrorCode: int
    ErrorMassage: str  # sic: the documented spelling
    ErrorMessage: str


class ListTasksDetailsResponse(Envelope):
    TaskDetailList: list[TaskDetail]


QUERY_REQUESTS = (GetGenerateTaskDetailRequest, ListGenerateTaskDetailRequest, ListTasksDetailsRequest)
