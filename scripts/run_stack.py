"""`make run`: the whole stack on one machine: gateway, one worker, demo keys; Ctrl-C stops it.

Uses OPENPIK_CATALOG when set, else the tiny demo models `make run` built in var/tiny, and
OPENPIK_KEYS_FILE when set, else var/demo-keys.yaml with one demo key pair.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

from openpik.keys import FileKeyStore

REPO = Path(__file__).resolve().parent.parent
VAR = REPO / "var"


def demo_key(keys_file: Path):
    store = FileKeyStore(keys_file)
    return next((k for k in store.list() if k.enabled), None) or store.create("demo")


def main() -> None:
    env = dict(os.environ)
    env.setdefault("OPENPIK_CATALOG", str(VAR / "tiny" / "catalog.yaml"))
    env.setdefault("OPENPIK_KEYS_FILE", str(VAR / "demo-keys.yaml"))
    env.setdefault("OPENPIK_RESULTS_DIR", str(VAR / "results"))
    port = env.setdefault("OPENPIK_PORT", "8000")
    url = env.setdefault("OPENPIK_PUBLIC_URL", f"http://127.0.0.1:{port}")
    key = demo_key(Path(env["OPENPIK_KEYS_FILE"]))

    processes = _redis_if_needed(env.get("OPENPIK_REDIS_URL", "redis://127.0.0.1:6379/0"))
    processes += [
        subprocess.Popen([sys.executable, "-m", "api.cli", "--port", port], cwd=REPO, env=env),
        subprocess.Popen([sys.executable, "-m", "worker.cli", "--loglevel", "WARNING"], cwd=REPO, env=env),
    ]
    try:
        _wait_healthy(url, processes)
        print(
            f"""
OpenPik is running at {url}   (catalog: {env["OPENPIK_CATALOG"]})
  PublicKey:  {key.public_key}
  PrivateKey: {key.private_key}

Try it (signed GenerateImg2Img with a LoRA and a ControlNet preset; images land in var/out):
  .venv/bin/python examples/generate_img2img.py --url {url} \\
      --public-key {key.public_key} --private-key {key.private_key}

Or in a browser (the keys above; signed in the page): {url}/playground

API document: {url}/docs      Ctrl-C stops everything make run started.
""",
            flush=True,
        )
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        print("a process exited; stopping", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def _redis_if_needed(url: str) -> list[subprocess.Popen]:
    """A redis-server (shipped config, data in var/redis) when none answers at ``url``."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        client.ping()
        return []
    except redis.ConnectionError:
        pass
    port = str(client.connection_pool.connection_kwargs.get("port", 6379))
    (VAR / "redis").mkdir(parents=True, exist_ok=True)
    print(f"starting redis-server on port {port} (data in var/redis)")
    try:
        process = subprocess.Popen(
            [
                "redis-server",
                str(REPO / "configs" / "redis.conf"),
                "--port",
                port,
                "--bind",
                "127.0.0.1",
                "--dir",
                str(VAR / "redis"),
            ]
        )
    except FileNotFoundError:
        raise SystemExit(
            "No Redis answers and redis-server is not installed: "
            "sudo apt-get install redis-server (or set OPENPIK_REDIS_URL)"
        ) from None
    for _ in range(50):
        try:
            client.ping()
            return [process]
        except redis.ConnectionError:
            time.sleep(0.1)
    raise SystemExit("redis-server did not start")


def _wait_healthy(url: str, processes: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            raise SystemExit("a process failed to start; see the messages above")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the gateway did not answer on {url}")


if __name__ == "__main__":
    main()
