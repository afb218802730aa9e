"""CancelTask (spec section 11) on the real stack: gateway, Celery worker, tiny models, and a
redis-server of this suite's own.

A queued task ends at once and a worker started afterwards skips it (the record decides, not the
queue); a running task stops at its next denoising step; an ended task is unchanged; unknown
and foreign TaskUIDs get 250. How soon a running task stops is measured in steps, from the
progress the cancel answer reports and the progress the task ended with, never in seconds.
"""

from __future__ import annotations

import pytest
import redis

from openpik.routing import DEFAULT_QUEUE
from openpik.task_records import TaskStore
from openpik.vocabulary import TaskStatus
from tests.requests import txt2img
from tests.stack import KEY_A, KEY_B, Gateway, Key, own_redis_stack, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.models]

STEPS = 60
STEP_PROGRESS = 100 / STEPS
CANCELLED = 1004
NOT_FOUND = 250


@pytest.fixture(scope="module")
def stack(tiny_catalog_path, tmp_path_factory):
    """A gateway on a redis-server of its own (the shared one's databases are all taken), no worker yet."""
    with own_redis_stack(tiny_catalog_path, tmp_path_factory.mktemp("cancel"), progress_interval_s="0") as (running, _):
        yield running


@pytest.fixture(scope="module")
def worker(stack):
    return stack.start_worker("cancel")


@pytest.fixture(scope="module")
def store(stack) -> TaskStore:
    return TaskStore(redis.Redis.from_url(stack.gateway.env["OPENPIK_REDIS_URL"]), ttl_s=24 * 3600)


def cancel(gateway: Gateway, task: str, key: Key = KEY_A) -> dict:
    return gateway.call({"Action": "CancelTask", "TaskUID": task}, key)


def detail(gateway: Gateway, task: str) -> dict:
    return gateway.call({"Action": "GetGenerateTaskDetail", "TaskUID": task})


def wait_ended(gateway: Gateway, task: str) -> dict:
    return wait_for(
        lambda: (d := detail(gateway, task))["TaskStatus"] in ("Finished", "Error") and d,
        120,
        interval=0.05,
        message=f"task {task} to end",
    )


def test_a_queued_task_ends_at_once_and_a_worker_started_later_skips_it(stack, store, request):
    assert not stack.workers, "runs first in this module: no worker may take the task"
    gateway = stack.gateway
    task = gateway.call(txt2img(Steps=4))["TaskUID"]
    assert detail(gateway, task)["TaskStatus"] == "Queuing"
    counts = store.count_by_status()

    answer = cancel(gateway, task)

    assert answer["RetCode"] == 0 and answer["TaskStatus"] == "Error"
    ended = detail(gateway, task)
    assert (ended["TaskStatus"], ended["TaskErrorCode"], ended["FinalPictureUrls"]) == ("Error", CANCELLED, [])
    assert ended["TaskErrorMsg"] and ended["QueuePosition"] is None
    assert store.queue_depth(DEFAULT_QUEUE) == 0 and store.queued_for(KEY_A.public) == 0
    now = store.count_by_status()
    assert now[TaskStatus.QUEUING] == counts[TaskStatus.QUEUING] - 1
    assert now[TaskStatus.ERROR] == counts[TaskStatus.ERROR] + 1
    assert cancel(gateway, task) == answer  # ended now: a second request changes nothing

    started = request.getfixturevalue("worker")  # the Celery message is still queued: it gets it
    wait_for(lambda: f"task {task} skipped" in started.log.read_text(), 120, message="the worker to skip the task")
    record = store.get(task)
    assert record is not None and record.status == TaskStatus.ERROR and record.error_code == CANCELLED
    assert record.attempts == 0 and record.worker == "" and record.results == []
    assert not (stack.log_dir / "results" / task).exists()


def test_a_running_task_stops_within_two_steps_and_the_worker_serves_the_next(stack, worker):
    gateway = stack.gateway
    task = gateway.call(txt2img(Steps=STEPS, Seed=11))["TaskUID"]
    wait_for(lambda: detail(gateway, task)["Progress"] >= 5, 120, interval=0.01, message="a few steps done")

    answer = cancel(gateway, task)

    assert answer["RetCode"] == 0 and answer["TaskStatus"] == "Running", answer
    ended = wait_ended(gateway, task)
    assert (ended["TaskStatus"], ended["TaskErrorCode"], ended["FinalPictureUrls"]) == ("Error", CANCELLED, [])
    # The worker checks at every step, before it writes that step's progress: at most the step
    # under way when the request arrived and the one after it are counted.
    assert answer["Progress"] <= ended["Progress"] <= answer["Progress"] + 2 * STEP_PROGRESS
    assert ended["Progress"] < 100
    assert not (stack.log_dir / "results" / task).exists()

    following = wait_ended(gateway, gateway.call(txt2img(Steps=4, Seed=12))["TaskUID"])
    assert following["TaskStatus"] == "Finished" and len(following["FinalPictureUrls"]) == 1


def test_an_ended_task_is_unchanged(stack, worker):
    gateway = stack.gateway
    task = gateway.call(txt2img(Steps=4, Seed=13))["TaskUID"]
    finished = wait_ended(gateway, task)
    assert finished["TaskStatus"] == "Finished"

    answer = cancel(gateway, task)

    assert (answer["RetCode"], answer["TaskStatus"], answer["Progress"]) == (0, "Finished", 100)
    assert detail(gateway, task) == finished


def test_another_key_s_task_and_an_unknown_one_are_not_found(stack, store, worker):
    gateway = stack.gateway
    task = gateway.call(txt2img(Steps=8, Seed=14))["TaskUID"]

    foreign = cancel(gateway, task, KEY_B)
    unknown = cancel(gateway, "0" * 20)

    assert foreign["RetCode"] == unknown["RetCode"] == NOT_FOUND
    assert foreign["Message"].replace(task, "?") == unknown["Message"].replace("0" * 20, "?")
    record = store.get(task)
    assert record is not None and record.cancel_requested == 0  # the foreign request changed nothing
    assert wait_ended(gateway, task)["TaskStatus"] == "Finished"
