"""Cross-request batching: 16 concurrent batch-1 tasks through the stack, batching on against off.

The same 16 signed GenerateTxt2Img requests (one image each, different prompts and seeds, the
tiny SD1.5 model at 64x64, 20 steps, Euler a, CFG 7.5) are submitted at once from 16 threads to
a stack whose worker runs one task at a time (the default) and to one whose worker batches
(OPENPIK_BATCH_MAX=16, OPENPIK_BATCH_WAIT_MS=200). A round is timed from the first task's
``created_at`` to the last one's ``finished_at`` in the task records (one machine, one clock);
each stack first runs one task so that its model is loaded. The measured / baseline ratio is
of time per task: below 1 when batching serves more tasks per second.

Pixels: each batched image against the same request's image from the unbatched worker: the
largest difference in grey levels and the share of pixels more than 1 level apart.
"""

from __future__ import annotations

import io
import threading
import time

import httpx
import numpy as np
from PIL import Image

from bench.common import Context, Row, median, running_stack
from openpik.routing import result_url
from openpik.task_records import TaskStore
from openpik.vocabulary import ENDED_STATUSES, TaskStatus
from tests.requests import txt2img
from tests.stack import signed

TASKS = 16
STEPS = 20
POLL_S = 0.2
PROMPTS = ("an apple", "a pear", "a red house", "a cat", "a boat", "a tree", "the sea", "a lamp")
MODES = {"off": {}, "on": {"batch_max": str(TASKS), "batch_wait_ms": "200"}}


def run(context: Context) -> list[Row]:
    if not context.wants("sd15"):
        return []
    rounds = context.pick(full=3, quick=1)
    spans: dict[str, list[float]] = {}
    images: dict[str, list[np.ndarray]] = {}
    for mode, settings in MODES.items():
        spans[mode], images[mode] = _measure(context, mode, settings, rounds)
    per_task_on, per_task_off = median(spans["on"]) / TASKS, median(spans["off"]) / TASKS
    differences = [np.abs(a.astype(int) - b.astype(int)) for a, b in zip(images["on"], images["off"], strict=True)]
    largest = int(max(d.max() for d in differences))
    far = float(np.mean([np.mean(d > 1) for d in differences]))
    return [
        Row(
            "batching",
            f"{TASKS} concurrent batch-1 tasks, tiny 64x64, {STEPS} steps; pixels vs unbatched: "
            f"max {largest} levels, {100 * far:.2f}% of pixels > 1 level",
            f"{1 / per_task_on:.2f} tasks/s batched",
            f"{1 / per_task_off:.2f} tasks/s one at a time",
            per_task_on / per_task_off,
            {
                "seconds_on": spans["on"],
                "seconds_off": spans["off"],
                "speedup": per_task_off / per_task_on,
                "max_pixel_difference": largest,
                "share_over_1_level": far,
            },
        )
    ]


def _bodies() -> list[dict]:
    return [
        signed(txt2img(PositivePrompts=[PROMPTS[i % len(PROMPTS)] + f" {i}"], Seed=100 + i, Steps=STEPS))
        for i in range(TASKS)
    ]


def _measure(context: Context, mode: str, settings: dict, rounds: int) -> tuple[list[float], list[np.ndarray]]:
    """The rounds' spans in seconds, and the last round's images in request order."""
    work = context.work / f"batching-{mode}"
    stack = running_stack(context.tiny_catalog, work, f"batching-{mode}", **settings)
    with stack as (gateway, _, store), httpx.Client(base_url=gateway.url, timeout=60) as client:
        _wait(store, _submit(client, [signed(txt2img(Steps=1))]))  # loads the model
        spans, tasks = [], []
        for _ in range(rounds):
            tasks = _submit(client, _bodies())
            records = _wait(store, tasks)
            spans.append(max(r.finished_at for r in records) - min(r.created_at for r in records))
        names = [store.get(task).results[0] for task in tasks]
        images = [_download(client, result_url(gateway.url, name)) for name in names]
    return spans, images


def _submit(client: httpx.Client, bodies: list[dict]) -> list[str]:
    """The bodies posted at once, one thread each; their TaskUIDs in order."""
    tasks = [""] * len(bodies)

    def post(index: int) -> None:
        tasks[index] = client.post("/", json=bodies[index]).json()["TaskUID"]

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tasks


def _wait(store: TaskStore, tasks: list[str]):
    while True:
        records = [store.get(task) for task in tasks]
        if all(r is not None and r.status in ENDED_STATUSES for r in records):
            failed = [r.task_id for r in records if r.status != TaskStatus.FINISHED]
            if failed:
                raise RuntimeError(f"benchmark tasks failed: {failed}")
            return records
        time.sleep(POLL_S)


def _download(client: httpx.Client, url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(client.get(url).content)))
