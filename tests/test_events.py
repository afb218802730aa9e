"""GET /events against the real stack: signed query, progress events, one final event, reconnection.

The stack has a redis-server of its own (no database of the shared one is free) and one
worker serving the default queue; model 2 is put in a group no worker serves, so its tasks
wait for as long as a test needs.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Iterator

import httpx
import pytest

from openpik.signing import sign, string_to_sign
from openpik.vocabulary import CANCELLED_ERROR_CODE
from tests.requests import txt2img
from tests.stack import (
    KEY_A,
    KEY_B,
    Gateway,
    Key,
    own_redis_stack,
    signed,
    write_catalog_with_custom_model,
)

pytestmark = [pytest.mark.stack, pytest.mark.models]

WAITING_MODEL = 2  # in a group no worker serves (see the stack fixture)
FINAL_EVENTS = ("finished", "error")


@pytest.fixture(scope="module")
def gateway(tiny_catalog_path, tmp_path_factory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("events")
    catalog = write_catalog_with_custom_model(tiny_catalog_path, tmp / "catalog.yaml", KEY_A.public)
    text = catalog.read_text()
    catalog.write_text(text.replace("model_code: tiny-sd15-b\n", "model_code: tiny-sd15-b\n  group: nobody\n"))
    with own_redis_stack(catalog, tmp, worker="events", progress_interval_s="0") as (stack, _):
        yield stack.gateway


def query(task_id: str, key: Key = KEY_A, **fields) -> dict[str, str]:
    """The signed query of a stream: signed as the JSON body of the same fields (Timestamp an int there)."""
    body = {"Action": "TaskEvents", "TaskUID": task_id, "Timestamp": int(time.time())} | fields
    return {name: str(value) for name, value in signed(body, key).items()}


def read_stream(gateway: Gateway, params: dict[str, str], headers: dict[str, str] | None = None) -> list[dict]:
    """Every event of a stream until the server closes it: {"id", "event", "data"} each.

    Nothing may follow a final event, not even a keep-alive comment: the stream must close.
    """
    events: list[dict] = []
    with open_stream(gateway, params, headers) as response:
        for event in parse(response.iter_lines()):
            assert not (events and events[-1].get("event") in FINAL_EVENTS), f"after the final event: {event}"
            events.append(event)
    return [event for event in events if "event" in event]


@contextlib.contextmanager
def open_stream(gateway: Gateway, params: dict[str, str], headers: dict[str, str] | None = None):
    with httpx.stream("GET", f"{gateway.url}/events", params=params, headers=headers, timeout=60) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield response


def parse(lines: Iterator[str]) -> Iterator[dict]:
    """Server-sent events as {"id", "event", "data" (parsed JSON)}; a comment line as {"comment"}."""
    fields: dict[str, str] = {}
    for line in lines:
        if line.startswith(":"):
            yield {"comment": line}
        elif line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        elif fields:
            yield fields | {"data": json.loads(fields["data"])}
            fields = {}


def first_event(gateway: Gateway, params: dict[str, str]) -> dict:
    """The stream's first event; then the client goes away."""
    with open_stream(gateway, params) as response:
        return next(e for e in parse(response.iter_lines()) if "event" in e)


def refusal(gateway: Gateway, params: dict[str, str]) -> tuple[int, dict]:
    response = httpx.get(f"{gateway.url}/events", params=params, timeout=30)
    assert response.headers["content-type"] == "application/json"
    return response.status_code, response.json()


def list_item(gateway: Gateway, task_id: str) -> dict:
    (item,) = gateway.call({"Action": "ListTasksDetails", "TaskUIDList": [task_id]})["TaskDetailList"]
    return item


def test_the_query_signs_as_the_json_body_of_the_same_fields():
    body = {"Action": "TaskEvents", "PublicKey": "abcdefg", "TaskUID": "t1", "Timestamp": 1700000000}
    as_query = {name: str(value) for name, value in body.items()}
    assert string_to_sign(as_query, "123456") == "ActionTaskEventsPublicKeyabcdefgTaskUIDt1Timestamp1700000000123456"
    assert sign(as_query, "123456") == sign(body, "123456")


def test_a_30_step_task_streams_rising_progress_then_one_finished_event_and_closes(gateway):
    task = gateway.call(txt2img(Steps=30))["TaskUID"]
    events = read_stream(gateway, query(task))

    *progress, final = events
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    assert progress and all(e["event"] == "progress" for e in progress)
    assert all(set(e["data"]) == {"Progress", "QueuePosition", "TaskStatus"} for e in progress)
    assert {e["data"]["TaskStatus"] for e in progress} <= {"Queuing", "Running"}
    percents = [e["data"]["Progress"] for e in progress]
    assert percents == sorted(percents) and any(0 < p < 100 for p in percents), percents
    assert all(a["data"] != b["data"] for a, b in itertools.pairwise(progress))  # sent only on a change
    assert final["event"] == "finished"
    assert final["data"] == list_item(gateway, task)
    assert final["data"]["Status"] == "Finished" and final["data"]["Progress"] == 100 and final["data"]["ImgList"]


