"""Per-key rate limits: a token bucket per key in Redis, generate actions and queries apart (180)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
import yaml

from api.errors import RateLimited, TooManyQueued
from api.keys_cli import main as keys_cli
from api.rate_limit import enforce, retry_after_s
from openpik.keys import Bucket, FileKeyStore, RateLimit, RedisKeyStore
from openpik.routing import DEFAULT_QUEUE
from openpik.settings import Settings
from openpik.task_records import queued_key, rate_limit_key
from tests.requests import txt2img
from tests.stack import Gateway, Key, RedisDb, fresh_redis, open_redis, redis_url, running_stack, stack_settings

RETRY_AFTER = re.compile(r"retry after (\d+\.\d) s$")
LIST_MODELS = {"Action": "ListModels"}
LIMITED = {  # slow enough that no test's requests could refill a token by accident
    "rate_limit_generate_per_s": "0.2",
    "rate_limit_generate_burst": "2",
    "rate_limit_query_per_s": "0.2",
    "rate_limit_query_burst": "3",
}


@pytest.fixture
def redis_client():
    client = fresh_redis(RedisDb.RATE_LIMITS)
    yield client
    client.flushdb()


def test_retry_after_rounds_up_to_a_tenth_of_a_second():
    assert [retry_after_s(ms) for ms in (1, 100, 101, 399, 400, 4999)] == [0.1, 0.1, 0.2, 0.4, 0.4, 5.0]


def test_rate_limited_answers_180_like_too_many_queued():
    assert RateLimited.retcode == TooManyQueued.retcode and RateLimited.http_status == 200


@pytest.fixture(params=["file", "redis"])
def store(request, tmp_path, redis_client):
    if request.param == "file":
        return FileKeyStore(tmp_path / "keys.yaml")
    return RedisKeyStore(redis_client, prefix="openpik-test-rate:keys:")


def test_key_stores_keep_a_limit_per_bucket_and_clear_it(store, redis_client, tmp_path):
    key = store.create("alice")
    other = store.create("bob")
    generate, query = RateLimit(per_s=2.5, burst=4), RateLimit(per_s=0, burst=1)
    store.set_rate_limit(key.public_key, Bucket.GENERATE, generate)
    store.set_rate_limit(key.public_key, Bucket.QUERY, query)
    again = type(store)(*_store_args(store))  # another process's view of the same store
    stored = again.get(key.public_key)
    assert stored.rate_limit(Bucket.GENERATE) == generate and stored.rate_limit(Bucket.QUERY) == query
    assert stored.private_key == key.private_key and stored.enabled
    assert again.get(other.public_key).rate_limit(Bucket.GENERATE) is None

    store.set_rate_limit(key.public_key, Bucket.GENERATE, None)
    stored = again.get(key.public_key)
    assert stored.rate_limit(Bucket.GENERATE) is None and stored.rate_limit(Bucket.QUERY) == query
    store.set_rate_limit(key.public_key, Bucket.QUERY, None)
    assert again.get(key.public_key) == key
    if isinstance(store, RedisKeyStore):
        assert set(redis_client.hkeys(store._name(key.public_key))) == {b"private_key", b"name", b"enabled"}
    else:
        assert all(set(entry) == {"public_key", "private_key", "name", "enabled"} for entry in _entries(store.path))


def _store_args(store: FileKeyStore | RedisKeyStore) -> tuple:
    return (store.path,) if isinstance(store, FileKeyStore) else (store._redis, store.prefix)


def _entries(path: Path) -> list[dict]:
    return yaml.safe_load(path.read_text())


def test_cli_limit_sets_lists_and_clears_a_keys_own_limit(tmp_path, capsys):
    keys_file = tmp_path / "keys.yaml"
    key = FileKeyStore(keys_file).create("alice")
    options = ["--store", "file", "--keys-file", str(keys_file)]
    assert keys_cli([*options, "limit", key.public_key, "--rate", "0.5", "--burst", "3"]) == 0
    assert keys_cli([*options, "limit", key.public_key, "--bucket", "query", "--rate", "0", "--burst", "1"]) == 0
    assert capsys.readouterr().out == f"{key.public_key}\tgenerate: 0.5/s burst 3\n{key.public_key}\tquery: unlimited\n"
    assert FileKeyStore(keys_file).get(key.public_key).rate_limit(Bucket.GENERATE) == RateLimit(per_s=0.5, burst=3)
    assert _entries(keys_file)[0]["rate_limit_generate"] == {"per_s": 0.5, "burst": 3}

    assert keys_cli([*options, "list"]) == 0
    assert capsys.readouterr().out == f"{key.public_key}\talice\tenabled\tgenerate: 0.5/s burst 3\tquery: unlimited\n"
    assert keys_cli([*options, "limit", key.public_key, "--clear"]) == 0
    assert capsys.readouterr().out == f"{key.public_key}\tgenerate: the settings' limit\n"
    assert FileKeyStore(keys_file).get(key.public_key).rate_limit(Bucket.GENERATE) is None


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--rate", "-1", "--burst", "2"], "--rate: must be 0 or more"),
        (["--rate", "nan", "--burst", "2"], "--rate: must be 0 or more"),
        (["--rate", "1", "--burst", "0"], "--burst: must be 1 or more"),
        (["--rate", "1", "--burst", "1.5"], "--burst: not an integer"),
        (["--rate", "1"], "--burst is required with --rate"),
        (["--rate", "1", "--burst", "2", "--clear"], "not allowed with argument"),
        ([], "one of the arguments --rate --clear is required"),
    ],
)
def test_cli_limit_refuses_numbers_no_bucket_can_have(tmp_path, capsys, args, problem):
    keys_file = tmp_path / "keys.yaml"
    key = FileKeyStore(keys_file).create("alice")
    with pytest.raises(SystemExit) as exit_status:
        keys_cli(["--keys-file", str(keys_file), "limit", key.public_key, *args])
    assert exit_status.value.code == 2 and problem in capsys.readouterr().err
    assert FileKeyStore(keys_file).get(key.public_key) == key


def test_cli_limit_of_an_unknown_key_exits_2(tmp_path, capsys):
    keys_file = tmp_path / "keys.yaml"
    assert keys_cli(["--keys-file", str(keys_file), "limit", "nobody", "--clear"]) == 2
    assert "unknown public key: nobody" in capsys.readouterr().err


def test_a_bucket_gives_its_burst_then_names_the_wait_and_expires_once_full_again(tmp_path, redis_client):
    keys = FileKeyStore(tmp_path / "keys.yaml")
    key = keys.create("alice")
    owner = key.public_key
    settings = Settings(rate_limit_generate_per_s=0.5, rate_limit_generate_burst=2)

    def take(bucket: Bucket) -> None:
        """One token, on an asyncio client as the gateway takes it."""

        async def on_loop() -> None:
            client = redis.asyncio.Redis.from_url(redis_url(RedisDb.RATE_LIMITS))
            try:
                await enforce(client, settings, key, owner, bucket)
            finally:
                await client.aclose()

        asyncio.run(on_loop())

    for _ in range(2):
        take(Bucket.GENERATE)
    with pytest.raises(RateLimited) as refused:
        take(Bucket.GENERATE)
    assert refused.value.retcode == 180
    assert "may send 0.5 generate requests per second (burst 2)" in refused.value.message
    assert 0 < float(RETRY_AFTER.search(refused.value.message)[1]) <= 2.0  # one token takes 2 s at 0.5/s
    bucket = rate_limit_key(owner, Bucket.GENERATE)
    assert 0 < redis_client.pttl(bucket) <= 4001  # two tokens to refill at 0.5/s, then it is gone
    take(Bucket.QUERY)  # queries are off in these settings
    assert not redis_client.exists(rate_limit_key(owner, Bucket.QUERY))


# --- through the gateway -----------------------------------------------------------------


def new_key(gateway: Gateway, name: str) -> Key:
    """A key of its own for one test, so no test meets another's buckets."""
    created = FileKeyStore(keys_file(gateway)).create(name)
    return Key(created.public_key, created.private_key)


