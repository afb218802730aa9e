"""The gateway's one-round-trip submission: the Celery message it writes itself, and the script.

The message is compared with what Celery's own ``send_task`` pushes through kombu onto the same
Redis (message protocol 2, pinned here); a real worker consuming such messages is what every
test of tests/test_end_to_end.py does, since the gateway has no other way to queue a task. The
script (openpik.task_records.TaskIntake) is run against a redis-server of its own: run twice it
writes once, refused it writes nothing, and a WAIT no replica answers is an error.
"""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
import redis
import redis.asyncio
from celery import Celery

from api.generate.celery_message import JOB_REPR, PROTOCOL, TaskMessages
from openpik.redis_connection import NotReplicated
from openpik.routing import DEFAULT_QUEUE, GENERATE_TASK
from openpik.task_records import (
    Admission,
    Refusal,
    TaskIntake,
    TaskRecord,
    idempotency_key,
    new_task_id,
    owner_queued_key,
    record_key,
)
from tests.stack import RedisServer, own_redis_fixtures

pytestmark = pytest.mark.stack

JOB = {"prompt": "a lighthouse", "width": 64, "height": 64, "seed": 7, "task_id": "x"}
TTL_S = 3600


server, client = own_redis_fixtures("submission")


def test_the_message_is_what_celery_send_task_pushes_with_protocol_2(server, client):
    app = Celery("openpik-api", broker=server.url)
    assert app.conf.task_protocol == PROTOCOL == 2
    app.send_task(GENERATE_TASK, args=[JOB], queue=DEFAULT_QUEUE, task_id="t" * 20)
    celerys = json.loads(client.lpop(DEFAULT_QUEUE))

    built = TaskMessages(app).build(GENERATE_TASK, "t" * 20, [JOB], DEFAULT_QUEUE)
    ours = json.loads(built.payload)

    assert built.queue == DEFAULT_QUEUE
    assert ours["headers"].pop("argsrepr") == JOB_REPR and celerys["headers"].pop("argsrepr") == repr([JOB])
    assert ours["properties"].pop("delivery_tag") != celerys["properties"].pop("delivery_tag")
    assert _body(ours.pop("body")) == _body(celerys.pop("body"))  # the same JSON value, spaced differently
    assert ours == celerys


def _body(encoded: str) -> object:
    return json.loads(base64.b64decode(encoded))


def test_messages_of_another_protocol_are_not_built():
    app = Celery("openpik-api")
    app.conf.task_protocol = 1
    with pytest.raises(ValueError, match="protocol 2"):
        TaskMessages(app)


def submit(server: RedisServer, record: TaskRecord, admission: Admission, wait_replicas: int = 0):
    async def on_loop():
        aio = redis.asyncio.Redis.from_url(server.url)
        try:
            intake = TaskIntake(aio, TTL_S, wait_replicas=wait_replicas, wait_timeout_ms=50)
            return await intake.submit(record, {"init": b"png bytes"}, admission, DEFAULT_QUEUE, b"the message")
        finally:
            await aio.aclose()

    return asyncio.run(on_loop())


def new_record(owner: str = "alice") -> TaskRecord:
    return TaskRecord(task_id=new_task_id(), owner=owner, action="GenerateImg2Img", queue=DEFAULT_QUEUE)


def test_the_script_run_twice_writes_the_task_once(server, client):
    record = new_record()
    admission = Admission(DEFAULT_QUEUE, max_queued_per_key=1)
    first, again = submit(server, record, admission), submit(server, record, admission)
    assert first.task_id == again.task_id == record.task_id and first.refusal is again.refusal is None
    assert client.lrange(DEFAULT_QUEUE, 0, -1) == [b"the message"]
    assert client.hget(record_key(record.task_id), "status") == b"Queuing"
    assert client.zcard(owner_queued_key("alice")) == 1


def test_a_refused_submission_writes_nothing_and_a_retry_gets_the_earlier_task(server, client):
    claim = Admission(DEFAULT_QUEUE, 1, 0, idempotency_key("alice", "u-1"), "fingerprint", 60)
    accepted = submit(server, new_record(), claim)
    before = sorted(client.keys("*"))

    assert submit(server, new_record(), claim).task_id == accepted.task_id  # same uuid and parameters
    other_uuid = Admission(DEFAULT_QUEUE, 1, 0, idempotency_key("alice", "u-2"), "fingerprint", 60)
    assert submit(server, new_record(), other_uuid).refusal == Refusal.QUEUE_FULL
    per_key = Admission(DEFAULT_QUEUE, 0, 1, idempotency_key("alice", "u-3"), "fingerprint", 60)
    assert submit(server, new_record(), per_key).refusal == Refusal.TOO_MANY_QUEUED

    assert sorted(client.keys("*")) == before and client.llen(DEFAULT_QUEUE) == 1


def test_a_wait_no_replica_answers_is_an_error_after_the_write(server, client):
    record = new_record()
    with pytest.raises(NotReplicated):
        submit(server, record, Admission(DEFAULT_QUEUE), wait_replicas=1)
    assert client.exists(record_key(record.task_id))  # the Submitter deletes it (api.generate.submission)


@pytest.mark.parametrize("wait_replicas", [0, 1], ids=["alone", "with WAIT"])
def test_a_redis_that_has_not_the_script_cached_gets_it_and_the_task_is_written_once(server, client, wait_replicas):
    """Submissions call the script by its SHA1; a restarted or newly promoted Redis caches none."""
    client.script_flush()
    record = new_record()
    if wait_replicas:
        with pytest.raises(NotReplicated):  # no replica here: the write happened, the WAIT fell short
            submit(server, record, Admission(DEFAULT_QUEUE), wait_replicas=wait_replicas)
    else:
        assert submit(server, record, Admission(DEFAULT_QUEUE)).task_id == record.task_id
    assert client.hget(record_key(record.task_id), "status") == b"Queuing"
    assert client.lrange(DEFAULT_QUEUE, 0, -1) == [b"the message"]
    assert client.info("memory")["number_of_cached_scripts"] == 1
