"""Task records and stored inputs in Redis: written by the gateway and the workers.

A record is a Redis hash with a TTL; queries read it directly (the Celery result backend
is not used). Input images live beside it under their own keys, so the Celery message
carries only the Job and references.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.typing import EncodableT

from openpik.vocabulary import TaskStatus

PREFIX = "openpik:"
TASK_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuv"  # lowercase base32, as PICPIK's ids
TASK_ID_LENGTH = 20


def new_task_id() -> str:
    """20 random lowercase base32 characters: not time-ordered, so not guessable."""
    return "".join(secrets.choice(TASK_ID_ALPHABET) for _ in range(TASK_ID_LENGTH))


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
    """One key's request_uuid -> "<TaskUID> <fingerprint of the request>" (see retry_of)."""
    return f"{PREFIX}idempotency:{owner}:{request_uuid}"


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
        )


def _encode(value: object) -> str:
    return json.dumps(value) if isinstance(value, list) else str(value)


def _text(value: bytes | str) -> str:
    """What Redis answered, as text (the store's client does not decode responses)."""
    return value.decode() if isinstance(value, bytes) else value


def _flat(fields: Mapping[str, object]) -> list[str]:
    """Field/value pairs as a script's ARGV: name1, value1, name2, value2, ..."""
    return [item for name, value in fields.items() for item in (name, _encode(value))]


class TaskStore:
    def __init__(self, client: redis.Redis, ttl_s: int):
        self.redis = client
        self.ttl_s = ttl_s
        self.bucket_s = max(1, ttl_s // STATUS_BUCKETS)

    def create(self, record: TaskRecord, images: dict[str, bytes]) -> None:
        """Write the record and its input images in one transaction, all with the TTL."""
        record.created_at = record.created_at or time.time()
        counts = status_counts_key(self._bucket(record.created_at))
        with self.redis.pipeline(transaction=True) as pipe:
            # The record names its counters, so workers move the count whatever their settings.
            pipe.hset(record_key(record.task_id), mapping={**record.to_hash(), "status_counts": counts})
            pipe.expire(record_key(record.task_id), self.ttl_s)
            for name, data in images.items():
                pipe.set(image_key(record.task_id, name), data, ex=self.ttl_s)
            pipe.zadd(queued_key(record.queue), {record.task_id: record.created_at})
            pipe.zadd(owner_queued_key(record.owner), {record.task_id: record.created_at})
            pipe.hincrby(counts, record.status.value, 1)
            # The slice outlives the last record it counts, so transitions never recreate it.
            pipe.expireat(counts, (self._bucket(record.created_at) + 2) * self.bucket_s + self.ttl_s)
            pipe.execute()

    def delete(self, record: TaskRecord, image_names: list[str]) -> None:
        keys = [record_key(record.task_id)] + [image_key(record.task_id, n) for n in image_names]
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*keys)
            pipe.zrem(queued_key(record.queue), record.task_id)
            pipe.zrem(owner_queued_key(record.owner), record.task_id)
            pipe.hincrby(status_counts_key(self._bucket(record.created_at)), record.status.value, -1)
            pipe.execute()

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

    def retry_of(self, owner: str, request_uuid: str, fingerprint: str, task_id: str, window_s: int) -> str | None:
        """The task an identical request with this request_uuid created within ``window_s``
        (this one is a retry of it), else None: then ``task_id`` claims the uuid for the window,
        replacing a claim made with other parameters. One script, so two retries racing each
        other cannot both create a task."""
        earlier = self.redis.eval(_RETRY_OF, 1, idempotency_key(owner, request_uuid), task_id, fingerprint, window_s)
        return _text(earlier) if isinstance(earlier, bytes | str) else None

    def release_request(self, owner: str, request_uuid: str) -> None:
        """Free a claim whose task was never stored, so a retry of the request is new."""
        self.redis.delete(idempotency_key(owner, request_uuid))

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
        """Running, attempt counted, out of the queue; the attempt number, None if the record expired."""
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
        )
        return None if attempts is None else int(attempts)

    def finish(self, task_id: str, results: list[str], seeds: list[int]) -> None:
        """Finished, with the names its images were stored under (never URLs) and their seeds."""
        self._end(task_id, TaskStatus.FINISHED, results=results, seeds=seeds, progress=100, finished_at=time.time())

    def fail(self, task_id: str, code: int, message: str) -> None:
        self._end(task_id, TaskStatus.ERROR, error_code=code, error_message=message, finished_at=time.time())

    def _end(self, task_id: str, status: TaskStatus, **fields: Any) -> None:
        """Like update, and the status counters move with the status in the same script."""
        self.redis.eval(_END_IF_EXISTS, 1, record_key(task_id), status.value, *_flat(fields))


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

# The task leaves both waiting sets (its queue's and its owner's) as it starts.
_START_IF_EXISTS = (
    _MOVE_STATUS
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
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

# KEYS[1]: the claim; ARGV: task id, fingerprint, window. The earlier task id when the claim
# holds the same fingerprint; otherwise the claim becomes this task's and nothing is returned.
_RETRY_OF = """
local claimed = redis.call('GET', KEYS[1])
if claimed then
  local space = string.find(claimed, ' ', 1, true)
  if string.sub(claimed, space + 1) == ARGV[2] then return string.sub(claimed, 1, space - 1) end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'EX', ARGV[3])
return false
"""

# HSET only when the record still exists: a late worker must not resurrect an expired task.
_UPDATE_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], unpack(ARGV))
end
"""
