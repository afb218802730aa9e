"""The autoscaling signal: queue depth and the oldest waiting task's age per queue, on /metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import oldest_waiting_ages
from openpik.routing import DEFAULT_QUEUE, queue_name
from openpik.task_records import TaskRecord, TaskStore, queued_key
from tests.requests import txt2img
from tests.stack import RedisDb, fresh_redis, running_stack, stack_settings, wait_for, write_catalog_with_custom_model

OTHER_GROUP = "autoscale-other"
QUEUED = 3


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = fresh_redis(RedisDb.AUTOSCALE)
    yield client
    client.flushdb()


def test_oldest_age_per_queue_skips_entries_whose_records_expired(redis_client):
    tasks = TaskStore(redis_client, ttl_s=3600)
    now = time.time()
    tasks.create(TaskRecord(task_id="a" * 20, owner="o", action="GenerateTxt2Img", queue="q", created_at=now - 30), {})
    tasks.create(TaskRecord(task_id="b" * 20, owner="o", action="GenerateTxt2Img", queue="q", created_at=now - 10), {})
    redis_client.zadd(queued_key("q"), {"lost" * 5: now - 7200})  # enqueued past the TTL: its record is gone
    assert oldest_waiting_ages(tasks, ["q", "empty"], now) == {"q": pytest.approx(30), "empty": 0.0}
    tasks.mark_started("a" * 20, "q", "w")
    assert oldest_waiting_ages(tasks, ["q"], now) == {"q": pytest.approx(10)}


def scrape(url: str) -> dict[tuple[str, str], float]:
    """The per-queue gauges of one scrape, by metric name and queue."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (sample.name, sample.labels["queue"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in ("openpik_queue_depth", "openpik_queue_oldest_task_age_seconds")
    }


def depth(values: dict, queue: str = DEFAULT_QUEUE) -> float:
    return values[("openpik_queue_depth", queue)]


def age(values: dict, queue: str = DEFAULT_QUEUE) -> float:
    return values[("openpik_queue_oldest_task_age_seconds", queue)]


@pytest.mark.stack
@pytest.mark.models
def test_gauges_show_the_waiting_tasks_and_their_growing_age_until_a_worker_drains_them(
    tiny_catalog_path, tmp_path, redis_client
):
    catalog = write_catalog_with_custom_model(tiny_catalog_path, tmp_path / "catalog.yaml", owner="key-a-public")
    data = yaml.safe_load(catalog.read_text())
    data["main_models"][-1]["group"] = OTHER_GROUP  # a second queue, which stays empty
    catalog.write_text(yaml.safe_dump(data, sort_keys=False))
    env = stack_settings(catalog, tmp_path, RedisDb.AUTOSCALE, progress_interval_s="0")
    with running_stack(env, tmp_path) as stack:  # no worker yet: everything accepted waits
        gateway = stack.gateway
        empty = scrape(gateway.url)
        assert depth(empty) == age(empty) == 0
        for seed in range(QUEUED):
            assert gateway.call(txt2img(Seed=seed, Steps=2))["RetCode"] == 0

        first = scrape(gateway.url)
        assert depth(first) == QUEUED == redis_client.llen(DEFAULT_QUEUE)  # the list KEDA's trigger reads
        assert age(first) > 0
        assert depth(first, queue_name(OTHER_GROUP)) == age(first, queue_name(OTHER_GROUP)) == 0
        wait_for(lambda: age(scrape(gateway.url)) > age(first), 10, message="the oldest task's age to grow")

        stack.start_worker("autoscale")
        drained = wait_for(
            lambda: (values := scrape(gateway.url)) and depth(values) == age(values) == 0 and values,
            180,
            interval=0.5,
            message="the worker to take every waiting task",
        )
        assert redis_client.llen(DEFAULT_QUEUE) == 0 and depth(drained, queue_name(OTHER_GROUP)) == 0
