"""Prometheus metrics and JSON logs, seen as an operator sees them: scraped over HTTP, read from
the processes' output. A real gateway and a real worker (with its prefork child) on the tiny models.
"""

from __future__ import annotations

import json
import logging
import sys
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from openpik.logs import JsonFormatter
from openpik.routing import DEFAULT_QUEUE
from openpik.task_records import TaskRecord, TaskStore
from tests.requests import txt2img
from tests.stack import Gateway, RedisDb, free_port, fresh_redis, running_stack, stack_settings, wait_for


def test_json_formatter_writes_extra_fields_and_the_traceback():
    logger = logging.getLogger("test.json")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logger.makeRecord(
            "test.json",
            logging.ERROR,
            __file__,
            1,
            "task %s",
            ("Error",),
            sys.exc_info(),
            extra={"task_uid": "t1", "error_code": 1099, "duration_ms": None},
        )
    line = json.loads(JsonFormatter().format(record))
    stamp, trace = line.pop("time"), line.pop("exc")
    assert line == {
        "level": "ERROR",
        "logger": "test.json",
        "message": "task Error",
        "task_uid": "t1",
        "error_code": 1099,
        "duration_ms": None,
    }
    assert trace.startswith("Traceback") and "ValueError: boom" in trace
    assert stamp.endswith("+00:00")  # ISO 8601, UTC


def test_task_counts_by_status_move_with_each_transition():
    client = fresh_redis(RedisDb.METRICS)
    store = TaskStore(client, ttl_s=3600)
    for task_id in ("a" * 20, "b" * 20, "c" * 20):
        store.create(TaskRecord(task_id=task_id, owner="o", action="GenerateTxt2Img", queue="q"), {})
    store.mark_started("a" * 20, "q", "w")
    store.mark_started("a" * 20, "q", "w")  # a second attempt after a lost worker: still one Running
    store.mark_started("b" * 20, "q", "w")
    store.finish("a" * 20, [], [])
    store.fail("b" * 20, 1005, "bad input")
    store.fail("gone" + "x" * 16, 1005, "an expired record moves nothing")
    assert store.count_by_status() == {"Queuing": 1, "Running": 0, "Finished": 1, "Error": 1}
    client.flushdb()


def test_worker_metrics_port_follows_the_gpu_so_a_nodes_workers_never_collide():
    from worker.cli import metrics_port

    assert metrics_port(None, None) == 9808 and metrics_port(None, 3) == 9811
    assert metrics_port(9100, 3) == 9100 and metrics_port(0, 3) == 0


def test_worker_exports_what_the_model_cache_counted_since_the_last_task_and_the_gpu_memory(monkeypatch):
    import torch
    from prometheus_client import REGISTRY

    from worker import metrics

    def sample(name: str, **labels) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    hits, misses = sample("openpik_pipeline_cache_hits_total"), sample("openpik_pipeline_cache_misses_total")
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 123 * 2**20)
    stats = SimpleNamespace(model_hits=0, model_loads=1, vae_loads=1, lora_loads=0, evictions=0)
    engine = SimpleNamespace(cache=SimpleNamespace(stats=stats), device=torch.device("cuda:0"))
    metrics.engine_used(engine)
    stats.model_hits, stats.lora_loads = 2, 1
    metrics.engine_used(engine)
    assert sample("openpik_pipeline_cache_hits_total") - hits == 2
    assert sample("openpik_pipeline_cache_misses_total") - misses == 1  # one load, though both calls saw it
    assert sample("openpik_gpu_memory_bytes", device="cuda:0") == 123 * 2**20


