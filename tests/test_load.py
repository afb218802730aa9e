"""Load: thousands of requests through the real gateway with a stub-fast worker.

The worker runs OPENPIK_ENGINE=stub (instant solid images), so what is loaded is the
gateway, Redis, Celery and the result store. Zero 5xx; every accepted task ends Finished.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os

import httpx
import pytest

from openpik.task_records import record_key
from tests.requests import txt2img
from tests.stack import KEY_A, KEY_B, RedisDb, open_redis, running_stack, signed, stack_settings, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.models]

REQUESTS = int(os.environ.get("OPENPIK_LOAD_REQUESTS", "2000"))
CLIENTS = 16


@pytest.fixture(scope="module")
def stack(tiny_catalog_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("load")
    # Limits have their own test.
    env = stack_settings(tiny_catalog_path, tmp, RedisDb.LOAD, engine="stub", max_queued_per_key="0")
    with running_stack(env, tmp, worker="stub") as running:
        yield running.gateway


def request_mix():
    """Mostly valid generates from two keys, with queries and invalid requests mixed in."""
    kinds = itertools.cycle(["generate"] * 7 + ["query", "bad-range", "bad-signature"])
    for i, kind in zip(range(REQUESTS), kinds):
        key = (KEY_A, KEY_B)[i % 2]
        if kind == "generate":
            yield kind, signed(txt2img(Seed=i, Steps=2, BatchSize=1 + i % 2), key)
        elif kind == "query":
            yield kind, signed({"Action": "ListModels"}, key)
        elif kind == "bad-range":
            yield kind, signed(txt2img(Steps=151), key)
        else:
            yield kind, signed(txt2img(), key) | {"Signature": "0" * 40}


async def drive(url: str) -> list[tuple[str, int, dict]]:
    queue: asyncio.Queue = asyncio.Queue()
    for item in request_mix():
        queue.put_nowait(item)
    results = []

    async def client():
        async with httpx.AsyncClient(timeout=60) as http:
            while not queue.empty():
                kind, body = queue.get_nowait()
                response = await http.post(url, json=body)
                results.append((kind, response.status_code, response.json()))

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return results


def test_thousands_of_requests_no_5xx_and_every_accepted_task_finishes(stack):
    results = asyncio.run(drive(stack.url + "/"))
    assert len(results) == REQUESTS
    assert all(status < 500 for _, status, _ in results)
    expected = {"generate": {0}, "query": {0}, "bad-range": {230}, "bad-signature": {171}}
    assert all(answer["RetCode"] in expected[kind] for kind, _, answer in results)
    accepted = [answer["TaskUID"] for kind, _, answer in results if kind == "generate" and answer["RetCode"] == 0]
    print(f"\n{REQUESTS} requests: " + str(collections.Counter(a["RetCode"] for _, _, a in results)))

    client = open_redis(RedisDb.LOAD)

    def finished() -> bool:
        with client.pipeline(transaction=False) as pipe:
            for task in accepted:
                pipe.hget(record_key(task), "status")
            return all(status == b"Finished" for status in pipe.execute())

    wait_for(finished, timeout=300, interval=1, message="every accepted task to finish")
