"""Worker memory: the RSS of a real worker over many tasks that switch models and LoRAs.

A worker runs for weeks; whatever it keeps per task (adapters never deleted, pipelines,
callbacks, result buffers) shows as RSS that grows with the task count. Tasks alternate two
main models and three LoRAs (all six pairs), go through the gateway one at a time, and after
each one the RSS of the worker's pool child (the process holding the models) is read with
psutil. The least-squares slope is fitted over the second half, once the caches are full.
"""

from __future__ import annotations

import time

import numpy as np
import psutil

from bench.common import Context, Row, running_stack
from openpik.task_records import TaskStore
from openpik.vocabulary import ENDED_STATUSES, TaskStatus
from tests.requests import txt2img
from tests.stack import Gateway, RedisDb, fresh_redis

MODELS = (1, 2)
LORAS = (1, 2, 3)
POLL_S = 0.02


def run(context: Context) -> list[Row]:
    tasks = context.pick(full=200, quick=30)
    work = context.work / "memory"
    with running_stack(context.tiny_catalog, work, "memory") as (gateway, worker, store):
        (child_pid,) = worker.child_pids()
        child = psutil.Process(child_pid)
        idle = child.memory_info().rss
        rss = []
        for i in range(tasks):
            _run_task(gateway, store, MODELS[i % len(MODELS)], LORAS[i % len(LORAS)], seed=i)
            rss.append(child.memory_info().rss)
        if worker.child_pids() != [child_pid]:
            raise RuntimeError("the worker replaced its pool child during the benchmark; RSS would restart")
    fresh_redis(RedisDb.BENCH)
    return [_row(tasks, idle, rss)]


def _run_task(gateway: Gateway, store: TaskStore, model_id: int, lora_id: int, seed: int) -> None:
    answer = gateway.call(txt2img(MainModelId=model_id, SubModelIds=[lora_id], Steps=4, Seed=seed))
    if answer["RetCode"] != 0:
        raise RuntimeError(f"the gateway refused a benchmark task: {answer}")
    while (record := store.get(answer["TaskUID"])).status not in ENDED_STATUSES:
        time.sleep(POLL_S)
    if record.status == TaskStatus.ERROR:
        raise RuntimeError(f"a benchmark task failed: {record.error_message}")


def _row(tasks: int, idle: int, rss: list[int]) -> Row:
    half = tasks // 2
    slope_kb = float(np.polyfit(np.arange(half, tasks), np.asarray(rss[half:]) / 1024, 1)[0])
    mb = 2**20
    return Row(
        benchmark="memory",
        case=f"worker pool child over {tasks} tiny tasks, 2 models x 3 LoRAs alternating",
        measured=f"RSS {rss[0] / mb:.0f} MB after task 1, {rss[-1] / mb:.0f} MB after task {tasks}; "
        f"{slope_kb:+.1f} KB/task over tasks {half + 1}-{tasks}",
        baseline=f"idle child {idle / mb:.0f} MB",
        ratio=None,
        numbers={
            "idle_rss_mb": idle / mb,
            "first_task_rss_mb": rss[0] / mb,
            "end_rss_mb": rss[-1] / mb,
            "max_rss_mb": max(rss) / mb,
            "slope_kb_per_task": slope_kb,
            "tasks": tasks,
        },
    )
