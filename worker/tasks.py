"""The generate task: a queued Job -> images in the result store and a Finished record.

Everything a client can see goes through the task record; every way a task can end writes
Finished or Error there, with the TaskErrorCode of spec section 8. Workers only write results
(named, never as URLs); deleting expired ones is the gateways' sweep (openpik.results.ResultSweeper).
"""

from __future__ import annotations

import io
import logging
import time
from functools import cache

from celery import Task
from celery.signals import worker_process_init

from openpik.images import open_stored_image
from openpik.job import Job
from openpik.results import ResultStore, result_store_from_settings
from openpik.routing import DEFAULT_QUEUE, GENERATE_TASK, result_name
from openpik.settings import get_settings
from openpik.task_records import TaskStore
from worker import metrics
from worker.celery_app import app
from worker.errors import InvalidInputError, TaskError, WorkerLostError, task_error
from worker.interface import ImageEngine

log = logging.getLogger("openpik.worker")


@cache
def task_store() -> TaskStore:
    import redis

    settings = get_settings()
    return TaskStore(redis.Redis.from_url(settings.redis_url, socket_timeout=10), settings.result_ttl_s)


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
def warm_up_compiled_models(**_) -> None:
    """A compiled worker's pool child traces its graphs before it takes a task (worker/warmup.py).

    A failed warm-up is logged, not fatal: the first tasks then compile what they need.
    """
    settings = get_settings()
    if not settings.compile or settings.engine == "stub":
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


class GenerateTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        """Runs in the parent when the child was killed (the hard time limit): the record says why."""
        error = task_error(exc)
        task_store().fail(task_id, error.code, str(error))
        metrics.task_changed(task_store().get(task_id))


@app.task(name=GENERATE_TASK, base=GenerateTask, bind=True)
def generate(self, job_data: dict) -> None:
    job = Job.model_validate(job_data)
    queue = (self.request.delivery_info or {}).get("routing_key") or DEFAULT_QUEUE
    run_job(job, queue, self.request.hostname or "")


def run_job(job: Job, queue: str, worker: str) -> None:
    settings = get_settings()
    tasks = task_store()
    attempt = tasks.mark_started(job.task_id, queue, worker)
    if attempt is None:
        log.warning("task %s expired before it ran", job.task_id)
        return
    metrics.task_changed(tasks.get(job.task_id))
    try:
        if attempt > settings.max_attempts:
            raise WorkerLostError(f"the task stopped its worker {attempt - 1} times; not retried")
        names, seeds = _generate(job, tasks)
    except Exception as exc:
        error = task_error(exc)
        if not isinstance(exc, TaskError):  # raised under us: the operator needs the traceback
            log.exception("task %s failed", job.task_id)
        tasks.fail(job.task_id, error.code, str(error))
    else:
        tasks.finish(job.task_id, names, seeds)
    metrics.task_changed(tasks.get(job.task_id))


def _generate(job: Job, tasks: TaskStore) -> tuple[list[str], list[int]]:
    """The images' names in the result store and their seeds. Names, not URLs: the gateway that
    answers a query builds the URL from its own public URL (openpik.routing.result_url)."""
    stored = tasks.images(job.task_id, job.image_keys)
    missing = set(job.image_keys) - set(stored)
    if missing:
        raise InvalidInputError(f"input images expired before the task ran: {', '.join(sorted(missing))}")
    images = {name: open_stored_image(data) for name, data in stored.items()}
    result = engine().run(job, images, on_progress=_progress_writer(tasks, job.task_id))
    metrics.engine_used(engine())
    names = [result_name(job.task_id, index) for index in range(len(result.images))]
    for name, image in zip(names, result.images, strict=True):
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        result_store().put(name, buffer.getvalue())
    return names, result.seeds


def _progress_writer(tasks: TaskStore, task_id: str):
    """Progress 0..99 while running (100 only when Finished), at most every few hundred ms."""
    interval = get_settings().progress_interval_s
    last = 0.0

    def write(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= interval:
            last = now
            tasks.update(task_id, progress=min(99, int(100 * done / total)))

    return write
