"""The generate task: a queued Job -> images in the result store and a Finished record.

Everything a client can see goes through the task record; every way a task can end writes
Finished or Error there, with the TaskErrorCode of spec section 8. Workers only write results
(named, never as URLs); deleting expired ones is the gateways' sweep (openpik.results.ResultSweeper).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from functools import cache

from celery import Task
from celery.signals import worker_init, worker_process_init
from PIL import Image

from openpik.callbacks import notify_task_ended
from openpik.images import open_stored_image
from openpik.job import Job
from openpik.redis_connection import Role, redis_client
from openpik.results import ResultStore, result_store_from_settings
from openpik.routing import DEFAULT_QUEUE, GENERATE_TASK, result_name
from openpik.settings import get_settings
from openpik.task_records import ALREADY_ENDED, TaskStore
from worker import affinity, metrics
from worker.batching import run_generation
from worker.celery_app import app, serves_only_callbacks
from worker.errors import InvalidInputError, TaskCancelledError, TaskError, WorkerLostError, task_error
from worker.interface import ImageEngine
from worker.oom import free_cuda_cache

log = logging.getLogger("openpik.worker")


@cache
def task_store() -> TaskStore:
    settings = get_settings()
    return TaskStore(redis_client(settings, Role.WORKER), settings.result_ttl_s)


@cache
def result_store() -> ResultStore:
    return result_store_from_settings(get_settings())


@cache
def engine() -> ImageEngine:
    """Created in the pool's child on its first task: CUDA and models never touch the parent."""
    settings = get_settings()
    if settings.engine == "stub":
        from worker.stub_engine import StubEngine

        return StubEngine()
    from models_registry.catalog import load_catalog
    from worker.engine import Engine

    catalog = load_catalog(settings.catalog)
    return Engine(settings, annotators_dir=catalog.annotators_dir, translator_dir=catalog.translator)


@worker_process_init.connect
def start_heartbeat(**_) -> None:
    """Model-affinity routing: the child tells the gateways what it holds (worker/affinity.py)."""
    affinity.start_beating()


@worker_process_init.connect
def warm_up_compiled_models(**_) -> None:
    """A compiled worker's pool child traces its graphs before it takes a task (worker/warmup.py).

    A failed warm-up is logged, not fatal: the first tasks then compile what they need.
    """
    settings = get_settings()
    if not settings.compile or settings.engine == "stub" or serves_only_callbacks(app):
        return
    from models_registry.catalog import load_catalog
    from worker.warmup import warmup_requests

    started = time.monotonic()
    try:
        requests = warmup_requests(load_catalog(settings.catalog), settings)
        for job, images in requests:
            engine().run(job, images)
    except Exception:
        log.exception("warm-up failed; tasks will compile what they need")
        return
    log.info("compiled models warmed up with %d requests in %.1f s", len(requests), time.monotonic() - started)


@worker_init.connect
def start_batching_worker(**_) -> None:
    """A batching worker (threads pool, worker/batching.py) has no pool child and gets no
    worker_process_init: it starts the child's heartbeat and warm-up itself, before taking tasks."""
    if get_settings().batch_max > 1:
        start_heartbeat()
        warm_up_compiled_models()


class GenerateTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        """Runs in the parent when the child was killed (the hard time limit): the record says why."""
        error = task_error(exc)
        task_store().fail(task_id, error.code, str(error))
        metrics.task_changed(task_store().get(task_id))
        notify_task_ended(task_store(), app, task_id)


@app.task(name=GENERATE_TASK, base=GenerateTask, bind=True)
def generate(self, job_data: dict) -> None:
    job = Job.model_validate(job_data)
    queue = (self.request.delivery_info or {}).get("routing_key") or DEFAULT_QUEUE
    run_job(job, queue, self.request.hostname or "")


def run_job(job: Job, queue: str, worker: str) -> None:
    run_task(job.task_id, queue, worker, lambda tasks: _generate(job, tasks))