def keys_file(gateway: Gateway) -> Path:
    return Path(gateway.env["OPENPIK_KEYS_FILE"])


def limit(gateway: Gateway, key: Key, *args: str) -> None:
    """`openpik-keys limit` on the gateway's key file, as its operator would."""
    assert keys_cli(["--store", "file", "--keys-file", str(keys_file(gateway)), "limit", key.public, *args]) == 0


def retcodes(gateway: Gateway, body: dict, key: Key, times: int) -> list[int]:
    return [gateway.call(body, key=key)["RetCode"] for _ in range(times)]


def refused(gateway: Gateway, body: dict, key: Key) -> float:
    """Send once more, expect 180, and return the wait its message names."""
    answer = gateway.call(body, key=key)
    assert answer["RetCode"] == 180, answer
    wait = RETRY_AFTER.search(answer["Message"])
    assert wait, answer["Message"]
    return float(wait[1])


@pytest.fixture(scope="module")
def limited(tiny_catalog_path, tmp_path_factory):
    """A gateway with both limits on (and no worker: accepted tasks stay queued)."""
    tmp = tmp_path_factory.mktemp("rate-limited")
    env = stack_settings(tiny_catalog_path, tmp, RedisDb.RATE_LIMITS, **LIMITED)
    with running_stack(env, tmp) as stack:
        yield stack.gateway
    fresh_redis(RedisDb.RATE_LIMITS)


