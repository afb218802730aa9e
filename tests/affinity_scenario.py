"""The model-affinity scenario, shared by tests/test_affinity.py and bench/affinity.py.

Two workers, four tiny SD1.5 main models, each worker's model cache holding two of them,
and a stream of tasks whose models are drawn at random (seeded): run once with routing on
and once off, on fresh workers each time, counting the main models each worker loaded
(its `openpik_model_loads_total{kind="main"}`) and the stream's tasks per second.

The stream is ``clients`` closed-loop clients: each sends a task, waits for it to end,
pauses ``think_s``, and sends the next, as interactive users do. Routing can only use
what the heartbeats tell when a task arrives; a burst of tasks all sent at once arrives
before any worker holds anything, and every task of it goes to the group queue either way.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from openpik.task_records import TaskRecord, TaskStore
from openpik.vocabulary import ENDED_STATUSES, TaskStatus
from tests.requests import txt2img
from tests.stack import Stack, running_stack, wait_for

COPY_ID = 90
"""Model 2's files under another id: a fourth main model (a separate cache entry, so a separate load)."""
WARM_UP_ID = 91
"""Model 1's files under another id, for one warm-up task per worker before the stream: a pool child
creates its engine on its first task (seconds), which would otherwise land on the stream."""
MODELS = (1, 2, 3, COPY_ID)
"""The tiny catalog's SD1.5 models 1, 2 and 3 (3: model 1 as a single file), and the copy of model 2."""
HEARTBEAT_S = "0.1"
"""Tiny tasks take a fraction of a second, so the gateways read heartbeats faster than the 0.5 s default."""


def write_affinity_catalog(tiny_catalog: Path) -> Path:
    """The tiny catalog plus main model COPY_ID, written beside it (so its relative paths hold)."""
    data = yaml.safe_load(tiny_catalog.read_text())
    second = next(entry for entry in data["main_models"] if entry["id"] == 2)
    first = next(entry for entry in data["main_models"] if entry["id"] == 1)
    data["main_models"] += [
        dict(second, id=COPY_ID, model_code="tiny-sd15-b-copy", name="Tiny SD1.5 B (copy)"),
        dict(first, id=WARM_UP_ID, model_code="tiny-sd15-a-warm-up", name="Tiny SD1.5 A (warm-up)"),
    ]
    out = tiny_catalog.with_name("catalog-affinity.yaml")
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def cache_bytes_for_two(tiny_catalog: Path) -> int:
    """A model cache budget that holds two tiny SD1.5 models but not three: 2.5 of the single-file
    checkpoint (all of one model's weights, as loaded in float32)."""
    single = tiny_catalog.parent / "main" / "tiny-sd15-a.safetensors"
    return int(single.stat().st_size * 2.5)


def mixed_stream(tasks: int, seed: int = 7) -> list[int]:
    """The main model of each task, drawn at random (seeded: both runs see the same stream)."""
    rng = random.Random(seed)
    return [rng.choice(MODELS) for _ in range(tasks)]


@dataclass(frozen=True)
class Outcome:
    loads: list[float]
    """Main models each worker loaded."""
    seconds: float
    tasks: int
    ran_on: dict[str, int]
    """Tasks each worker ran."""

    @property
    def total_loads(self) -> int:
        return int(sum(self.loads))

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / self.seconds


def model_loads(metrics_port: int) -> float:
    """The main models a worker loaded, from its Prometheus exporter."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    return next(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "openpik_model_loads_total" and sample.labels.get("kind") == "main"
    )


def start_workers(stack: Stack, count: int = 2) -> list[int]:
    """``count`` workers (w1, w2, ...) with metrics on; their metrics ports."""
    from tests.stack import free_port

    ports = [free_port() for _ in range(count)]
    workers = [stack.start_worker(f"w{i + 1}", wait=False, metrics_port=port) for i, port in enumerate(ports)]
    for worker in workers:
        worker.wait_ready()
    return ports


def run_stream(env: dict[str, str], work: Path, models: list[int], clients: int = 1, think_s: float = 0.15) -> Outcome:
    """One run of the stream of ``models`` on a fresh stack (gateway and two workers) on ``env``,
    after one warm-up task per worker; the loads and time of the stream alone."""
    with running_stack(env, work) as stack:
        ports = start_workers(stack)
        store = TaskStore(redis.Redis.from_url(env["OPENPIK_REDIS_URL"]), ttl_s=3600)
        warm_up(stack, store)
        before = [model_loads(port) for port in ports]
        pending = list(enumerate(models))
        lock = threading.Lock()
        ran_on: dict[str, int] = {}

        def client() -> None:
            while True:
                with lock:
                    if not pending:
                        return
                    seed, model = pending.pop(0)
                record = finished(store, submit(stack, model, seed))
                with lock:
                    ran_on[record.worker] = ran_on.get(record.worker, 0) + 1
                time.sleep(think_s)

        started = time.monotonic()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.monotonic() - started
        loads = [model_loads(port) - earlier for port, earlier in zip(ports, before, strict=True)]
        return Outcome(loads, seconds, len(models), ran_on)


def warm_up(stack: Stack, store: TaskStore) -> None:
    """Two tasks sent at once to two idle workers: one each (Redis serves blocked consumers in turn)."""
    tasks = [submit(stack, WARM_UP_ID, seed) for seed in range(2)]
    for task in tasks:
        finished(store, task)


def submit(stack: Stack, model: int, seed: int, steps: int = 1) -> str:
    answer = stack.gateway.call(txt2img(MainModelId=model, Seed=seed, Steps=steps, Width=64, Height=64))
    assert answer["RetCode"] == 0, answer
    return answer["TaskUID"]


def finished(store: TaskStore, task: str, timeout: float = 120) -> TaskRecord:
    """``task``'s record once it ended, which must be as Finished."""
    record = wait_for(lambda: ended(store, task), timeout, interval=0.01, message=f"task {task} to end")
    assert record.status == TaskStatus.FINISHED, record
    return record


def ended(store: TaskStore, task: str) -> TaskRecord | None:
    record = store.get(task)
    return record if record is not None and record.status in ENDED_STATUSES else None
