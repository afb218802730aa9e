"""Starting the real stack for tests and benchmarks: Redis databases, a uvicorn gateway, workers, signed calls."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import redis
import yaml
from PIL import Image

from openpik.routing import DEFAULT_QUEUE
from openpik.signing import sign

REPO = Path(__file__).resolve().parent.parent
REDIS_PORT = 6379
"""The test Redis: 127.0.0.1 on this port (scripts/ensure-redis.sh starts one if none answers)."""


@enum.unique
class RedisDb(enum.IntEnum):
    """The database each user of the test Redis works in: one member per user, none shared.

    Suites flush their database and kill processes that write to it, so two suites on one
    database would disturb each other; `make bench` (BENCH) may run beside the tests. DB 0
    is left to `make run`. A new suite or benchmark takes a number of its own here.
    """

    AUTOSCALE = 1  # tests/test_autoscale_metrics.py: queue depth and oldest-task age gauges
    RATE_LIMITS = 2  # tests/test_rate_limits.py: per-key token buckets, the key stores' overrides
    DROP_IN = 3  # tests/test_drop_in.py: realistic client bodies, the catalog round trip
    COMPILE = 4  # tests/test_compile.py: a compiled worker
    METRICS = 5  # tests/test_metrics_and_logs.py
    LIVE_STACK = 6  # tests/conftest.py live_stack, shared by test_client.py and test_playground.py
    LOAD = 7  # tests/test_load.py
    BACKPRESSURE = 8  # tests/test_backpressure.py
    BENCH = 9  # every benchmark of bench/
    FUZZ = 10  # tests/test_fuzz.py
    FAULTS = 11  # tests/test_end_to_end.py's fault scenarios, away from its shared stack
    END_TO_END = 12  # tests/test_end_to_end.py's shared stack
    GATEWAY = 13  # tests/test_gateway.py
    RESULTS = 14  # tests/test_results.py: result URLs and expiry
    KEYS = 15  # tests/test_keys.py: Redis key stores, each under a prefix of its own


def redis_url(db: int, port: int = REDIS_PORT) -> str:
    """The URL of database ``db`` of the Redis on 127.0.0.1:``port`` (the test Redis by default)."""
    return f"redis://127.0.0.1:{port}/{int(db)}"


def open_redis(db: int, **options) -> redis.Redis:
    """A client on database ``db`` of the test Redis; ``options`` go to redis.Redis."""
    return redis.Redis.from_url(redis_url(db), **options)


@dataclass(frozen=True)
class Key:
    public: str
    private: str


KEY_A = Key("key-a-public", "key-a-private")
KEY_B = Key("key-b-public", "key-b-private")
DISABLED = Key("key-disabled", "key-disabled-private")


def write_keys_file(path: Path) -> Path:
    entries = [
        {"public_key": k.public, "private_key": k.private, "name": n, "enabled": k is not DISABLED}
        for k, n in ((KEY_A, "a"), (KEY_B, "b"), (DISABLED, "off"))
    ]
    path.write_text(yaml.safe_dump(entries))
    return path


def stack_settings(catalog: Path, tmp: Path, db: int, **settings: str) -> dict[str, str]:
    """A test stack's environment: its catalog, keys, results folder and Redis database.

    ``settings`` add OPENPIK_ variables by their lower-case names: ``max_queue_depth="5"``.
    """
    return {
        "OPENPIK_CATALOG": str(catalog),
        "OPENPIK_KEYS_FILE": str(write_keys_file(tmp / "keys.yaml")),
        "OPENPIK_RESULTS_DIR": str(tmp / "results"),
        "OPENPIK_REDIS_URL": redis_url(db),
    } | {f"OPENPIK_{name.upper()}": value for name, value in settings.items()}


def write_catalog_with_custom_model(tiny_catalog: Path, out: Path, owner: str) -> Path:
    """The tiny catalog plus main model 10, a custom_model that only ``owner`` may use."""
    data = yaml.safe_load(tiny_catalog.read_text())
    base = tiny_catalog.parent
    for kind in ("main_models", "vaes", "loras", "controlnets", "background_removers"):
        for entry in data[kind]:
            for field in ("path", "config"):
                if entry.get(field):
                    entry[field] = str(base / entry[field])
    data["annotators_dir"] = str(base / data["annotators_dir"])
    custom = dict(data["main_models"][0], id=10, model_code="my-own-model", name="Mine", owner=owner)
    custom.pop("vae", None)
    data["main_models"].append(custom)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_redis(db: int) -> redis.Redis:
    """A client on database ``db`` of the test Redis, emptied."""
    client = open_redis(db)
    client.flushdb()
    return client


def redis_fixture(db: RedisDb, empty_after: bool = False):
    """A module-scoped ``redis_client`` fixture on ``db``, emptied first (and after the module, if asked).

    In a test module: ``redis_client = redis_fixture(RedisDb.GATEWAY)``.
    """

    @pytest.fixture(scope="module", name="redis_client")
    def redis_client() -> Iterator[redis.Redis]:
        client = fresh_redis(db)
        yield client
        if empty_after:
            client.flushdb()

    return redis_client


def own_redis_fixtures(name: str):
    """A module-scoped ``server`` fixture (a redis-server of the module's own, for suites that
    need a whole Redis: every database of the shared one is taken) and a per-test ``client``
    fixture on it, emptied first.

    In a test module: ``server, client = own_redis_fixtures("affinity")``.
    """

    @pytest.fixture(scope="module", name="server")
    def server(tmp_path_factory) -> Iterator[RedisServer]:
        started = RedisServer(tmp_path_factory.mktemp(f"{name}-redis")).start()
        yield started
        started.stop()

    @pytest.fixture(name="client")
    def client(server: RedisServer) -> Iterator[redis.Redis]:
        connection = redis.Redis.from_url(server.url)
        connection.flushdb()
        yield connection
        connection.close()

    return server, client


def download_image(url: str) -> Image.Image:
    """A result image as the gateway serves it (a PNG), read."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png", response
    return Image.open(io.BytesIO(response.content))


