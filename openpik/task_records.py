"""Task records and stored inputs in Redis: written by the gateway and the workers.

A record is a Redis hash with a TTL; queries read it directly (the Celery result backend
is not used). Input images live beside it under their own keys, so the Celery message
carries only the Job and references.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
import redis
import redis.asyncio
from redis.exceptions import NoScriptError
from redis.typing import EncodableT

from openpik.redis_connection import require_replicas
from openpik.vocabulary import CANCELLED_ERROR_CODE, CANCELLED_MESSAGE, ENDED_STATUSES, TaskStatus

PREFIX = "openpik:"
TASK_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuv"  # lowercase base32, as PICPIK's ids
TASK_ID_LENGTH = 20


_TASK_ID_CHARACTERS = bytes(TASK_ID_ALPHABET.encode()[byte % 32] for byte in range(256))
"""Byte -> character: 256 is a multiple of 32, so a uniform random byte gives a uniform character."""


def new_task_id() -> str:
    """20 random lowercase base32 characters (100 bits): not time-ordered, so not guessable.
    One urandom call and one bytes.translate, both in C."""
    return secrets.token_bytes(TASK_ID_LENGTH).translate(_TASK_ID_CHARACTERS).decode()


def record_key(task_id: str) -> str:
    return f"{PREFIX}task:{task_id}"


def image_key(task_id: str, name: str) -> str:
    return f"{PREFIX}task:{task_id}:image:{name}"


def queued_key(queue: str) -> str:
    """A sorted set of the tasks waiting in ``queue`` (score: enqueue time), for QueuePosition."""
    return f"{PREFIX}queued:{queue}"


def owner_queued_key(owner: str) -> str:
    """A sorted set of one key's tasks not yet started (score: enqueue time), for fairness."""
    return f"{PREFIX}owner-queued:{owner}"


def idempotency_key(owner: str, request_uuid: str) -> str:
    """One key's request_uuid -> "<TaskUID> <fingerprint of the request>" (see _SUBMIT_CHECKS)."""
    return f"{PREFIX}idempotency:{owner}:{request_uuid}"


def rate_limit_key(owner: str, bucket: str) -> str:
    """One key's token bucket for one kind of action (api.rate_limit): a hash {tokens, at}."""
    return f"{PREFIX}rate:{bucket}:{owner}"


ALREADY_ENDED = 0
"""TaskStore.mark_started's answer for a task that ended before it started: skip it."""


class CancelOutcome(StrEnum):
    """What CancelTask did to a task (TaskStore.cancel)."""

    CANCELLED = "cancelled"
    """It was queued: it ended now, as Error 1004."""
    REQUESTED = "requested"
    """It is running: its worker stops it at its next denoising step."""
    UNCHANGED = "unchanged"
    """It had already ended."""


STATUS_BUCKETS = 48
"""Task counts by status are kept per slice of creation time, TTL / STATUS_BUCKETS wide."""


def status_counts_key(bucket: int) -> str:
    """A hash status -> how many records created in time slice ``bucket`` are in it now."""
    return f"{PREFIX}stats:tasks:{bucket}"


@dataclass
class TaskRecord:
    task_id: str
    owner: str
    action: str
    queue: str
    status: TaskStatus = TaskStatus.QUEUING
    progress: int = 0
    seeds: list[int] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    """The images' names in the result store (openpik.routing.result_name); the gateway that
    answers turns them into URLs, so a record never holds a URL."""
    error_code: int = 0
    error_message: str = ""
    attempts: int = 0
    created_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    note: str = ""
    """Something the client should know about how the task ran (e.g. a prompt left untranslated)."""
    worker: str = ""
    cancel_requested: float = 0.0
    """When CancelTask asked this task to stop while it ran (time.time()); 0: never. The worker
    checks it at every denoising step."""
    callback_url: str = ""
    """Where the task's webhook goes when it ends (CallbackUrl, checked against the key's prefixes); "": none."""
    callback_status: str = ""
    """pending, delivered or failed (openpik.callbacks.CallbackStatus); "" when the task has no callback_url."""

    def to_hash(self) -> dict[EncodableT, EncodableT]:
        return {name: _encode(getattr(self, name)) for name in self.__dataclass_fields__}

    @classmethod
    def from_hash(cls, raw: Mapping[bytes | str, bytes | str]) -> TaskRecord:
        values = {_text(k): _text(v) for k, v in raw.items()}
        return cls(
            task_id=values["task_id"],
            owner=values["owner"],
            action=values["action"],
            queue=values["queue"],
            status=TaskStatus(values["status"]),
            progress=int(values["progress"]),
            seeds=json.loads(values["seeds"]),
            results=json.loads(values.get("results", "[]")),  # records written before names: no images
            error_code=int(values["error_code"]),
            error_message=values["error_message"],
            attempts=int(values["attempts"]),
            created_at=float(values["created_at"]),
            started_at=float(values["started_at"]),
            finished_at=float(values["finished_at"]),
            note=values.get("note", ""),
            worker=values.get("worker", ""),
            cancel_requested=float(values.get("cancel_requested", 0)),
            callback_url=values.get("callback_url", ""),
            callback_status=values.get("callback_status", ""),
        )