Produce = Callable[[TaskStore], tuple[list[str], list[int]]]
"""A task's own work: (the task store) -> its results' names in the result store and their seeds."""


def run_task(task_id: str, queue: str, worker: str, produce: Produce) -> None:
    """The lifecycle every task kind shares: started, then Finished with ``produce``'s results or
    Error with its TaskErrorCode; metrics and the webhook either way."""
    settings = get_settings()
    tasks = task_store()
    attempt = tasks.mark_started(task_id, queue, worker)
    if attempt is None:
        log.warning("task %s expired before it ran", task_id)
        return
    if attempt == ALREADY_ENDED:
        log.info("task %s skipped: it had already ended (cancelled while queued, or delivered again)", task_id)
        return
    metrics.task_changed(tasks.get(task_id))
    affinity.task_started()
    failed = False
    try:
        if attempt > settings.max_attempts:
            raise WorkerLostError(f"the task stopped its worker {attempt - 1} times; not retried")
        names, seeds = produce(tasks)
    except Exception as exc:
        failed = True
        error = task_error(exc)
        if not isinstance(exc, TaskError):  # raised under us: the operator needs the traceback
            log.exception("task %s failed", task_id)
        tasks.fail(task_id, error.code, str(error))
    else:
        tasks.finish(task_id, names, seeds)
    if failed:  # out of the except block: the error's frames, and the tensors they held, are gone
        free_cuda_cache()
    metrics.task_changed(tasks.get(task_id))
    affinity.task_ended()
    notify_task_ended(tasks, app, task_id)


def _generate(job: Job, tasks: TaskStore) -> tuple[list[str], list[int]]:
    """The images' names in the result store and their seeds. Names, not URLs: the gateway that
    answers a query builds the URL from its own public URL (openpik.routing.result_url)."""
    images = load_inputs(tasks, job.task_id, job.image_keys)
    stop_if_cancelled(tasks, job.task_id)  # e.g. delivered again after a lost worker: no model load
    result = run_generation(engine, job, images, _progress_writer(tasks, job.task_id))
    metrics.engine_used(engine())
    affinity.ran(engine())
    return store_results(job.task_id, result.images), result.seeds


def load_inputs(tasks: TaskStore, task_id: str, keys: list[str]) -> dict[str, Image.Image]:
    """A task's input images by key, read upright; InvalidInputError when one expired."""
    stored = tasks.images(task_id, keys)
    missing = set(keys) - set(stored)
    if missing:
        raise InvalidInputError(f"input images expired before the task ran: {', '.join(sorted(missing))}")
    return {name: open_stored_image(data) for name, data in stored.items()}


def store_results(task_id: str, images: list[Image.Image]) -> list[str]:
    """Each image as a PNG in the result store, in order; their names."""
    names = [result_name(task_id, index) for index in range(len(images))]
    for name, image in zip(names, images, strict=True):
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        result_store().put(name, buffer.getvalue())
    return names


def _progress_writer(tasks: TaskStore, task_id: str):
    """Progress 0..99 while running (100 only when Finished), at most every few hundred ms and
    never backwards (a retry after an out-of-memory error counts its steps from 0 again).

    Called after every denoising step, it is also where a running task learns that CancelTask
    asked it to stop: one HGET per step, and TaskCancelledError ends the run there."""
    interval = get_settings().progress_interval_s
    last = 0.0
    written = 0

    def write(done: int, total: int) -> None:
        nonlocal last, written
        stop_if_cancelled(tasks, task_id)
        now = time.monotonic()
        progress = min(99, int(100 * done / total))
        if now - last >= interval and progress > written:
            last, written = now, progress
            tasks.update(task_id, progress=progress)

    return write


def stop_if_cancelled(tasks: TaskStore, task_id: str) -> None:
    if tasks.cancel_requested(task_id):
        raise TaskCancelledError()