def answers_health(url: str) -> bool:
    """Whether the server at ``url`` answers GET /healthz with 200 now."""
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


class Gateway:
    """A uvicorn process serving api.app:app with the given environment (its output in ``log``, if given)."""

    def __init__(self, env: dict[str, str], port: int | None = None, log: Path | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = os.environ | {"OPENPIK_PUBLIC_URL": self.url} | env
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> Gateway:
        with open(self.log, "w") if self.log else contextlib.nullcontext() as output:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "api.app:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                ],
                cwd=REPO,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
            )
        wait_for(lambda: answers_health(self.url), 30, message="the gateway to start", error=RuntimeError)
        return self

    def stop(self) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=10)

    def call(self, body: dict, key: Key = KEY_A, **overrides) -> dict:
        response = self.post(signed(body, key, **overrides))
        return response.json()

    def post(self, body: dict | bytes, **kwargs) -> httpx.Response:
        content = body if isinstance(body, bytes) else None
        json_body = None if isinstance(body, bytes) else body
        return httpx.post(
            f"{self.url}/",
            json=json_body,
            content=content,
            timeout=30,
            headers={"Content-Type": "application/json"},
            **kwargs,
        )


def signed(body: dict, key: Key = KEY_A, **overrides) -> dict:
    """``body`` with PublicKey and a valid Signature (overrides replace fields after signing)."""
    with_key = {"PublicKey": key.public} | body
    return with_key | {"Signature": sign(with_key, key.private)} | overrides


