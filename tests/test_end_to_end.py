"""The whole stack as deployed: uvicorn gateway, Celery workers, Redis, result store.

Real processes throughout; faults are real too (kill -9 of worker children, whole workers,
Redis). Each scenario asserts what a client sees through the signed API.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import redis

from openpik.routing import DEFAULT_QUEUE, queue_name, result_name
from openpik.task_records import record_key
from tests.requests import PNG, img2img, txt2img
from tests.stack import (
    KEY_A,
    Gateway,
    RedisDb,
    RedisServer,
    download_image,
    redis_url,
    running_stack,
    signed,
    stack_settings,
    wait_for,
    write_catalog_with_custom_model,
)

pytestmark = [pytest.mark.stack, pytest.mark.models]

VISIBILITY_TIMEOUT_S = 60  # the shared stack: no redelivery while a busy machine is merely slow
FAULT_VISIBILITY_TIMEOUT_S = 20  # fault scenarios wait for it, so shorter


@pytest.fixture(scope="module")
def stack_env(tiny_catalog_path, tmp_path_factory):
    """Settings shared by the gateway and the workers of one stack."""
    tmp = tmp_path_factory.mktemp("stack")
    catalog = write_catalog_with_custom_model(tiny_catalog_path, tmp / "catalog.yaml", KEY_A.public)
    text = catalog.read_text().replace("model_code: tiny-sd15-b\n", "model_code: tiny-sd15-b\n  group: second\n")
    catalog.write_text(text)
    return stack_settings(
        catalog, tmp, RedisDb.END_TO_END, visibility_timeout_s=str(VISIBILITY_TIMEOUT_S), progress_interval_s="0"
    ), tmp


@pytest.fixture(scope="module")
def stack(stack_env):
    env, tmp = stack_env
    with running_stack(env, tmp) as running:
        yield running.gateway, running.start_worker


def detail(gateway: Gateway, task: str) -> dict:
    return gateway.call({"Action": "GetGenerateTaskDetail", "TaskUID": task})


def wait_finished(gateway: Gateway, task: str, timeout: float = 120) -> dict:
    return wait_for(
        lambda: (d := detail(gateway, task))["TaskStatus"] in ("Finished", "Error") and d,
        timeout,
        message=f"task {task} to end",
    )


def record(task: str, url: str = redis_url(RedisDb.END_TO_END)) -> dict:
    raw = redis.Redis.from_url(url).hgetall(record_key(task))
    return {k.decode(): v.decode() for k, v in raw.items()}


def download(url: str) -> np.ndarray:
    return np.asarray(download_image(url))


def test_picpik_flow_img2img_with_preset_and_lora_reproduces_from_its_seed(stack):
    gateway, start_worker = stack
    start_worker("main")
    preset = {"ControlPreSetId": 1, "ControlWeight": 1.0, "ControlNetImg": PNG}
    body = img2img(
        BatchSize=2,
        Width=72,
        Height=64,
        Steps=6,
        Seed=-1,
        SubModelIds=[1],
        SubModelParams=[{"SubModelId": 1, "ControlWeight": 0.8}],
        EnableControlNet=True,
        ControlNetParams=[preset],
    )
    task = gateway.call(body)["TaskUID"]
    done = wait_finished(gateway, task)
    assert done["TaskStatus"] == "Finished" and done["TaskErrorCode"] == 0 and done["Progress"] == 100
    images = [download(url) for url in done["FinalPictureUrls"]]
    assert len(images) == 2 and all(image.shape == (64, 72, 3) for image in images)
    assert all(url.startswith(gateway.url + f"/results/{task}/") for url in done["FinalPictureUrls"])
    listed = gateway.call({"Action": "ListTasksDetails", "TaskUIDList": [task]})["TaskDetailList"][0]
    assert listed["Status"] == "Finished" and listed["Seeds"] == [listed["Seed"], listed["Seed"] + 1]
    again = wait_finished(gateway, gateway.call(body | {"Seed": listed["Seed"]})["TaskUID"])
    assert np.array_equal(download(again["FinalPictureUrls"][0]), images[0])
    assert np.array_equal(download(again["FinalPictureUrls"][1]), images[1])


def test_progress_is_seen_strictly_between_0_and_100(stack):
    gateway, _ = stack
    task = gateway.call(txt2img(Steps=80))["TaskUID"]
    seen = set()
    while (d := detail(gateway, task))["TaskStatus"] not in ("Finished", "Error"):
        seen.add(d["Progress"])
        time.sleep(0.02)
    assert d["TaskStatus"] == "Finished" and any(0 < p < 100 for p in seen), seen


def test_a_worker_takes_only_its_groups_models_and_two_workers_share_tasks(stack):
    gateway, start_worker = stack
    second_model = gateway.call(txt2img(MainModelId=2, Steps=2))["TaskUID"]
    time.sleep(3)
    assert detail(gateway, second_model)["TaskStatus"] == "Queuing"  # the running worker serves openpik.default
    start_worker("second", queues=queue_name("second"))
    assert wait_finished(gateway, second_model)["TaskStatus"] == "Finished"
    assert record(second_model)["worker"].startswith("second@")

    start_worker("helper", queues=DEFAULT_QUEUE)
    tasks = [gateway.call(txt2img(Steps=10, Seed=i))["TaskUID"] for i in range(10)]
    for task in tasks:
        assert wait_finished(gateway, task)["TaskStatus"] == "Finished"
    workers = {record(task)["worker"].split("@")[0] for task in tasks}
    assert workers == {"main", "helper"}


FAULTS_URL = redis_url(RedisDb.FAULTS)  # fault scenarios run their own gateway and workers, away from the shared stack


@pytest.fixture
def fault_env(stack_env):
    """The stack's settings on RedisDb.FAULTS (which running_stack empties) with a shorter visibility timeout."""
    env, _ = stack_env
    return env | {"OPENPIK_REDIS_URL": FAULTS_URL, "OPENPIK_VISIBILITY_TIMEOUT_S": str(FAULT_VISIBILITY_TIMEOUT_S)}


