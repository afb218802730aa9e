"""Starting the real stack for tests: Redis databases, a uvicorn gateway, signed calls."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis
import yaml

from openpik.signing import sign

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Key:
    public: str
    private: str


KEY_A = Key("key-a-public", "key-a-private")
KEY_B = Key("key-b-public", "key-b-private")
DISABLED = Key("key-disabled", "key-disabled-private")


def write_keys_file(path: Path) -> Path:
    entries = [{"public_key": k.public, "private_key": k.private, "name": n, "enabled": k is not DISABLED}
               for k, n in ((KEY_A, "a"), (KEY_B, "b"), (DISABLED, "off"))]
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
        "OPENPIK_REDIS_URL": f"redis://127.0.0.1:6379/{db}",
    } | {f"OPENPIK_{name.upper()}": value for name, value in settings.items()}


def write_catalog_with_custom_model(tiny_catalog: Path, out: Path, owner: str) -> Path:
    """The tiny catalog plus main model 10, a custom_model that only ``owner`` may use."""
    data = yaml.safe_load(tiny_catalog.read_text())
    base = tiny_catalog.parent
    for kind in ("main_models", "vaes", "loras", "controlnets"):
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
    client = redis.Redis(host="127.0.0.1", port=6379, db=db)
    client.flushdb()
    return client


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
                [sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1", "--port", str(self.port),
                 "--log-level", "warning"], cwd=REPO, env=self.env, stdout=output,
                stderr=subprocess.STDOUT if output else None)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("the gateway did not start")

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
        return httpx.post(f"{self.url}/", json=json_body, content=content, timeout=30,
                          headers={"Content-Type": "application/json"}, **kwargs)


def signed(body: dict, key: Key = KEY_A, **overrides) -> dict:
    """``body`` with PublicKey and a valid Signature (overrides replace fields after signing)."""
    with_key = {"PublicKey": key.public} | body
    return with_key | {"Signature": sign(with_key, key.private)} | overrides


class Worker:
    """An `openpik-worker` process (Celery main process plus its one pool child); metrics off unless asked."""

    def __init__(self, env: dict[str, str], log_dir: Path, name: str, queues: str = "openpik.default",
                 metrics_port: int = 0):
        self.name = name
        self.queues = queues
        self.metrics_port = metrics_port
        self.env = os.environ | {"OPENPIK_DEVICE": "cpu"} | env
        self.log = log_dir / f"worker-{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> Worker:
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "--queues", self.queues, "--name", f"{self.name}@test",
                 "--loglevel", "INFO", "--metrics-port", str(self.metrics_port)],
                cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log.read_text():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"worker {self.name} not ready:\n{self.log.read_text()[-3000:]}")

    def child_pids(self) -> list[int]:
        import psutil

        return [c.pid for c in psutil.Process(self.process.pid).children(recursive=True)]

    def kill(self) -> None:
        """kill -9 of the whole worker: main process and pool child."""
        import signal

        for pid in [*self.child_pids(), self.process.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.kill()


class RedisServer:
    """A redis-server of our own, with the shipped durability settings (AOF, fsync always)."""

    def __init__(self, data_dir: Path, port: int | None = None):
        self.port = port or free_port()
        self.dir = data_dir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", str(REPO / "configs" / "redis.conf"), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.dir), "--daemonize", "no", "--logfile", str(self.dir / "redis.log")])
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.kill()


def wait_for(predicate, timeout: float, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")
