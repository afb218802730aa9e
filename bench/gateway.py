"""Gateway throughput: signed GenerateImg2Img submissions against a bare FastAPI endpoint.

At 1, 8 and 32 concurrent clients (asyncio + httpx.AsyncClient, each sending its next
request as soon as the previous one is answered) the same signed body (a 64x64 PNG
reference image) goes to the gateway and to ``bench/bare_app.py``, both uvicorn processes on
this machine, in alternating rounds. No worker runs: the tasks stay queued, and RedisDb.BENCH is
flushed before each round. Client, servers and Redis share the same cores, so each level also records how many
cores the server and the client kept busy: a server at one core is saturated (uvicorn runs
one process here), a client at one core caps the rate it can measure.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from bench.common import REPO, Context, Row, median, ms, percentile, stack_env
from tests.requests import img2img
from tests.stack import RedisDb, answers_health, free_port, fresh_redis, running_stack, signed, wait_for

LEVELS = (1, 8, 32)
HEADERS = {"Content-Type": "application/json"}


ROUNDS = 3
"""Gateway and bare endpoint take turns, this many rounds per level: the machine's speed drifts
(other work shares it), and a drift would otherwise land on whichever ran second."""


@dataclass(frozen=True)
class Sample:
    """One round against one server."""

    latencies: list[float]
    elapsed_s: float
    server_cpu_s: float
    client_cpu_s: float


@dataclass(frozen=True)
class Load:
    """The rounds against one server together: requests over their summed wall time."""

    per_second: float
    p50: float
    p99: float
    server_cores: float
    """CPU time of the server process over the wall time: 1.0 is one core kept busy."""
    client_cores: float

    @classmethod
    def of(cls, samples: list[Sample]) -> Load:
        latencies = [latency for sample in samples for latency in sample.latencies]
        elapsed = sum(sample.elapsed_s for sample in samples)
        return cls(
            per_second=len(latencies) / elapsed,
            p50=median(latencies),
            p99=percentile(latencies, 99),
            server_cores=sum(sample.server_cpu_s for sample in samples) / elapsed,
            client_cores=sum(sample.client_cpu_s for sample in samples) / elapsed,
        )

    def describe(self, name: str) -> str:
        return f"{name} {self.per_second:.0f}/s, p50 {ms(self.p50)}, p99 {ms(self.p99)}"


def run(context: Context) -> list[Row]:
    requests = context.pick(full=1500, quick=300)
    body = json.dumps(signed(img2img())).encode()
    work = context.work / "gateway"
    rows = []
    with running_stack(stack_env(context.tiny_catalog, work), work, gateway_log=work / "gateway.log") as stack:
        gateway = stack.gateway
        bare, bare_url = _start_bare_server(work / "bare.log")
        servers = {gateway.url: psutil.Process(gateway.process.pid), bare_url: psutil.Process(bare.pid)}
        try:
            for clients in LEVELS:
                samples: dict[str, list[Sample]] = {url: [] for url in servers}
                for _ in range(ROUNDS):
                    fresh_redis(RedisDb.BENCH)
                    for url, process in servers.items():
                        samples[url].append(asyncio.run(_load(url, process, body, clients, requests // ROUNDS)))
                measured, baseline = Load.of(samples[gateway.url]), Load.of(samples[bare_url])
                plural = "s" if clients > 1 else ""
                rows.append(
                    Row(
                        benchmark="gateway",
                        case=f"signed GenerateImg2Img (64x64 PNG), {clients} concurrent client{plural}",
                        measured=measured.describe("gateway"),
                        baseline=baseline.describe("bare FastAPI"),
                        ratio=baseline.per_second / measured.per_second,
                        numbers={
                            "gateway_per_s": measured.per_second,
                            "gateway_p50_s": measured.p50,
                            "gateway_p99_s": measured.p99,
                            "gateway_server_cores": measured.server_cores,
                            "gateway_client_cores": measured.client_cores,
                            "bare_per_s": baseline.per_second,
                            "bare_p50_s": baseline.p50,
                            "bare_p99_s": baseline.p99,
                            "bare_server_cores": baseline.server_cores,
                            "bare_client_cores": baseline.client_cores,
                            "requests": requests,
                            "rounds": ROUNDS,
                            "clients": clients,
                        },
                    )
                )
        finally:
            bare.terminate()
            bare.wait(timeout=10)
    fresh_redis(RedisDb.BENCH)
    return rows


def _start_bare_server(log: Path) -> tuple[subprocess.Popen, str]:
    """uvicorn serving bench/bare_app.py with the gateway's options, its output in ``log``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "w") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.bare_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: answers_health(url), 30, message="the bare FastAPI server to start", error=RuntimeError)
    except RuntimeError:
        process.kill()
        raise
    return process, url


async def _load(url: str, server: psutil.Process, body: bytes, clients: int, total: int) -> Sample:
    """``total`` requests from ``clients`` concurrent clients; every answer must be RetCode 0.

    Each client has its own connection (an AsyncClient each): one client pool shared by 32
    tasks spends more CPU on its own bookkeeping than the bare server spends answering.
    """
    latencies: list[float] = []
    sent = 0

    async def post(client: httpx.AsyncClient) -> None:
        started = time.perf_counter()
        response = await client.post("/", content=body, headers=HEADERS)
        latencies.append(time.perf_counter() - started)
        if response.status_code != 200 or response.json()["RetCode"] != 0:
            raise RuntimeError(f"{url} refused a benchmark request: {response.status_code} {response.text[:300]}")

    async def one_client(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < total:
            sent += 1
            await post(client)

    connections = [
        httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=1), timeout=60) for _ in range(clients)
    ]
    try:
        await asyncio.gather(*(post(client) for client in connections))  # opens the connections
        latencies.clear()
        with _collector_paused():
            began, client_cpu, server_cpu = time.perf_counter(), time.process_time(), _cpu_seconds(server)
            await asyncio.gather(*(one_client(client) for client in connections))
            elapsed = time.perf_counter() - began
        client_cpu, server_cpu = time.process_time() - client_cpu, _cpu_seconds(server) - server_cpu
    finally:
        await asyncio.gather(*(client.aclose() for client in connections))
    return Sample(latencies, elapsed, server_cpu, client_cpu)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No garbage collection in this process while it measures.

    This process has imported the test stack (tens of thousands of objects): a full collection
    pauses every client for 30-60 ms at once, which would show as server latency (it set the
    p99 of the bare endpoint and the gateway alike in runs longer than a second).
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system