def _encode(value: object) -> str:
    return json.dumps(value) if isinstance(value, list) else str(value)


def _text(value: bytes | str) -> str:
    """What Redis answered, as text (the store's client does not decode responses)."""
    return value.decode() if isinstance(value, bytes) else value


def _flat(fields: Mapping[str, object]) -> list[str]:
    """Field/value pairs as a script's ARGV: name1, value1, name2, value2, ..."""
    return [item for name, value in fields.items() for item in (name, _encode(value))]


def _create_args(record: TaskRecord, counts: str, bucket: int, bucket_s: int, ttl_s: int) -> list[EncodableT]:
    """_CREATE's ARGV up to the images: the record's fields as one JSON object (one argument to
    encode, not forty), with the counters it names so workers move its count whatever their settings."""
    return [
        ttl_s,
        record.created_at,
        record.task_id,
        record.status.value,
        (bucket + 2) * bucket_s + ttl_s,  # the slice outlives the last record it counts
        orjson.dumps({**record.to_hash(), "status_counts": counts}),
    ]


class TaskStore:
    def __init__(self, client: redis.Redis, ttl_s: int):
        self.redis = client
        self.ttl_s = ttl_s
        self.bucket_s = max(1, ttl_s // STATUS_BUCKETS)

    def create(self, record: TaskRecord, images: dict[str, bytes]) -> None:
        """Write the record and its input images at once (one script), all with the TTL, and
        count it: a record as the gateway's submission (TaskIntake) writes it, without a message."""
        record.created_at = record.created_at or time.time()
        bucket = self._bucket(record.created_at)
        counts = status_counts_key(bucket)
        keys = [record_key(record.task_id), counts, queued_key(record.queue), owner_queued_key(record.owner)]
        self.redis.eval(
            _CREATE,
            len(keys) + len(images),
            *keys,
            *[image_key(record.task_id, name) for name in images],
            *_create_args(record, counts, bucket, self.bucket_s, self.ttl_s),
            *images.values(),
        )

    def count_by_status(self) -> dict[str, int]:
        """Records by status now, from the counters of the live time slices: a few dozen HGETALLs
        whatever the number of tasks (no key scan). A record expires TTL after its creation,
        and its slice with it; the oldest slice may still count up to one slice of expired ones."""
        now = time.time()
        counts = dict.fromkeys((status.value for status in TaskStatus), 0)
        with self.redis.pipeline(transaction=False) as pipe:
            for bucket in range(self._bucket(now - self.ttl_s), self._bucket(now) + 1):
                pipe.hgetall(status_counts_key(bucket))
            for raw in pipe.execute():
                for status, count in raw.items():
                    counts[status.decode()] += int(count)
        return counts

    def _bucket(self, created_at: float) -> int:
        return int(created_at // self.bucket_s)

    def queue_depth(self, queue: str) -> int:
        return self.redis.zcard(queued_key(queue))

    def queued_for(self, owner: str) -> int:
        """How many of ``owner``'s tasks wait; entries older than the TTL (lost records) are dropped."""
        key = owner_queued_key(owner)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(key, "-inf", time.time() - self.ttl_s)
            pipe.zcard(key)
            return int(pipe.execute()[1])

    def ping(self) -> None:
        """Raises redis.RedisError when the store does not answer."""
        self.redis.ping()

    def get(self, task_id: str) -> TaskRecord | None:
        raw = self.redis.hgetall(record_key(task_id))
        return TaskRecord.from_hash(raw) if raw else None

    def result_names(self, task_id: str) -> list[str] | None:
        """The names of a task's images; None once its record has expired. One HGET, so the
        result route can afford it on every download."""
        raw = self.redis.hget(record_key(task_id), "results")
        return None if raw is None else list(json.loads(raw))

    def get_many(self, task_ids: list[str]) -> list[TaskRecord | None]:
        with self.redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hgetall(record_key(task_id))
            return [TaskRecord.from_hash(raw) if raw else None for raw in pipe.execute()]

    def queue_position(self, record: TaskRecord) -> int | None:
        """1 for the next task to run; None once the task left the queue."""
        rank = self.redis.zrank(queued_key(record.queue), record.task_id)
        return rank + 1 if isinstance(rank, int) else None

    def images(self, task_id: str, names: list[str]) -> dict[str, bytes]:
        values = self.redis.mget([image_key(task_id, n) for n in names]) if names else []
        return {name: value for name, value in zip(names, values) if isinstance(value, bytes)}

    def update(self, task_id: str, **fields: Any) -> None:
        """Change some fields of an existing record (never recreates an expired one)."""
        self.redis.eval(_UPDATE_IF_EXISTS, 1, record_key(task_id), *_flat(fields))

    def mark_started(self, task_id: str, queue: str, worker: str) -> int | None:
        """Running, attempt counted, out of the queue; the attempt number, None if the record expired.

        ALREADY_ENDED when the task ended before it started (cancelled while it waited, or a
        message delivered again after its task ended): the record, not the queue, decides,
        so a worker that receives such a message skips it and changes nothing.
        """
        attempts = self.redis.eval(
            _START_IF_EXISTS,
            2,
            record_key(task_id),
            queued_key(queue),
            task_id,
            TaskStatus.RUNNING.value,
            time.time(),
            worker,
            owner_queued_key(""),
            *sorted(ENDED_STATUSES),
        )
        return None if attempts is None else int(attempts)

    def cancel(self, record: TaskRecord) -> tuple[CancelOutcome, TaskRecord] | None:
        """CancelTask, in one script: a queued task ends at once as Error 1004 (out of the
        waiting sets, its status counted as Error); a running one is asked to stop
        (``cancel_requested``, which its worker checks at every step); an ended one is left
        as it is. What happened and the record after it; None if the record expired."""
        reply = self.redis.eval(
            _CANCEL,
            3,
            record_key(record.task_id),
            queued_key(record.queue),
            owner_queued_key(record.owner),
            record.task_id,
            time.time(),
            TaskStatus.QUEUING.value,
            TaskStatus.RUNNING.value,
            TaskStatus.ERROR.value,
            CANCELLED_ERROR_CODE,
            CANCELLED_MESSAGE,
        )
        if not reply:
            return None
        outcome, fields = reply
        return CancelOutcome(_text(outcome)), TaskRecord.from_hash(dict(zip(fields[::2], fields[1::2])))

    def cancel_requested(self, task_id: str) -> bool:
        """Whether CancelTask asked this running task to stop (one HGET: cheap enough per step)."""
        return float(self.redis.hget(record_key(task_id), "cancel_requested") or 0) > 0

    def finish(self, task_id: str, results: list[str], seeds: list[int]) -> None:
        """Finished, with the names its images were stored under (never URLs) and their seeds."""
        self._end(task_id, TaskStatus.FINISHED, results=results, seeds=seeds, progress=100, finished_at=time.time())

    def fail(self, task_id: str, code: int, message: str) -> None:
        self._end(task_id, TaskStatus.ERROR, error_code=code, error_message=message, finished_at=time.time())

    def claim_callback(self, task_id: str) -> bool:
        """True once per record, for the first caller after the task ended, when it has a callback_url:
        that caller queues the delivery, so however many end paths report the end, one webhook goes."""
        return bool(self.redis.eval(_CLAIM_CALLBACK, 1, record_key(task_id)))

    def _end(self, task_id: str, status: TaskStatus, **fields: Any) -> None:
        """Like update, and the status counters move with the status in the same script."""
        self.redis.eval(_END_IF_EXISTS, 1, record_key(task_id), status.value, *_flat(fields))


class TaskWatch:
    """Reads of one task's record on an asyncio client, for the gateway's event streams (api/events).

    A stream waits on the event loop between reads, so a gateway holds many of them without a
    thread each; each read is one round trip (one script), whatever the task's state.
    """

    def __init__(self, client: redis.asyncio.Redis):
        self.redis = client

    async def read(self, task_id: str) -> tuple[TaskRecord, int | None] | None:
        """The record and, while it waits, its queue position (1 = next); None once the record is gone."""
        reply = await self.redis.eval(_READ_WITH_POSITION, 1, record_key(task_id), queued_key(""), task_id)
        if not reply:
            return None
        fields, rank = reply
        record = TaskRecord.from_hash(dict(zip(fields[::2], fields[1::2])))
        waiting = record.status == TaskStatus.QUEUING and isinstance(rank, int)
        return record, rank + 1 if waiting else None


class Refusal(StrEnum):
    """Why TaskIntake.submit stored nothing (the gateway answers with the matching error)."""

    QUEUE_FULL = "queue-full"
    """The queue already holds max_queue_depth tasks (LoadShedding)."""
    TOO_MANY_QUEUED = "too-many-queued"
    """The key already has max_queued_per_key tasks waiting (TooManyQueued)."""


@dataclass(frozen=True)
class Admission:
    """What a submission must pass before it is stored: the backpressure limits (0: off) and,
    for an idempotent request_uuid, its claim."""

    depth_queue: str
    """The queue whose depth counts (the model group's), not necessarily the one the task goes to."""
    max_queue_depth: int = 0
    max_queued_per_key: int = 0
    claim_key: str = ""
    """idempotency_key(owner, request_uuid); "": the submission claims no request_uuid."""
    fingerprint: str = ""
    window_s: int = 0


@dataclass(frozen=True)
class Submitted:
    """TaskIntake.submit's answer: the TaskUID to return, or why nothing was stored."""

    task_id: str = ""
    """The new task's id, or the earlier task's when the request was a retry of it."""
    refusal: Refusal | None = None


class TaskIntake:
    """The gateway's submissions on its asyncio client: checks, record, images and the queued
    message in one script, so one round trip on the event loop and nothing half-written.

    With ``wait_replicas``, a WAIT follows on the same connection (one pipeline): it covers the
    record and the message alike, and a TaskUID is returned only once that many replicas hold
    both (NotReplicated otherwise). A pipeline retried after a dropped connection runs the
    script again: it finds the record and changes nothing, and the WAIT after it still covers
    the write.
    """

    def __init__(self, client: redis.asyncio.Redis, ttl_s: int, wait_replicas: int = 0, wait_timeout_ms: int = 0):
        self.redis = client
        self.ttl_s = ttl_s
        self.bucket_s = max(1, ttl_s // STATUS_BUCKETS)
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms

    async def submit(
        self, record: TaskRecord, images: dict[str, bytes], admission: Admission, queue_list: str, message: bytes
    ) -> Submitted:
        """Store ``record`` and its images and LPUSH ``message`` onto the Redis list ``queue_list``,
        unless ``admission`` refuses or names an earlier task this request retries."""
        record.created_at = record.created_at or time.time()
        bucket = int(record.created_at // self.bucket_s)
        counts = status_counts_key(bucket)
        keys = [record_key(record.task_id), counts, queued_key(record.queue), owner_queued_key(record.owner)]
        checks: list[EncodableT] = [
            admission.claim_key,
            admission.fingerprint,
            admission.window_s,
            admission.max_queue_depth,
            queued_key(admission.depth_queue),
            admission.max_queued_per_key,
            record.created_at - self.ttl_s,
            queue_list,
            message,
        ]
        numkeys = len(keys) + len(images)
        args: list[EncodableT] = [
            *keys,
            *[image_key(record.task_id, name) for name in images],
            *_create_args(record, counts, bucket, self.bucket_s, self.ttl_s),
            *images.values(),
            *checks,
        ]
        try:
            reply = await self._run_submit(numkeys, args)
        except NoScriptError:  # a restarted or newly promoted Redis starts with no script cached
            await self.redis.script_load(_SUBMIT)
            reply = await self._run_submit(numkeys, args)
        outcome, *rest = [_text(part) for part in reply]
        return _SUBMIT_OUTCOMES[outcome](record.task_id, *rest)

    async def _run_submit(self, numkeys: int, args: list[EncodableT]) -> list[Any]:
        """The submit script by its SHA1 (the text travels and is hashed only on NoScriptError), then
        WAIT on the same connection when replicas must confirm."""
        if not self.wait_replicas:
            return await self.redis.evalsha(_SUBMIT_SHA, numkeys, *args)  # type: ignore[no-any-return]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.evalsha(_SUBMIT_SHA, numkeys, *args)
            pipe.wait(self.wait_replicas, self.wait_timeout_ms)
            reply, acknowledged = await pipe.execute()
        require_replicas(acknowledged, self.wait_replicas, self.wait_timeout_ms)
        return reply  # type: ignore[no-any-return]

    async def forget(self, record: TaskRecord, image_names: list[str], claim_key: str) -> None:
        """Undo a submission whose TaskUID will not be returned (its replicas did not confirm it):
        the record, its images, its place in the waiting sets and counters, its claim. Its message
        may stay: a worker that takes it finds no record and drops it."""
        keys = [record_key(record.task_id)] + [image_key(record.task_id, n) for n in image_names]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*keys, *([claim_key] if claim_key else []))
            pipe.zrem(queued_key(record.queue), record.task_id)
            pipe.zrem(owner_queued_key(record.owner), record.task_id)
            pipe.hincrby(status_counts_key(int(record.created_at // self.bucket_s)), record.status.value, -1)
            await pipe.execute()


_SUBMIT_OUTCOMES: dict[str, Callable[..., Submitted]] = {
    "created": lambda task_id: Submitted(task_id=task_id),
    "retry": lambda task_id, earlier: Submitted(task_id=earlier),
    "refused": lambda task_id, why: Submitted(refusal=Refusal(why)),
}


# Moves the record's count from its old status to `new` in the counters the record names
# (records written before the counters existed name none).
_MOVE_STATUS = """
local function move_status(record, new)
  local old, counts = unpack(redis.call('HMGET', record, 'status', 'status_counts'))
  if old == new or not counts then return end
  redis.call('HINCRBY', counts, old, -1)
  redis.call('HINCRBY', counts, new, 1)
end
"""

# KEYS: the record, its status counters, its queue's and its owner's waiting sets, then its
# images. ARGV: TTL, created_at, task id, status, the counters' expiry, the record's fields as a
# JSON object of strings, then the images' bytes. Counted only when new: a retry of the same
# write must not count it twice.
_CREATE = """
local ttl, created, task, status, counts_until = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HINCRBY', KEYS[2], status, 1)
  redis.call('EXPIREAT', KEYS[2], counts_until)
end
local items = {}
for name, value in pairs(cjson.decode(ARGV[6])) do
  items[#items + 1] = name
  items[#items + 1] = value
end
redis.call('HSET', KEYS[1], unpack(items))
redis.call('EXPIRE', KEYS[1], ttl)
for i = 5, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 2], 'EX', ttl)
end
redis.call('ZADD', KEYS[3], created, task)
redis.call('ZADD', KEYS[4], created, task)
"""

# The gateway's submission (TaskIntake.submit): _CREATE's KEYS and ARGV, then, after the images,
# the admission: the claim key ("" for none), the request's fingerprint, the claim's window, the
# queue depth limit and the waiting set it counts, the per-key limit, the oldest score still
# counted for the key (older entries belong to lost records and are dropped), then the Celery
# queue's list and the message. Answers {'created'}, {'retry', earlier task id} or {'refused',
# why} (Refusal); a refused submission changes nothing. A record that exists already means this
# very script ran before (a retried pipeline): nothing is written twice, no message pushed twice.
_SUBMIT_CHECKS = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {'created'} end
local admission = 6 + #KEYS - 4
local claim_key, fingerprint, window = ARGV[admission + 1], ARGV[admission + 2], ARGV[admission + 3]
local max_depth, depth_set = tonumber(ARGV[admission + 4]), ARGV[admission + 5]
local max_per_key, oldest = tonumber(ARGV[admission + 6]), ARGV[admission + 7]
if claim_key ~= '' then
  local claimed = redis.call('GET', claim_key)
  if claimed then
    local space = string.find(claimed, ' ', 1, true)
    if string.sub(claimed, space + 1) == fingerprint then return {'retry', string.sub(claimed, 1, space - 1)} end
  end
end
if max_depth > 0 and redis.call('ZCARD', depth_set) >= max_depth then return {'refused', 'queue-full'} end
if max_per_key > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', oldest)
  if redis.call('ZCARD', KEYS[4]) >= max_per_key then return {'refused', 'too-many-queued'} end
end
if claim_key ~= '' then
  redis.call('SET', claim_key, ARGV[3] .. ' ' .. fingerprint, 'EX', window)
end
"""
_SUBMIT_PUSH = """
redis.call('LPUSH', ARGV[admission + 8], ARGV[admission + 9])
return {'created'}
"""

_SUBMIT = _SUBMIT_CHECKS + _CREATE + _SUBMIT_PUSH
_SUBMIT_SHA = hashlib.sha1(_SUBMIT.encode()).hexdigest()

# The task leaves both waiting sets (its queue's and its owner's) as it starts. A task in an
# ended status (ARGV[6], ARGV[7]) does not start again: 0 (ALREADY_ENDED), nothing changed.
_START_IF_EXISTS = (
    _MOVE_STATUS
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
local status = redis.call('HGET', KEYS[1], 'status')
if status == ARGV[6] or status == ARGV[7] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', ARGV[5] .. redis.call('HGET', KEYS[1], 'owner'), ARGV[1])
move_status(KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'started_at', ARGV[3], 'progress', 0, 'worker', ARGV[4])
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
"""
)

# Finished or Error: ARGV = the status, then field/value pairs.
_END_IF_EXISTS = (
    _MOVE_STATUS
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return end
move_status(KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], 'status', ARGV[1], unpack(ARGV, 2))
"""
)

# CancelTask. KEYS: the record, its queue's and its owner's waiting sets. ARGV: task id, now,
# Queuing, Running, Error, the cancelled error code and message. Returns {outcome, HGETALL}.
_CANCEL = (
    _MOVE_STATUS
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
local status = redis.call('HGET', KEYS[1], 'status')
local outcome = 'unchanged'
if status == ARGV[3] then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  move_status(KEYS[1], ARGV[5])
  redis.call('HSET', KEYS[1], 'status', ARGV[5], 'error_code', ARGV[6], 'error_message', ARGV[7],
    'finished_at', ARGV[2], 'cancel_requested', ARGV[2])
  outcome = 'cancelled'
elseif status == ARGV[4] then
  redis.call('HSET', KEYS[1], 'cancel_requested', ARGV[2])
  outcome = 'requested'
end
return {outcome, redis.call('HGETALL', KEYS[1])}
"""
)

# A record with a callback_url is claimed once (the callback_claimed field), never an expired one.
_CLAIM_CALLBACK = """
local url = redis.call('HGET', KEYS[1], 'callback_url')
if not url or url == '' then return 0 end
return redis.call('HSETNX', KEYS[1], 'callback_claimed', 1)
"""

# HSET only when the record still exists: a late worker must not resurrect an expired task.
_UPDATE_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], unpack(ARGV))
end
"""

# KEYS[1]: a record; ARGV: the queues' waiting-set key prefix (queued_key("")), the task id.
# The record's fields and its rank in its queue's waiting set (nil when not waiting), read together.
_READ_WITH_POSITION = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return nil end
return {fields, redis.call('ZRANK', ARGV[1] .. redis.call('HGET', KEYS[1], 'queue'), ARGV[2])}
"""
