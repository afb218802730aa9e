"""The Action table: each PICPIK action -> its wire model and the function that serves it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import redis.asyncio
from celery import Celery
from fastapi.concurrency import run_in_threadpool

from api.backgrounds.protocol import RemoveBackgroundRequest, RemoveBackgroundsInBatchRequest
from api.backgrounds.serving import translate_batch, translate_remove_background
from api.catalog import serving as catalog_serving
from api.catalog.protocol import ListControlNetProcessorRequest, ListControlNetsRequest, ListModelsRequest
from api.generate.protocol import (
    GenerateImagesRequest,
    GenerateImg2ImgRequest,
    GenerateResponse,
    GenerateTxt2ImgRequest,
)
from api.generate.serving import Submission, translate_images, translate_legacy
from api.generate.submission import Submitter
from api.inpainting.protocol import GenerateBackgroundsRequest, RemoveContentsRequest
from api.inpainting.serving import translate_backgrounds, translate_remove_contents
from api.protocol_base import Envelope, SignedRequest
from api.queries import serving as query_serving
from api.queries.protocol import (
    CancelTaskRequest,
    CancelTaskResponse,
    GetGenerateTaskDetailRequest,
    GetGenerateTaskDetailResponse,
    ListGenerateTaskDetailRequest,
    ListGenerateTaskDetailResponse,
    ListTasksDetailsRequest,
    ListTasksDetailsResponse,
)
from models_registry.catalog import Catalog
from openpik.callbacks import notify_task_ended
from openpik.keys import Bucket
from openpik.results import ResultStore
from openpik.settings import Settings
from openpik.task_records import CancelOutcome, TaskStore

ACTION_PATH = "/"
"""Where every PICPIK action is posted (api.api_router.ActionEndpoint serves it)."""


def is_action_request(scope: Mapping[str, Any]) -> bool:
    return bool(scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == ACTION_PATH)


@dataclass
class Services:
    """What the actions need, built once at start-up (api.app)."""

    settings: Settings
    catalog: Catalog
    tasks: TaskStore
    results: ResultStore
    submitter: Submitter
    loop_redis: redis.asyncio.Redis
    """The asyncio client of what runs on the event loop: submissions (the submitter's own),
    rate limits, event streams."""
    publisher: Celery | None = None
    """The gateway's Celery app (api.generate.submission.celery_publisher): what it hands
    openpik.callbacks.notify_task_ended when it ends a task itself (CancelTask of a queued task)."""


Request = TypeVar("Request", bound=SignedRequest)
Body = dict[str, Any]
Translate = Callable[[Request, Catalog, str, Settings], Submission]


ON_LOOP_MAX_BODY_BYTES = 64 * 1024
"""A generate request's images are decoded on the event loop up to this body size (a few
hundred microseconds at most), in a thread above it, so a large image never holds the loop."""


@dataclass(frozen=True)
class Submit(Generic[Request]):
    """A generate action: translate (decoding the images), then submit on the event loop."""

    translate: Translate[Request]

    async def __call__(self, services: Services, request: Request, owner: str, body: Body, size: int) -> Envelope:
        args = (request, services.catalog, owner, services.settings)
        small = size <= ON_LOOP_MAX_BODY_BYTES
        submission = self.translate(*args) if small else await run_in_threadpool(self.translate, *args)
        task_id = await services.submitter.submit(submission, request.Action, owner, body)
        return GenerateResponse(TaskUID=task_id)


@dataclass(frozen=True)
class Action(Generic[Request]):
    request: type[Request]
    serve: Callable[[Services, Request, str, Body], Envelope] | Submit[Request]
    """(services, the validated wire request, the caller's PublicKey, the raw body) -> the answer:
    a Submit (generate actions), or a function that reads Redis with the blocking client (queries)."""
    bucket: Bucket
    """Which of the caller's rate limits the action counts against (api.rate_limit)."""

    async def answer(self, services: Services, request: Request, owner: str, body: Body, size: int) -> Envelope:
        """``size``: the body's bytes. A query runs in one thread hop; a submission on the loop."""
        if isinstance(self.serve, Submit):
            return await self.serve(services, request, owner, body, size)
        return await run_in_threadpool(self.serve, services, request, owner, body)


def _get_task(services: Services, request: GetGenerateTaskDetailRequest, owner: str, body: Body) -> Envelope:
    (record,) = query_serving.own_tasks(services.tasks, [request.TaskUID], owner)
    detail = query_serving.legacy_detail(services.tasks, record, services.settings.public_url)
    return GetGenerateTaskDetailResponse(TaskUID=record.task_id, **detail)


def _list_legacy(services: Services, request: ListGenerateTaskDetailRequest, owner: str, body: Body) -> Envelope:
    records = query_serving.own_tasks(services.tasks, request.TaskUIDs, owner)
    public_url = services.settings.public_url
    return ListGenerateTaskDetailResponse(
        TaskDetailList=[query_serving.legacy_list_item(services.tasks, r, public_url) for r in records]
    )


def _list_tasks(services: Services, request: ListTasksDetailsRequest, owner: str, body: Body) -> Envelope:
    records = query_serving.own_tasks(services.tasks, request.TaskUIDList, owner)
    public_url = services.settings.public_url
    return ListTasksDetailsResponse(
        TaskDetailList=[query_serving.task_detail(services.tasks, r, public_url) for r in records]
    )


def _cancel_task(services: Services, request: CancelTaskRequest, owner: str, body: Body) -> Envelope:
    outcome, record = query_serving.cancel(services.tasks, request.TaskUID, owner)
    if outcome == CancelOutcome.CANCELLED and services.publisher is not None:
        notify_task_ended(services.tasks, services.publisher, record.task_id)  # ended here, not by a worker
    return CancelTaskResponse(TaskStatus=record.status.value, Progress=record.progress)


def _list_models(services: Services, request: ListModelsRequest, owner: str, body: Body) -> Envelope:
    return catalog_serving.list_models(services.catalog, owner)


def _list_controlnets(services: Services, request: ListControlNetsRequest, owner: str, body: Body) -> Envelope:
    return catalog_serving.list_controlnets(services.catalog, owner)


def _list_processors(services: Services, request: ListControlNetProcessorRequest, owner: str, body: Body) -> Envelope:
    return catalog_serving.list_processors(services.catalog, owner)


ACTIONS: dict[str, Action[Any]] = {
    "GenerateImg2Img": Action(GenerateImg2ImgRequest, Submit(translate_legacy), Bucket.GENERATE),
    "GenerateTxt2Img": Action(GenerateTxt2ImgRequest, Submit(translate_legacy), Bucket.GENERATE),
    "GenerateImages": Action(GenerateImagesRequest, Submit(translate_images), Bucket.GENERATE),
    "RemoveBackground": Action(RemoveBackgroundRequest, Submit(translate_remove_background), Bucket.GENERATE),
    "RemoveBackgroundsInBatch": Action(RemoveBackgroundsInBatchRequest, Submit(translate_batch), Bucket.GENERATE),
    "RemoveContents": Action(RemoveContentsRequest, Submit(translate_remove_contents), Bucket.GENERATE),
    "GenerateBackgrounds": Action(GenerateBackgroundsRequest, Submit(translate_backgrounds), Bucket.GENERATE),
    "GetGenerateTaskDetail": Action(GetGenerateTaskDetailRequest, _get_task, Bucket.QUERY),
    "ListGenerateTaskDetail": Action(ListGenerateTaskDetailRequest, _list_legacy, Bucket.QUERY),
    "ListTasksDetails": Action(ListTasksDetailsRequest, _list_tasks, Bucket.QUERY),
    "CancelTask": Action(CancelTaskRequest, _cancel_task, Bucket.QUERY),
    "ListModels": Action(ListModelsRequest, _list_models, Bucket.QUERY),
    "ListControlNets": Action(ListControlNetsRequest, _list_controlnets, Bucket.QUERY),
    "ListControlNetProcessor": Action(ListControlNetProcessorRequest, _list_processors, Bucket.QUERY),
}
