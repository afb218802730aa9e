"""The background-removal task: a queued BackgroundJob -> one PNG per input image, in order.

It shares the generate task's lifecycle (worker.tasks.run_task: the record's transitions,
every error written with its TaskErrorCode, metrics, the webhook); only producing the images
is its own. Needs no GPU and no diffusers: a cluster can give editing its own CPU workers
(catalog ``group: editing``, ``openpik-worker --queues openpik.editing``).
"""

from __future__ import annotations

from functools import cache

from openpik.job import BackgroundJob
from openpik.routing import DEFAULT_QUEUE, REMOVE_BACKGROUND_TASK
from openpik.settings import get_settings
from openpik.task_records import TaskStore
from worker.backgrounds import Removers, remove_background
from worker.celery_app import app
from worker.tasks import GenerateTask, load_inputs, run_task, stop_if_cancelled, store_results


@cache
def removers() -> Removers:
    return Removers(get_settings().numba_cache_dir)


@app.task(name=REMOVE_BACKGROUND_TASK, base=GenerateTask, bind=True)
def remove_backgrounds(self, job_data: dict) -> None:
    job = BackgroundJob.model_validate(job_data)
    queue = (self.request.delivery_info or {}).get("routing_key") or DEFAULT_QUEUE
    run_task(job.task_id, queue, self.request.hostname or "", lambda tasks: _remove(job, tasks))


def _remove(job: BackgroundJob, tasks: TaskStore) -> tuple[list[str], list[int]]:
    """The results' names, in the order of job.images; no seeds (nothing is drawn at random)."""
    images = load_inputs(tasks, job.task_id, job.image_keys)
    stop_if_cancelled(tasks, job.task_id)  # e.g. delivered again after a lost worker: no model load
    segment = removers().segmenter(job.remover.path)
    results = []
    for done, key in enumerate(job.images):
        stop_if_cancelled(tasks, job.task_id)
        results.append(remove_background(images[key], segment, job))
        tasks.update(job.task_id, progress=min(99, 100 * (done + 1) // len(job.images)))
    return store_results(job.task_id, results), []