def test_a_reconnection_after_the_end_gets_the_final_event_again_at_once(gateway):
    task = gateway.call(txt2img(Steps=2))["TaskUID"]
    last = read_stream(gateway, query(task))[-1]

    again = read_stream(gateway, query(task), headers={"Last-Event-ID": last["id"]})
    assert [(e["event"], e["data"]) for e in again] == [("finished", last["data"])]
    assert int(again[0]["id"]) == int(last["id"]) + 1
    assert read_stream(gateway, query(task), headers={"Last-Event-ID": "not a number"})[0]["id"] == "1"


def test_a_waiting_task_streams_queuing_with_its_queue_position(gateway):
    first = gateway.call(txt2img(MainModelId=WAITING_MODEL, Steps=2))["TaskUID"]
    second = gateway.call(txt2img(MainModelId=WAITING_MODEL, Steps=2))["TaskUID"]
    assert first_event(gateway, query(second)) == {
        "id": "1",
        "event": "progress",
        "data": {"Progress": 0, "QueuePosition": 2, "TaskStatus": "Queuing"},
    }
    assert first_event(gateway, query(first))["data"]["QueuePosition"] == 1


def test_a_task_cancelled_while_its_stream_is_open_ends_it_with_one_error_event(gateway):
    task = gateway.call(txt2img(MainModelId=WAITING_MODEL, Steps=2))["TaskUID"]
    with open_stream(gateway, query(task)) as response:
        events = parse(response.iter_lines())
        assert next(events)["data"]["TaskStatus"] == "Queuing"
        assert gateway.call({"Action": "CancelTask", "TaskUID": task})["RetCode"] == 0
        rest = [e for e in events if "event" in e]
    assert [e["event"] for e in rest] == ["error"]
    assert rest[0]["data"] == list_item(gateway, task)
    assert rest[0]["data"]["Status"] == "Error" and rest[0]["data"]["ErrorCode"] == CANCELLED_ERROR_CODE


def test_signature_problems_answer_their_retcodes_as_post_does(gateway):
    task = gateway.call(txt2img(MainModelId=WAITING_MODEL, Steps=2))["TaskUID"]
    good = query(task)
    cases = [
        (171, good | {"Signature": "0" * 40}),
        (171, good | {"TaskUID": task[::-1]}),  # the signature covers every field
        (170, {k: v for k, v in good.items() if k != "Signature"}),
        (172, {k: v for k, v in good.items() if k != "PublicKey"}),
        (173, query(task, Key("nobody", "x"))),
    ]
    for retcode, params in cases:
        status, answer = refusal(gateway, params)
        assert (status, answer["RetCode"], answer["Action"]) == (200, retcode, "TaskEvents"), answer


def test_the_timestamp_is_mandatory_and_checked(gateway):
    task = gateway.call(txt2img(MainModelId=WAITING_MODEL, Steps=2))["TaskUID"]
    unstamped = {n: str(v) for n, v in signed({"Action": "TaskEvents", "TaskUID": task}).items()}
    status, answer = refusal(gateway, unstamped)
    assert (status, answer["RetCode"]) == (200, 174) and "required" in answer["Message"]
    status, answer = refusal(gateway, query(task, Timestamp=int(time.time()) - 3600))
    assert (status, answer["RetCode"]) == (200, 174)


def test_another_keys_task_and_an_unknown_one_are_404_with_retcode_250(gateway):
    task = gateway.call(txt2img(MainModelId=WAITING_MODEL, Steps=2))["TaskUID"]
    foreign = refusal(gateway, query(task, KEY_B))
    unknown = refusal(gateway, query("0" * 20))
    assert foreign[0] == unknown[0] == 404
    assert foreign[1]["RetCode"] == unknown[1]["RetCode"] == 250 and foreign[1]["Action"] == "TaskEvents"


def test_other_actions_and_repeated_fields_are_refused(gateway):
    task = gateway.call(txt2img(MainModelId=WAITING_MODEL, Steps=2))["TaskUID"]
    assert refusal(gateway, query(task, Action="ListTasksDetails"))[1]["RetCode"] == 161
    params = [*query(task).items(), ("TaskUID", task)]
    response = httpx.get(f"{gateway.url}/events", params=params, timeout=30)
    assert response.json()["RetCode"] == 230 and response.json()["Message"].startswith("TaskUID")