class Worker:
    """An `openpik-worker` process (Celery main process plus its one pool child); metrics off unless asked."""

    def __init__(
        self, env: dict[str, str], log_dir: Path, name: str, queues: str = DEFAULT_QUEUE, metrics_port: int = 0
    ):
        self.name = name
        self.queues = queues
        self.metrics_port = metrics_port
        self.env = os.environ | {"OPENPIK_DEVICE": "cpu"} | env
        self.log = log_dir / f"worker-{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> Worker:
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "worker.cli",
                    "--queues",
                    self.queues,
                    "--name",
                    f"{self.name}@test",
                    "--loglevel",
                    "INFO",
                    "--metrics-port",
                    str(self.metrics_port),
                ],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            if " ready." in self.log.read_text():
                return True
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited:\n{self.log_tail()}")
            return False

        wait_for(
            ready,
            timeout,
            interval=0.2,
            message=lambda: f"worker {self.name} to be ready:\n{self.log_tail()}",
            error=RuntimeError,
        )

    def log_tail(self) -> str:
        return self.log.read_text()[-3000:]

    def child_pids(self) -> list[int]:
        import psutil

        return [c.pid for c in psutil.Process(self.process.pid).children(recursive=True)]

    def kill(self) -> None:
        """kill -9 of the whole worker: main process and pool child."""
        import signal

        for pid in [*self.child_pids(), self.process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.kill()


class RedisServer:
    """A redis-server of our own, with the shipped durability settings (AOF, fsync always).

    ``config`` and ``args`` make it another kind: a replica (``--replicaof``), a Sentinel
    (a writable copy of configs/sentinel/sentinel.conf and ``--sentinel``).
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        config: Path = REPO / "configs" / "redis.conf",
        args: tuple[str, ...] = (),
    ):
        self.port = port or free_port()
        self.dir = data_dir
        self.config = config
        self.args = args
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return redis_url(0, port=self.port)

    def start(self) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server",
                str(self.config),
                *self.args,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--daemonize",
                "no",
                "--logfile",
                str(self.dir / "redis.log"),
            ]
        )
        client = redis.Redis.from_url(self.url)

        def pings() -> bool:
            try:
                return client.ping()
            except redis.ConnectionError:
                return False

        wait_for(pings, 10, interval=0.05, message="redis-server to start", error=RuntimeError)
        return self

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.kill()


@dataclass
class Stack:
    """A running gateway and the workers started beside it (see running_stack)."""

    gateway: Gateway
    log_dir: Path
    """Where the workers write their logs."""
    workers: list[Worker] = dataclasses.field(default_factory=list)

    @property
    def worker(self) -> Worker:
        """The first worker started."""
        return self.workers[0]

    def start_worker(self, name: str, queues: str = DEFAULT_QUEUE, wait: bool = True, **options) -> Worker:
        """A worker on the gateway's settings, stopped with the stack (even if it never gets ready)."""
        worker = Worker(self.gateway.env, self.log_dir, name, queues, **options)
        self.workers.append(worker)
        return worker.start(wait)


@contextlib.contextmanager
def running_stack(
    env: dict[str, str], log_dir: Path, worker: str | None = None, gateway_log: Path | None = None, flush: bool = True
) -> Iterator[Stack]:
    """A gateway on ``env`` (see stack_settings), and a worker named ``worker`` if one is named.

    The Redis database of ``env`` is emptied first unless ``flush`` is false; on the way out
    every worker started through the stack is stopped, then the gateway.
    """
    if flush:
        with redis.Redis.from_url(env["OPENPIK_REDIS_URL"]) as client:
            client.flushdb()
    stack = Stack(Gateway(env, log=gateway_log).start(), log_dir)
    try:
        if worker:
            stack.start_worker(worker)
        yield stack
    finally:
        for started in stack.workers:
            started.stop()
        stack.gateway.stop()


@contextlib.contextmanager
def own_redis_stack(
    catalog: Path, tmp: Path, worker: str | None = None, **settings: str
) -> Iterator[tuple[Stack, RedisServer]]:
    """running_stack on a redis-server of its own (every database of the shared one is taken),
    with stack_settings' ``settings``; the server is stopped on the way out."""
    server = RedisServer(tmp / "redis").start()
    env = stack_settings(catalog, tmp, 0, **settings) | {"OPENPIK_REDIS_URL": server.url}
    try:
        with running_stack(env, tmp, worker=worker) as stack:
            yield stack, server
    finally:
        server.stop()


T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.1,
    message: str | Callable[[], str] = "condition",
    error: type[Exception] = AssertionError,
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something true, and return that.

    After ``timeout`` seconds, raise ``error`` naming ``message`` (what was awaited; a function
    is called then, e.g. to add a log's tail). A predicate gives up early by raising.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    what = message() if callable(message) else message
    raise error(f"timed out after {timeout}s waiting for {what}")
