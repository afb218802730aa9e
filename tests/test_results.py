"""Result URLs and expiry through the real stack: a gateway and a worker on the tiny models.

The gateway builds every URL from its own OPENPIK_PUBLIC_URL (the worker is given another one,
which must never show), serves a result only while its task record lives and lists it, and
its sweep deletes results OPENPIK_RESULT_TTL_S after they were written while the worker idles.
"""

from __future__ import annotations

import io
import json

import httpx
import pytest
from PIL import Image

from openpik.routing import result_name
from openpik.task_records import record_key
from tests.requests import PNG, txt2img
from tests.stack import Gateway, RedisDb, Worker, open_redis, running_stack, stack_settings, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.models]

TTL_S = 60  # the least OPENPIK_RESULT_TTL_S an operator may set
SWEEP_INTERVAL_S = 1
PUBLIC_URL = "https://images.example.test/pik"
WORKER_PUBLIC_URL = "http://the-worker-must-not-build-urls.invalid"


@pytest.fixture(scope="module")
def stack(tiny_catalog_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("results")
    env = stack_settings(
        tiny_catalog_path,
        tmp,
        RedisDb.RESULTS,
        result_ttl_s=str(TTL_S),
        result_sweep_interval_s=str(SWEEP_INTERVAL_S),
        public_url=PUBLIC_URL,
    )
    with running_stack(env, tmp, gateway_log=tmp / "gateway.log") as running:
        worker = Worker(running.gateway.env | {"OPENPIK_PUBLIC_URL": WORKER_PUBLIC_URL}, tmp, "results")
        running.workers.append(worker)  # stopped with the stack
        worker.start()
        yield running.gateway, worker, tmp


def finished(gateway: Gateway, body: dict) -> tuple[str, dict]:
    task = gateway.call(body)["TaskUID"]
    detail = wait_for(
        lambda: (d := query(gateway, task))["TaskStatus"] in ("Finished", "Error") and d,
        TTL_S / 2,
        message=f"task {task} to end",
    )
    assert detail["TaskStatus"] == "Finished", detail
    return task, detail


def query(gateway: Gateway, task: str) -> dict:
    return gateway.call({"Action": "GetGenerateTaskDetail", "TaskUID": task})


def fetch(gateway: Gateway, url: str) -> httpx.Response:
    """GET a URL the client was given, from the test's gateway (the public host is fictitious)."""
    assert url.startswith(PUBLIC_URL + "/results/"), url
    return httpx.get(gateway.url + url.removeprefix(PUBLIC_URL), timeout=10)


def test_urls_are_built_from_the_gateways_public_url_and_the_record_holds_names(stack):
    gateway, _, _ = stack
    task, detail = finished(gateway, txt2img(BatchSize=2, Steps=2))
    expected = [f"{PUBLIC_URL}/results/{task}/0.png", f"{PUBLIC_URL}/results/{task}/1.png"]
    assert detail["FinalPictureUrls"] == expected
    listed = gateway.call({"Action": "ListTasksDetails", "TaskUIDList": [task]})["TaskDetailList"][0]
    legacy = gateway.call({"Action": "ListGenerateTaskDetail", "TaskUIDs": [task]})["TaskDetailList"][0]
    assert listed["ImgList"] == legacy["FinalPictureUrls"] == expected
    record = {k.decode(): v.decode() for k, v in open_redis(RedisDb.RESULTS).hgetall(record_key(task)).items()}
    assert json.loads(record["results"]) == [result_name(task, 0), result_name(task, 1)]
    assert not any("://" in value for value in record.values())  # no URL, the worker's least of all
    for url in expected:
        response = fetch(gateway, url)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert Image.open(io.BytesIO(response.content)).size == (64, 64)


def test_a_result_is_served_only_while_its_record_lives_and_lists_it(stack):
    gateway, _, tmp = stack
    task, detail = finished(gateway, txt2img(Steps=2))
    (url,) = detail["FinalPictureUrls"]
    assert fetch(gateway, url).status_code == 200
    planted = tmp / "results" / task / "1.png"  # in the store, but not one of the record's results
    planted.write_bytes(PNG.encode())
    assert fetch(gateway, url.replace("/0.png", "/1.png")).status_code == 404
    assert fetch(gateway, url.replace(task, "v" * 20)).status_code == 404

    open_redis(RedisDb.RESULTS).delete(record_key(task))  # the record expires before its files are swept
    assert (tmp / "results" / task / "0.png").is_file()
    assert fetch(gateway, url).status_code == 404
    assert query(gateway, task)["RetCode"] == 250


def test_results_are_deleted_after_the_ttl_while_the_worker_is_idle(stack):
    gateway, worker, tmp = stack
    task, detail = finished(gateway, txt2img(BatchSize=2, Steps=2))
    folder = tmp / "results" / task
    assert sorted(p.name for p in folder.iterdir()) == ["0.png", "1.png"]
    worker_log_size = worker.log.stat().st_size

    def expired() -> bool:
        gone = query(gateway, task)["RetCode"] == 250 and not folder.exists()
        return gone and all(fetch(gateway, url).status_code == 404 for url in detail["FinalPictureUrls"])

    wait_for(expired, TTL_S + 20, interval=0.5, message=f"task {task}'s record and results to expire")
    assert worker.process.poll() is None
    assert "Running" not in worker.log.read_text()[worker_log_size:]  # the worker ran nothing meanwhile
    sweeps = [json.loads(line) for line in (tmp / "gateway.log").read_text().splitlines() if "expired result" in line]
    assert any(s["logger"] == "openpik.results" and s["message"].startswith("deleted ") for s in sweeps), sweeps