def fault_record(task: str) -> dict:
    return record(task, FAULTS_URL)


def _wait_running(task: str) -> str:
    return wait_for(
        lambda: fault_record(task).get("status") == "Running" and fault_record(task)["worker"],
        60,
        interval=0.02,
        message="the task to start",
    )


def test_kill_9_of_the_worker_child_mid_task_the_task_still_finishes(fault_env, tmp_path):
    with running_stack(fault_env, tmp_path, worker="lone") as stack:
        gateway, worker = stack.gateway, stack.worker
        task = gateway.call(txt2img(Steps=80))["TaskUID"]
        _wait_running(task)
        wait_for(lambda: int(fault_record(task)["progress"]) > 0, 60, interval=0.02, message="progress")
        for pid in worker.child_pids():
            os.kill(pid, signal.SIGKILL)
        done = wait_finished(gateway, task)
        assert done["TaskStatus"] == "Finished"
        assert fault_record(task)["attempts"] == "2"


def test_a_task_that_kills_its_worker_every_time_ends_as_error_after_3_attempts(fault_env, tmp_path):
    client = redis.Redis.from_url(FAULTS_URL)
    with running_stack(fault_env, tmp_path, worker="victim") as stack:
        gateway, worker = stack.gateway, stack.worker
        task = gateway.call(txt2img(Steps=80))["TaskUID"]
        for attempt in (1, 2, 3):
            wait_for(
                lambda attempt=attempt: (
                    fault_record(task).get("attempts") == str(attempt) and fault_record(task)["status"] == "Running"
                ),
                60,
                interval=0.02,
                message=f"attempt {attempt}",
            )
            for pid in worker.child_pids():
                os.kill(pid, signal.SIGKILL)
        done = wait_finished(gateway, task)
        assert done["TaskStatus"] == "Error" and done["TaskErrorCode"] == 1099
        assert "3 times" in done["TaskErrorMsg"]
        wait_for(
            lambda: client.llen(DEFAULT_QUEUE) == 0 and not client.hlen("unacked"), 30, message="the queue to drain"
        )


def test_kill_9_of_a_whole_worker_another_worker_finishes_after_the_visibility_timeout(fault_env, tmp_path):
    with running_stack(fault_env, tmp_path, worker="first") as stack:
        gateway, first = stack.gateway, stack.worker
        task = gateway.call(txt2img(Steps=80))["TaskUID"]
        _wait_running(task)
        first.kill()
        killed_at = time.monotonic()
        stack.start_worker("second")
        done = wait_finished(gateway, task, timeout=120)
        assert done["TaskStatus"] == "Finished" and fault_record(task)["worker"].startswith("second@")
        assert time.monotonic() - killed_at >= FAULT_VISIBILITY_TIMEOUT_S - 1


def test_redis_killed_and_restarted_on_its_aof_loses_no_accepted_task(stack_env, tmp_path):
    env, _ = stack_env
    server = RedisServer(tmp_path / "redis").start()
    env = env | {"OPENPIK_REDIS_URL": server.url}
    accepted, refused = [], []
    try:
        with running_stack(env, tmp_path, worker="durable") as stack:
            gateway = stack.gateway
            for i in range(24):
                if i == 8:
                    server.kill()
                if i == 16:
                    server.start()
                started = time.monotonic()
                response = gateway.post(signed(txt2img(Steps=3, Seed=i)))
                assert response.status_code in (200, 503) and time.monotonic() - started < 1.5
                answer = response.json()
                (accepted if answer["RetCode"] == 0 else refused).append(answer)
                if answer["RetCode"]:
                    assert answer["RetCode"] == 150 and response.status_code == 503
            assert refused and len(accepted) >= 16
            for answer in accepted:
                assert wait_finished(gateway, answer["TaskUID"], timeout=180)["TaskStatus"] == "Finished"
    finally:
        server.stop()


def test_results_in_s3_compatible_storage_are_written_and_served(fault_env, tmp_path):
    import boto3
    from moto.server import ThreadedMotoServer

    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    s3.start()
    host, port = s3.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    credentials = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    client.create_bucket(Bucket="results")
    s3_env = (
        fault_env
        | credentials
        | {
            "OPENPIK_RESULT_STORE": "s3",
            "OPENPIK_S3_BUCKET": "results",
            "OPENPIK_S3_ENDPOINT_URL": endpoint,
            "OPENPIK_RESULTS_DIR": str(tmp_path / "none"),
        }
    )
    try:
        with running_stack(s3_env, tmp_path, worker="s3") as stack:
            gateway = stack.gateway
            task = gateway.call(txt2img(Steps=3, BatchSize=2))["TaskUID"]
            done = wait_finished(gateway, task)
            assert done["TaskStatus"] == "Finished"
            keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="results")["Contents"])
            assert keys == [result_name(task, 0), result_name(task, 1)]
            (rule,) = client.get_bucket_lifecycle_configuration(Bucket="results")["Rules"]  # the gateway's, at start
            assert rule["ID"] == "openpik-result-expiry" and rule["Expiration"] == {"Days": 1}  # a 24-hour TTL
            assert download(done["FinalPictureUrls"][1]).shape == (64, 64, 3)
            assert not (tmp_path / "none").exists()
    finally:
        s3.stop()
