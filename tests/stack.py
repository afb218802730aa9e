"""Starting the real stack for tests: Redis databases, a uvicorn gateway, signed calls."""
from __future__ import annotations

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

from api.signature import sign

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
    """A uvicorn process serving api.app:app with the given environment."""

    def __init__(self, env: dict[str, str], port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = os.environ | {"OPENPIK_PUBLIC_URL": self.url} | env
        self.process: subprocess.Popen | None = None

    def start(self) -> Gateway:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "warning"], cwd=REPO, env=self.env)
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