@pytest.fixture(scope="module")
def stack(tiny_catalog_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics")
    env = stack_settings(tiny_catalog_path, tmp, RedisDb.METRICS)
    with running_stack(env, tmp, gateway_log=tmp / "gateway.log") as running:
        worker = running.start_worker("metrics", metrics_port=free_port())
        yield running.gateway, worker
        worker.process.terminate()  # a warm shutdown, which removes the worker's metrics folder
        worker.process.wait(timeout=30)
    fresh_redis(RedisDb.METRICS)


def samples(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a scrape, by name and labels."""
    text = httpx.get(url, timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scrape: dict, name: str, **labels) -> float | None:
    return scrape.get((name, frozenset(labels.items())))


def json_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def run_task(gateway: Gateway) -> str:
    answer = gateway.call(txt2img(Steps=2))
    assert answer["RetCode"] == 0, answer
    task = answer["TaskUID"]
    detail = {"Action": "GetGenerateTaskDetail", "TaskUID": task}
    wait_for(lambda: gateway.call(detail)["TaskStatus"] == "Finished", 120, message=f"task {task} to finish")
    return task


@pytest.fixture(scope="module")
def first_task(stack) -> str:
    return run_task(stack[0])


@pytest.mark.stack
@pytest.mark.models
def test_gateway_metrics_count_requests_by_action_and_retcode_and_read_the_queues(stack, first_task):
    gateway, _ = stack
    assert gateway.call(txt2img(), Signature="forged")["RetCode"] == 171
    assert gateway.call({"Action": "NoSuchAction"})["RetCode"] == 161
    assert gateway.post({"PublicKey": "no action"}).json()["RetCode"] == 160

    scrape = samples(f"{gateway.url}/metrics")
    assert value(scrape, "openpik_requests_total", action="GenerateTxt2Img", retcode="0") == 1
    assert value(scrape, "openpik_requests_total", action="GenerateTxt2Img", retcode="171") == 1
    assert value(scrape, "openpik_requests_total", action="other", retcode="161") == 1
    assert value(scrape, "openpik_requests_total", action="none", retcode="160") == 1
    assert value(scrape, "openpik_requests_total", action="GetGenerateTaskDetail", retcode="0") >= 1
    assert value(scrape, "openpik_request_duration_seconds_count", action="GenerateTxt2Img") == 2
    assert value(scrape, "openpik_request_duration_seconds_bucket", action="GenerateTxt2Img", le="+Inf") == 2
    assert value(scrape, "openpik_queue_depth", queue=DEFAULT_QUEUE) == 0
    assert value(scrape, "openpik_tasks", status="Finished") == 1
    assert value(scrape, "openpik_tasks", status="Queuing") == value(scrape, "openpik_tasks", status="Running") == 0


@pytest.mark.stack
@pytest.mark.models
def test_gateway_logs_one_json_line_per_request(stack, first_task):
    gateway, _ = stack
    lines = wait_for(
        lambda: [
            line
            for line in json_lines(gateway.log)
            if line.get("task_uid") == first_task and line["action"] == "GenerateTxt2Img"
        ],
        10,
        message="the request's log line",
    )
    (line,) = lines
    assert line["retcode"] == 0 and line["public_key"] == "key-a-public" and line["duration_ms"] > 0
    assert line["logger"] == "openpik.api.requests" and line["level"] == "INFO"


@pytest.mark.stack
@pytest.mark.models
def test_worker_metrics_add_up_its_pool_child_and_show_the_model_cache(stack, first_task):
    gateway, worker = stack
    url = f"http://127.0.0.1:{worker.metrics_port}/metrics"
    scrape = wait_for(
        lambda: (s := samples(url)).get(("openpik_task_duration_seconds_count", frozenset())) and s,
        10,
        message="the first task in the worker's metrics",
    )
    assert value(scrape, "openpik_task_duration_seconds_count") == 1
    assert value(scrape, "openpik_task_queue_wait_seconds_count") == 1
    assert value(scrape, "openpik_tasks_total", status="Finished") == 1
    assert value(scrape, "openpik_pipeline_cache_misses_total") == 1
    assert value(scrape, "openpik_model_loads_total", kind="main") == 1
    assert value(scrape, "openpik_pipeline_cache_hits_total") == 0
    assert not any(name == "openpik_gpu_memory_bytes" for name, _ in scrape)  # a CPU worker has none

    run_task(gateway)  # the same model again: loaded already
    scrape = wait_for(
        lambda: (s := samples(url)).get(("openpik_pipeline_cache_hits_total", frozenset())) and s,
        10,
        message="the cache hit in the worker's metrics",
    )
    assert value(scrape, "openpik_task_duration_seconds_count") == 2
    assert value(scrape, "openpik_model_loads_total", kind="main") == 1


@pytest.mark.stack
@pytest.mark.models
def test_worker_logs_each_state_change_as_a_json_line(stack, first_task):
    _, worker = stack
    lines = wait_for(
        lambda: [line for line in json_lines(worker.log) if line.get("task_uid") == first_task],
        10,
        message="the task's log lines",
    )
    assert [line["status"] for line in lines] == ["Running", "Finished"]
    running, finished = lines
    assert running["attempt"] == 1 and running["worker"] == "metrics@test" and running["queue_wait_ms"] >= 0
    assert finished["error_code"] == 0 and finished["duration_ms"] > 0 and finished["message"] == "task Finished"