@pytest.fixture(scope="module")
def stack_redis() -> Iterator[redis.Redis]:
    client = open_redis(RedisDb.RATE_LIMITS)
    yield client
    client.close()


@pytest.mark.stack
@pytest.mark.models
def test_a_key_over_its_rate_gets_180_queues_nothing_and_another_key_is_unaffected(limited, stack_redis):
    alice, bob = new_key(limited, "alice"), new_key(limited, "bob")
    assert retcodes(limited, txt2img(), alice, 2) == [0, 0]
    queued = stack_redis.llen(DEFAULT_QUEUE), stack_redis.zcard(queued_key(DEFAULT_QUEUE)), stack_redis.dbsize()
    wait = refused(limited, txt2img(), alice)
    assert 0 < wait <= 5.0  # one token takes 5 s at 0.2/s
    assert (
        stack_redis.llen(DEFAULT_QUEUE),
        stack_redis.zcard(queued_key(DEFAULT_QUEUE)),
        stack_redis.dbsize(),
    ) == queued
    assert retcodes(limited, txt2img(), bob, 2) == [0, 0]


@pytest.mark.stack
@pytest.mark.models
def test_the_bucket_refills_at_its_rate_after_the_wait_the_message_names(limited):
    key = new_key(limited, "patient")
    assert retcodes(limited, txt2img(), key, 2) == [0, 0]
    time.sleep(refused(limited, txt2img(), key))
    assert limited.call(txt2img(), key=key)["RetCode"] == 0
    assert 0 < refused(limited, txt2img(), key) <= 5.0  # one token came back, not the burst


@pytest.mark.stack
@pytest.mark.models
def test_queries_and_generate_actions_take_from_separate_buckets(limited):
    submitter = new_key(limited, "submitter")
    first = limited.call(txt2img(), key=submitter)
    assert first["RetCode"] == 0 and limited.call(txt2img(), key=submitter)["RetCode"] == 0
    refused(limited, txt2img(), submitter)
    detail = limited.call({"Action": "GetGenerateTaskDetail", "TaskUID": first["TaskUID"]}, key=submitter)
    assert detail["RetCode"] == 0 and detail["TaskStatus"] == "Queuing"
    assert (
        limited.call({"Action": "ListTasksDetails", "TaskUIDList": [first["TaskUID"]]}, key=submitter)["RetCode"] == 0
    )

    poller = new_key(limited, "poller")  # the other way round: queries used up, generating still works
    assert retcodes(limited, LIST_MODELS, poller, 2) == [0, 0]
    assert limited.call({"Action": "ListControlNets"}, key=poller)["RetCode"] == 0
    refused(limited, {"Action": "ListControlNetProcessor"}, poller)
    refused(limited, {"Action": "GetGenerateTaskDetail", "TaskUID": first["TaskUID"]}, poller)
    assert retcodes(limited, txt2img(), poller, 2) == [0, 0]


@pytest.mark.stack
@pytest.mark.models
def test_a_keys_own_limit_beats_the_settings_and_clearing_it_restores_them(limited):
    trusted, strict = new_key(limited, "trusted"), new_key(limited, "strict")
    limit(limited, trusted, "--rate", "0", "--burst", "1")
    assert retcodes(limited, txt2img(), trusted, 5) == [0] * 5
    limit(limited, strict, "--rate", "0.2", "--burst", "1")
    limit(limited, strict, "--bucket", "query", "--rate", "0.2", "--burst", "1")
    assert limited.call(txt2img(), key=strict)["RetCode"] == 0
    refused(limited, txt2img(), strict)
    assert limited.call(LIST_MODELS, key=strict)["RetCode"] == 0
    refused(limited, LIST_MODELS, strict)

    limit(limited, trusted, "--clear")
    assert retcodes(limited, txt2img(), trusted, 2) == [0, 0]
    refused(limited, txt2img(), trusted)


@pytest.mark.stack
@pytest.mark.models
def test_limits_are_off_by_default_and_keep_no_buckets(tiny_catalog_path, tmp_path, stack_redis):
    env = stack_settings(tiny_catalog_path, tmp_path, RedisDb.RATE_LIMITS)
    with running_stack(env, tmp_path, flush=False) as stack:  # flush=False: the module's stack keeps its DB
        gateway = stack.gateway
        key = new_key(gateway, "unlimited")
        assert retcodes(gateway, LIST_MODELS, key, 40) == [0] * 40
        assert retcodes(gateway, txt2img(), key, 10) == [0] * 10
        assert not any(stack_redis.exists(rate_limit_key(key.public, bucket)) for bucket in Bucket)

        limit(gateway, key, "--rate", "0.2", "--burst", "1")  # a key's own limit works with the defaults off
        assert gateway.call(txt2img(), key=key)["RetCode"] == 0
        refused(gateway, txt2img(), key)
        assert retcodes(gateway, LIST_MODELS, key, 5) == [0] * 5
