"""Where a task travels: the Celery task name, the queues, and where its results live.

The gateway publishes to these names, the worker consumes them, metrics and tests look
them up here: one contract, no second spelling anywhere.
"""

from __future__ import annotations

GENERATE_TASK = "openpik.generate"
"""The Celery task name the gateway sends and the worker registers."""
REMOVE_BACKGROUND_TASK = "openpik.remove_background"
"""RemoveBackground and RemoveBackgroundsInBatch: a BackgroundJob (worker/background_tasks.py)."""

QUEUE_PREFIX = "openpik."
DEFAULT_GROUP = "default"
"""A catalog model's group when it names none."""


def queue_name(group: str) -> str:
    """The queue of a catalog model group: the workers that hold its models consume it."""
    return f"{QUEUE_PREFIX}{group}"


DEFAULT_QUEUE = queue_name(DEFAULT_GROUP)

DIRECT_INFIX = ".direct."


def direct_queue(group_queue: str, worker: str) -> str:
    """One worker's own queue for ``group_queue``'s tasks (model-affinity routing, openpik/affinity.py):
    the gateway sends a task there when that worker holds the task's model and has room."""
    return f"{group_queue}{DIRECT_INFIX}{worker}"


CALLBACK_TASK = "openpik.deliver_callback"
"""The Celery task that POSTs an ended task's webhook (worker/callbacks.py)."""
CALLBACK_QUEUE = f"{QUEUE_PREFIX}callbacks"
"""Webhook deliveries wait here, apart from the model groups' queues: a dedicated callback worker
(`openpik-worker --queues openpik.callbacks`) takes them off the GPU workers' hands."""
DEFAULT_WORKER_QUEUES = (DEFAULT_QUEUE, CALLBACK_QUEUE)
"""What a worker started without --queues serves, so one node needs nothing more."""

RESULTS_PATH = "/results"
"""The gateway serves a task's images under RESULTS_PATH/<TaskUID>/<n>.png."""


def result_name(task_id: str, index: int) -> str:
    """The key of a task's ``index``-th image in the result store, as its task record lists it."""
    return f"{task_id}/{index}.png"


def result_url(public_url: str, name: str) -> str:
    """The URL a client downloads result ``name`` from, under the answering gateway's public base URL.

    Built when the gateway answers, never stored: a record holds names only, so changing
    OPENPIK_PUBLIC_URL (or a worker configured with another one) cannot leave stale URLs behind.
    """
    return f"{public_url.rstrip('/')}{RESULTS_PATH}/{name}"
