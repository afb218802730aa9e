"""Signed webhooks (spec section 11): CallbackUrl, the keys' prefixes, the callbacks queue, CallbackStatus.

The stack runs on a redis-server of its own, a worker that only generates (the stub engine:
these tests are about delivery, not pixels) and a callbacks-only worker, so every webhook
these tests receive came from the callbacks queue. Receivers are HTTP servers on 127.0.0.1
in a thread of the test, and verify what they get with `standardwebhooks`, as a client would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import redis
import yaml
from standardwebhooks import Webhook, WebhookVerificationError

from api.keys_cli import main as keys_cli
from openpik.callbacks import CallbackUrlError, callback_allowed, normalized_url, retry_delay
from openpik.keys import FileKeyStore, RedisKeyStore
from openpik.routing import CALLBACK_QUEUE, DEFAULT_QUEUE, DEFAULT_WORKER_QUEUES
from openpik.settings import Settings
from openpik.task_records import TaskRecord
from openpik.vocabulary import TaskStatus
from tests.requests import img2img, txt2img
from tests.stack import (
    KEY_A,
    KEY_B,
    REPO,
    RedisDb,
    RedisServer,
    Worker,
    free_port,
    redis_url,
    running_stack,
    stack_settings,
    wait_for,
)
from worker.callbacks import webhook_body, webhook_headers
from worker.cli import main as worker_cli

RETRY_WINDOW_S = 8
"""Short, so the redirect test sees its callback fail; ample for three quick attempts."""
FLAKY_FAILURES = 2


# --- the prefix rule (pure) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://Hooks.Example.com", "https://hooks.example.com/"),
        ("HTTP://127.0.0.1:8080/a/B?x=1", "http://127.0.0.1:8080/a/B?x=1"),
        ("https://hooks.example.com/in", "https://hooks.example.com/in"),
    ],
)
def test_urls_are_normalized(url, expected):
    assert normalized_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/",
        "hooks.example.com/x",
        "https:///path-only",
        "https://user:secret@hooks.example.com/",
        "https://hooks.example.com:port/",
        "https://hooks.example.com/a b",
        "https://hooks.example.com/" + "x" * 2048,
    ],
)
def test_unusable_urls_are_refused(url):
    with pytest.raises(CallbackUrlError):
        normalized_url(url)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.example.com/", True),
        ("https://hooks.example.com/deep/path?q=1", True),
        ("https://HOOKS.example.com/x", True),
        ("https://hooks.example.com.attacker.net/x", False),
        ("https://hooks.example.com@attacker.net/x", False),
        ("http://hooks.example.com/x", False),
        ("https://hooks.example.com:8443/x", False),
        ("https://api.example.net/hooksx", False),
        ("https://api.example.net/hooks/x", True),
    ],
)
def test_prefix_rule(url, allowed):
    prefixes = [normalized_url("https://hooks.example.com"), normalized_url("https://api.example.net/hooks/")]
    try:
        normalized = normalized_url(url)
    except CallbackUrlError:
        normalized = None
    assert (normalized is not None and callback_allowed(normalized, prefixes)) is allowed


def test_no_prefix_allows_nothing():
    assert not callback_allowed("https://hooks.example.com/", [])


def test_retry_delays_double_with_jitter_up_to_the_cap():
    for attempt, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (10, 30.0)]:
        delays = [retry_delay(attempt, 2.0, 30.0) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


def test_a_worker_without_queue_options_serves_callbacks(capsys):
    assert set(DEFAULT_WORKER_QUEUES) == {DEFAULT_QUEUE, CALLBACK_QUEUE}
    with pytest.raises(SystemExit):
        worker_cli(["--help"])
    assert f"(default: {DEFAULT_QUEUE},{CALLBACK_QUEUE})" in " ".join(capsys.readouterr().out.split())


# --- the key stores' commands ------------------------------------------------------------


@pytest.fixture(params=["file", "redis"])
def cli_store(request, tmp_path):
    """Options pointing `openpik-keys` at a store, a store reading the same keys, and a key in it."""
    public_key = f"webhooks-{uuid.uuid4().hex}"
    if request.param == "file":
        keys_file = tmp_path / "keys.yaml"
        yield ["--store", "file", "--keys-file", str(keys_file)], FileKeyStore(keys_file), public_key
        return
    client = request.getfixturevalue("keys_redis")
    store = RedisKeyStore(client)
    yield ["--store", "redis", "--redis-url", redis_url(RedisDb.KEYS)], store, public_key
    client.delete(store.prefix + public_key)


def test_allow_and_deny_callback_commands(cli_store, capsys):
    options, store, public_key = cli_store
    assert keys_cli([*options, "import", "--public-key", public_key, "--private-key", "secret-1"]) == 0
    assert store.callback_url_prefixes(public_key) == []
    assert keys_cli([*options, "allow-callback", public_key, "https://Hooks.example.com"]) == 0
    assert keys_cli([*options, "allow-callback", public_key, "https://hooks.example.com/"]) == 0  # no duplicate
    assert keys_cli([*options, "allow-callback", public_key, "http://10.0.0.7:9000/in/"]) == 0
    assert store.callback_url_prefixes(public_key) == ["https://hooks.example.com/", "http://10.0.0.7:9000/in/"]
    capsys.readouterr()
    assert keys_cli([*options, "list"]) == 0
    assert "callbacks: https://hooks.example.com/ http://10.0.0.7:9000/in/" in capsys.readouterr().out
    assert keys_cli([*options, "deny-callback", public_key, "https://hooks.example.com"]) == 0
    assert store.callback_url_prefixes(public_key) == ["http://10.0.0.7:9000/in/"]
    store.disable(public_key)
    assert store.callback_url_prefixes(public_key) == []  # a disabled key has no callbacks
    assert store.get(public_key).callback_url_prefixes == ["http://10.0.0.7:9000/in/"]


def test_callback_commands_refuse_bad_prefixes_and_unknown_keys(cli_store, capsys):
    options, _, public_key = cli_store
    with pytest.raises(SystemExit) as exit_info:
        keys_cli([*options, "allow-callback", public_key, "ftp://hooks.example.com/"])
    assert exit_info.value.code == 2 and "http:// or https://" in capsys.readouterr().err
    assert keys_cli([*options, "allow-callback", public_key, "https://hooks.example.com/"]) == 2
    assert "unknown public key" in capsys.readouterr().err


def test_prefixes_survive_other_changes_in_both_stores(cli_store):
    _, store, public_key = cli_store
    store.import_key(public_key, "secret-1", "acme")
    store.allow_callback(public_key, "https://hooks.example.com")
    rotated = store.rotate(public_key)
    assert rotated.callback_url_prefixes == ["https://hooks.example.com/"]
    assert store.get(public_key).callback_url_prefixes == ["https://hooks.example.com/"]


def test_a_hand_written_key_file_is_normalized(tmp_path):
    path = tmp_path / "keys.yaml"
    entry = {"public_key": "p", "private_key": "s", "name": "n", "callback_url_prefixes": ["HTTPS://Hooks.Example.com"]}
    path.write_text(yaml.safe_dump([entry]))
    assert FileKeyStore(path).callback_url_prefixes("p") == ["https://hooks.example.com/"]
    FileKeyStore(path).rotate("p")  # a rewrite keeps the prefixes, and no empty list for keys without them
    assert yaml.safe_load(path.read_text())[0]["callback_url_prefixes"] == ["https://hooks.example.com/"]


# --- the real stack ----------------------------------------------------------------------


class Receiver:
    """An HTTP server on 127.0.0.1 in a thread: /ok/* answers 200, /flaky/* 500 twice then 200,
    /redirect/* 307 to /target/*, which answers 200. Every request is recorded by path."""

    def __init__(self) -> None:
        self.requests: dict[str, list[tuple[dict[str, str], bytes]]] = defaultdict(list)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    seen = receiver.requests[self.path]
                    seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    count = len(seen)
                self.send_response(receiver.status(self.path, count))
                if self.path.startswith("/redirect/"):
                    self.send_header("Location", receiver.url + self.path.replace("/redirect/", "/target/"))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def status(path: str, count: int) -> int:
        if path.startswith("/flaky/"):
            return 500 if count <= FLAKY_FAILURES else 200
        return 307 if path.startswith("/redirect/") else 200

    def received(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return list(self.requests[path])


@pytest.fixture(scope="module")
def receiver():
    receiver = Receiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture(scope="module")
def webhook_stack(tiny_catalog_path, tmp_path_factory, receiver):
    """A gateway, a generate-only worker and a callbacks-only worker on a redis-server of their own.

    The callbacks worker runs with the diffusers engine and compile on: were it to warm up models
    as a generate worker does, its pool child would load torch (test_callbacks_worker_loads_no_model).
    """
    tmp = tmp_path_factory.mktemp("webhooks")
    server = RedisServer(tmp / "redis").start()
    env = stack_settings(
        tiny_catalog_path,
        tmp,
        0,  # replaced just below by the server of our own
        engine="stub",
        callback_retry_s=str(RETRY_WINDOW_S),
        callback_backoff_s="0.2",
        callback_backoff_max_s="0.5",
        callback_timeout_s="5",
        progress_interval_s="0",
    ) | {"OPENPIK_REDIS_URL": server.url}
    allow = [sys.executable, "-m", "api.keys_cli", "--keys-file", env["OPENPIK_KEYS_FILE"], "allow-callback"]
    subprocess.run([*allow, KEY_A.public, receiver.url + "/"], cwd=REPO, check=True, capture_output=True)
    try:
        with running_stack(env, tmp, worker=None) as stack:
            stack.start_worker("generate", queues=DEFAULT_QUEUE)
            callbacks_env = stack.gateway.env | {"OPENPIK_ENGINE": "diffusers", "OPENPIK_COMPILE": "true"}
            callbacks = Worker(callbacks_env, tmp, "callbacks", CALLBACK_QUEUE, metrics_port=free_port())
            stack.workers.append(callbacks)
            callbacks.start()
            yield stack, server
    finally:
        server.stop()


def list_item(gateway, task_id: str, key=KEY_A) -> dict:
    answer = gateway.call({"Action": "ListTasksDetails", "TaskUIDList": [task_id]}, key)
    assert answer["RetCode"] == 0, answer
    return answer["TaskDetailList"][0]


def callback_settled(gateway, task_id: str) -> dict:
    return wait_for(
        lambda: (item := list_item(gateway, task_id)).get("CallbackStatus") in ("delivered", "failed") and item,
        60,
        message=f"the callback of task {task_id} to settle",
    )


def submit(gateway, body: dict, key=KEY_A) -> str:
    answer = gateway.call(body, key)
    assert answer["RetCode"] == 0, answer
    return answer["TaskUID"]


def verified(headers: dict[str, str], body: bytes, private_key: str = KEY_A.private) -> dict:
    """What a receiver does: the raw body and the headers, the PrivateKey's UTF-8 bytes as the secret."""
    return Webhook(private_key.encode()).verify(body, headers)


def callbacks_metric(worker: Worker, outcome: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=5).text
    line = f'openpik_callbacks_total{{outcome="{outcome}"}} '
    return next(float(row.removeprefix(line)) for row in text.splitlines() if row.startswith(line))


@pytest.mark.stack
@pytest.mark.models
def test_one_verified_post_per_task_carrying_its_list_item(webhook_stack, receiver, catalog):
    stack, _ = webhook_stack
    gateway = stack.gateway
    bodies = {
        "/ok/txt2img": txt2img(Seed=11),
        "/ok/img2img": img2img(Seed=12),
        "/ok/images": {"Action": "GenerateImages", "MainModel": {"ModelCode": catalog.main_models[0].model_code}},
    }
    tasks = {path: submit(gateway, body | {"CallbackUrl": receiver.url + path}) for path, body in bodies.items()}
    for path, task_id in tasks.items():
        item = callback_settled(gateway, task_id)
        assert item["Status"] == "Finished" and item["CallbackStatus"] == "delivered"
        (headers, body), *more = receiver.received(path)
        assert more == []
        assert headers["webhook-id"] == task_id and headers["content-type"] == "application/json"
        assert verified(headers, body) == {k: v for k, v in item.items() if k != "CallbackStatus"}
        with pytest.raises(WebhookVerificationError):
            verified(headers, body, KEY_B.private)
        with pytest.raises(WebhookVerificationError):  # the base64 (whsec_) reading of the key is not ours
            Webhook(KEY_A.private).verify(body, headers)
        legacy = gateway.call({"Action": "GetGenerateTaskDetail", "TaskUID": task_id})
        listed = gateway.call({"Action": "ListGenerateTaskDetail", "TaskUIDs": [task_id]})
        assert legacy["CallbackStatus"] == listed["TaskDetailList"][0]["CallbackStatus"] == "delivered"


@pytest.mark.stack
@pytest.mark.models
def test_a_receiver_failing_twice_gets_three_attempts(webhook_stack, receiver):
    stack, _ = webhook_stack
    callbacks = stack.workers[-1]
    delivered, retried = callbacks_metric(callbacks, "delivered"), callbacks_metric(callbacks, "retried")
    task_id = submit(stack.gateway, txt2img(Seed=21, CallbackUrl=receiver.url + "/flaky/1"))
    assert callback_settled(stack.gateway, task_id)["CallbackStatus"] == "delivered"
    attempts = receiver.received("/flaky/1")
    assert len(attempts) == FLAKY_FAILURES + 1
    assert {headers["webhook-id"] for headers, _ in attempts} == {task_id}  # one message, retried
    assert all(verified(headers, body)["TaskUID"] == task_id for headers, body in attempts)
    assert callbacks_metric(callbacks, "delivered") == delivered + 1
    assert callbacks_metric(callbacks, "retried") == retried + FLAKY_FAILURES


@pytest.mark.stack
@pytest.mark.models
@pytest.mark.parametrize(
    ("key", "url", "reason"),
    [
        (KEY_A, "http://127.0.0.1:1/elsewhere", "not under any callback URL prefix"),
        (KEY_B, "{receiver}/ok/b", "not under any callback URL prefix"),  # KEY_B may use none
        (KEY_A, "ftp://127.0.0.1/x", "http:// or https://"),
        (KEY_A, "{receiver}@127.0.0.1:1/x", "user name or password"),
    ],
)
def test_a_url_outside_the_prefixes_is_refused_and_nothing_queued(webhook_stack, receiver, key, url, reason):
    stack, server = webhook_stack
    store = redis.Redis.from_url(server.url)
    queued, records = store.llen(DEFAULT_QUEUE), len(list(store.scan_iter(match="openpik:task:*")))
    answer = stack.gateway.call(txt2img(Seed=31, CallbackUrl=url.format(receiver=receiver.url)), key)
    assert answer["RetCode"] == 230 and answer["Message"].startswith("CallbackUrl: ") and reason in answer["Message"]
    assert "TaskUID" not in answer or not answer["TaskUID"]
    assert store.llen(DEFAULT_QUEUE) == queued
    assert len(list(store.scan_iter(match="openpik:task:*"))) == records


@pytest.mark.stack
@pytest.mark.models
def test_tasks_without_a_callback_show_no_callback_status(webhook_stack):
    gateway = webhook_stack[0].gateway
    task_id = submit(gateway, txt2img(Seed=41, CallbackUrl=""))  # empty: not set, as typed clients send it
    wait_for(lambda: list_item(gateway, task_id)["Status"] == "Finished", 60, message="the task to finish")
    answers = [
        list_item(gateway, task_id),
        gateway.call({"Action": "GetGenerateTaskDetail", "TaskUID": task_id}),
        gateway.call({"Action": "ListGenerateTaskDetail", "TaskUIDs": [task_id]})["TaskDetailList"][0],
    ]
    assert answers[1]["RetCode"] == 0 and answers[1]["TaskStatus"] == "Finished"
    assert all("CallbackStatus" not in answer for answer in answers)


@pytest.mark.stack
@pytest.mark.models
def test_callbacks_worker_loads_no_model(webhook_stack):
    """Compile is on for it, yet its pool child never warms up: no torch library is mapped."""
    callbacks = webhook_stack[0].workers[-1]
    for pid in callbacks.child_pids():
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "libtorch" not in maps
    assert "warm" not in callbacks.log.read_text()


@pytest.mark.stack
@pytest.mark.models
def test_a_redirect_is_not_followed_and_the_callback_fails(webhook_stack, receiver):
    stack, _ = webhook_stack
    callbacks = stack.workers[-1]
    failed = callbacks_metric(callbacks, "failed")
    task_id = submit(stack.gateway, txt2img(Seed=51, CallbackUrl=receiver.url + "/redirect/1"))
    assert callback_settled(stack.gateway, task_id)["CallbackStatus"] == "failed"
    assert receiver.received("/target/1") == []
    attempts = receiver.received("/redirect/1")
    assert len(attempts) >= 2  # retried within the window, each time refusing the redirect
    assert callbacks_metric(callbacks, "failed") == failed + 1


def test_webhook_body_is_the_item_as_utf8_json():
    """The body the worker signs is the item's JSON; a receiver parses it back to the same item."""
    record = TaskRecord(
        task_id="t" * 20,
        owner="o",
        action="GenerateTxt2Img",
        queue=DEFAULT_QUEUE,
        status=TaskStatus.FINISHED,
        results=["t/0.png"],
        seeds=[7],
        note="é",
        callback_url="https://h/",
        callback_status="pending",
    )
    body = webhook_body(record, Settings(public_url="https://pik.example/"))
    item = json.loads(body)
    assert item["ImgList"] == ["https://pik.example/results/t/0.png"] and "CallbackStatus" not in item
    assert item["Note"] == "é" and "é".encode() in body
    headers = webhook_headers(body, "key-a-private", record.task_id, datetime.now(UTC))
    assert Webhook(b"key-a-private").verify(body, headers) == item
