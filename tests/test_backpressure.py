"""Backpressure and fairness: a deep queue sheds load (150), one key's burst is capped (180)."""

from __future__ import annotations

import pytest

from openpik.routing import DEFAULT_QUEUE
from openpik.task_records import idempotency_key
from tests.requests import txt2img
from tests.stack import KEY_A, KEY_B, RedisDb, fresh_redis, redis_fixture, running_stack, stack_settings

pytestmark = [pytest.mark.stack, pytest.mark.models]

redis_client = redis_fixture(RedisDb.BACKPRESSURE)


@pytest.fixture(scope="module")
def gateway(tiny_catalog_path, tmp_path_factory, redis_client):
    tmp = tmp_path_factory.mktemp("backpressure")
    env = stack_settings(tiny_catalog_path, tmp, RedisDb.BACKPRESSURE, max_queue_depth="5", max_queued_per_key="3")
    with running_stack(env, tmp) as stack:  # no worker: everything accepted stays queued
        yield stack.gateway


def test_one_keys_burst_is_capped_others_still_get_in_then_the_queue_sheds_load(gateway, redis_client):
    accepted_a = [gateway.call(txt2img(Seed=i), key=KEY_A) for i in range(3)]
    assert [a["RetCode"] for a in accepted_a] == [0, 0, 0]
    fourth = gateway.call(txt2img(Seed=3), key=KEY_A)
    assert fourth["RetCode"] == 180 and "3 tasks waiting" in fourth["Message"]

    assert [gateway.call(txt2img(Seed=i), key=KEY_B)["RetCode"] for i in range(2)] == [0, 0]
    queued = redis_client.llen(DEFAULT_QUEUE)
    shed = gateway.call(txt2img(Seed=9), key=KEY_B)
    assert shed["RetCode"] == 150 and shed["Message"]
    assert redis_client.llen(DEFAULT_QUEUE) == queued == 5

    detail = gateway.call({"Action": "GetGenerateTaskDetail", "TaskUID": accepted_a[0]["TaskUID"]}, key=KEY_A)
    assert detail["RetCode"] == 0 and detail["TaskStatus"] == "Queuing" and detail["QueuePosition"] == 1
    assert gateway.call({"Action": "ListModels"}, key=KEY_B)["RetCode"] == 0


def test_a_replayed_request_uuid_still_answers_its_task_when_the_key_is_at_its_limit(gateway, redis_client):
    fresh_redis(RedisDb.BACKPRESSURE)
    first = gateway.call(txt2img(request_uuid="replay-at-limit"), key=KEY_A)
    for i in range(2):
        gateway.call(txt2img(Seed=100 + i), key=KEY_A)
    assert gateway.call(txt2img(request_uuid="replay-at-limit"), key=KEY_A)["TaskUID"] == first["TaskUID"]
    refused = gateway.call(txt2img(request_uuid="over-limit"), key=KEY_A)
    assert refused["RetCode"] == 180
    assert not redis_client.exists(idempotency_key(KEY_A.public, "over-limit"))
