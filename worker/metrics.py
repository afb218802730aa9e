"""What operators see of the tasks: Prometheus metrics and one JSON log line per state change.

Tasks run in the prefork pool's child, which the Celery parent replaces when it dies, while
the parent serves the metrics. So they use prometheus_client's multiprocess mode: each
process writes its values to files in PROMETHEUS_MULTIPROC_DIR, and the parent's exporter
(`serve`) adds them up. openpik-worker sets that variable before this module is imported
(prometheus_client chooses its mode on import). Never imports torch unless the engine is on CUDA.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from openpik.task_records import TaskRecord
from openpik.vocabulary import ENDED_STATUSES, TaskStatus

TASK_DURATION = Histogram(
    "openpik_task_duration_seconds",
    "From a task's start to Finished or Error",
    buckets=(0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 900),
)
QUEUE_WAIT = Histogram(
    "openpik_task_queue_wait_seconds",
    "From the gateway's acceptance to the first start",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600),
)
TASKS = Counter("openpik_tasks_total", "Tasks ended, by status (Finished, Error)", ["status"])
CACHE_HITS = Counter("openpik_pipeline_cache_hits_total", "Tasks whose main model was already loaded")
CACHE_MISSES = Counter("openpik_pipeline_cache_misses_total", "Tasks whose main model had to be loaded")
CACHE_EVICTIONS = Counter("openpik_pipeline_cache_evictions_total", "Main models unloaded to fit the budget")
MODEL_LOADS = Counter("openpik_model_loads_total", "Weights loaded from disk, by kind", ["kind"])
GPU_MEMORY = Gauge(
    "openpik_gpu_memory_bytes",
    "GPU memory held by tensors after the last task (torch.cuda.memory_allocated); absent on CPU",
    ["device"],
    multiprocess_mode="mostrecent",
)

CALLBACKS = Counter(
    "openpik_callbacks_total",
    "Webhook attempts by outcome: delivered, retried (an attempt failed; another follows), failed (gave up)",
    ["outcome"],
)
CALLBACK_OUTCOMES = ("delivered", "retried", "failed")

for _status in ENDED_STATUSES:  # both series exist from the start, so rates and alerts see a zero, not nothing
    TASKS.labels(_status.value)
for _outcome in CALLBACK_OUTCOMES:
    CALLBACKS.labels(_outcome)

# The model cache's cumulative CacheStats field -> the counter it feeds.
CACHE_COUNTERS = (
    ("model_hits", CACHE_HITS),
    ("model_loads", CACHE_MISSES),
    ("model_loads", MODEL_LOADS.labels("main")),
    ("vae_loads", MODEL_LOADS.labels("vae")),
    ("lora_loads", MODEL_LOADS.labels("lora")),
    ("evictions", CACHE_EVICTIONS),
)
_exported = {field: 0 for field, _ in CACHE_COUNTERS}  # this process's CacheStats already counted

log = logging.getLogger("openpik.worker.tasks")


def serve(port: int) -> None:
    """The exporter, in the Celery parent: every process's files added up, on a daemon thread."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    start_http_server(port, registry=registry)


def task_changed(record: TaskRecord | None) -> None:
    """After the worker wrote a status: the log line, and the metrics of a start or an end."""
    if record is None:  # expired meanwhile: nothing left to report
        return
    waited = record.started_at - record.created_at
    ran = record.finished_at - record.started_at if record.status in ENDED_STATUSES else None
    log.info(
        "task %s",
        record.status.value,
        extra={
            "task_uid": record.task_id,
            "status": record.status.value,
            "error_code": record.error_code,
            "attempt": record.attempts,
            "worker": record.worker,
            "queue": record.queue,
            "queue_wait_ms": round(waited * 1000, 1),
            "duration_ms": None if ran is None else round(ran * 1000, 1),
        },
    )
    if record.status == TaskStatus.RUNNING and record.attempts == 1:
        QUEUE_WAIT.observe(waited)
    if ran is not None:
        TASKS.labels(record.status.value).inc()
        TASK_DURATION.observe(ran)


def callback_attempted(outcome: str) -> None:
    """After a webhook attempt (worker/callbacks.py): one of CALLBACK_OUTCOMES."""
    CALLBACKS.labels(outcome).inc()


def engine_used(engine) -> None:
    """After each run: what the model cache did since the last one, and the GPU memory held now."""
    cache = getattr(engine, "cache", None)  # the stub engine loads nothing
    if cache is not None:
        for field, counter in CACHE_COUNTERS:
            counter.inc(getattr(cache.stats, field) - _exported[field])
        _exported.update({field: getattr(cache.stats, field) for field in _exported})
    device = getattr(engine, "device", None)
    if device is not None and device.type == "cuda":
        import torch

        GPU_MEMORY.labels(str(device)).set(torch.cuda.memory_allocated(device))
