"""Cross-request batching: queued tasks that one pipeline call can serve run as one call.

Opt-in (``OPENPIK_BATCH_MAX`` > 1, ``OPENPIK_BATCH_WAIT_MS``). The worker then runs that many
task threads (worker/celery_app.py ``pool_settings``), each holding its own unacknowledged
message, and every thread hands its Job to the one ``Batcher`` of the process. The batcher's
GPU thread takes the oldest waiting Job, waits up to BATCH_WAIT_MS for Jobs with the same
``batch_key`` (within BATCH_MAX tasks and the micro-batch budget), and runs them as one call
(worker/batch_call.py). Each task thread then stores its own images and ends its own record,
and its message is acknowledged when its own task function returns: a worker killed mid-batch
leaves every message of the batch unacknowledged, and Redis redelivers them all.

Failures stay per task: a member whose inputs fail ends alone with its error; a cancelled
member (or one past the soft time limit, which the threads pool does not enforce) leaves the
call at that step while the others go on; if the shared call itself fails (out of memory
included), every member still running is run alone, through the usual out-of-memory retry.

Why not celery-batches: every release pins celery < 5.7 (we pin 5.7.0), it hands the task one
list of requests, so one bad input or one cancelled task is the whole batch's business, and it
buffers requests in the consumer, outside the pool whose threads each own one message here.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from PIL import Image

from openpik.job import ControlUnit, Job
from openpik.settings import get_settings
from openpik.translation import needs_translation
from worker.errors import TimeLimitError
from worker.interface import GenerationResult, ImageEngine, ProgressHook
from worker.oom import release_gpu_memory, run_with_oom_retry
from worker.samplers import SCHEDULERS

log = logging.getLogger("openpik.worker")

# --- which Jobs one call can serve (pure) ----------------------------------------------------

PER_TASK_FIELDS = frozenset(
    {
        "task_id",
        "prompt",
        "negative_prompt",
        "translate_prompts",
        "seed",
        "batch_size",
        "init_image",
        "init_resize_mode",
    }
)
"""Job fields a batched call takes per image (or that only shape one task's inputs)."""
SHARED_FIELDS = frozenset(
    {"version", "model", "vae", "sampler", "steps", "cfg_scale", "width", "height", "clip_skip", "strength"}
    | {"loras", "tileable"}
)
"""Job fields every member of a call must share (ControlNet units: the two tables below)."""
PER_IMAGE_UNIT_FIELDS = frozenset({"image", "preprocessor", "preprocessor_params", "detect_resolution", "resize_mode"})
"""A ControlNet unit's fields that only shape its control image, which is per image."""
SHARED_UNIT_FIELDS = frozenset({"controlnet_id", "path", "weight", "start", "end", "mode"})

Key = Hashable
UNLIMITED = 2**31
"""images_per_call without a micro-batch budget (OPENPIK_MICRO_BATCH_PIXELS=0)."""


def batch_key(job: Job, micro_batch_pixels: int) -> Key | None:
    """What a Job must share with others to run in one call with them; None: it always runs alone.

    Alone: prompts to translate (the translator works per task), samplers seeded per call rather
    than per image (DPM++ SDE), a task that already fills the micro-batch budget, and any Job
    field this module does not classify (a newer feature, say a mask) when it is not at its
    default: such a feature runs alone until it is classified here and served by batch_call.
    """
    fields = type(job).model_fields
    unknown = set(fields) - PER_TASK_FIELDS - SHARED_FIELDS - {"controlnets"}
    if any(getattr(job, name) != fields[name].get_default(call_default_factory=True) for name in unknown):
        return None
    if job.translate_prompts and any(map(needs_translation, (job.prompt, job.negative_prompt))):
        return None
    spec = SCHEDULERS.get(job.sampler)
    if spec is None or spec.needs_generator_seed:
        return None
    if job.batch_size >= images_per_call(job, micro_batch_pixels):
        return None
    shared = job.model_dump(mode="json", include=set(SHARED_FIELDS))
    if job.init_image is None:
        shared["strength"] = None  # txt2img: strength is unused, so it never separates two tasks
    units = [_unit_key(unit) for unit in job.controlnets]
    return json.dumps([shared, job.init_image is not None, units], sort_keys=True)


def _unit_key(unit: ControlUnit) -> dict:
    unknown = set(ControlUnit.model_fields) - PER_IMAGE_UNIT_FIELDS - SHARED_UNIT_FIELDS
    return unit.model_dump(mode="json", include=set(SHARED_UNIT_FIELDS) | unknown)


def images_per_call(job: Job, micro_batch_pixels: int) -> int:
    """How many images of this size one call may denoise (the micro-batch budget; 0: no limit)."""
    if not micro_batch_pixels:
        return UNLIMITED
    return max(1, micro_batch_pixels // (job.width * job.height))


def group_with_first(jobs: Sequence[Job], batch_max: int, micro_batch_pixels: int) -> list[int]:
    """The indexes of the Jobs that run in one call with ``jobs[0]``: the first ones, in order,
    with its batch_key, up to ``batch_max`` tasks and the micro-batch budget's images."""
    key = batch_key(jobs[0], micro_batch_pixels)
    if key is None:
        return [0]
    room = images_per_call(jobs[0], micro_batch_pixels) - jobs[0].batch_size
    group = [0]
    for index, job in enumerate(jobs[1:], start=1):
        if len(group) == batch_max:
            break
        if job.batch_size <= room and batch_key(job, micro_batch_pixels) == key:
            group.append(index)
            room -= job.batch_size
    return group


def is_full(jobs: Sequence[Job], batch_max: int, micro_batch_pixels: int) -> bool:
    """Whether a group can take no further task: ``batch_max`` tasks, or no image left in the budget."""
    images = sum(job.batch_size for job in jobs)
    return len(jobs) >= batch_max or images >= images_per_call(jobs[0], micro_batch_pixels)


# --- the batcher: task threads in, one GPU thread --------------------------------------------

Outcome = GenerationResult | Exception
RunTogether = Callable[[ImageEngine, list["Submission"]], list[Outcome]]


@dataclass(eq=False)
class Submission:
    """One task's Job, waiting for its images; ``on_progress`` is what the call reports to."""

    job: Job
    images: Mapping[str, Image.Image]
    task_progress: ProgressHook
    arrived: float
    soft_limit_s: float
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Outcome | None = None

    def on_progress(self, done: int, total: int) -> None:
        """The task's own hook (progress, cancellation), and the soft time limit the threads pool
        does not enforce. What it raises ends this task at once; its thread stops waiting."""
        try:
            if time.monotonic() - self.arrived > self.soft_limit_s:
                raise TimeLimitError(f"past the soft time limit of {self.soft_limit_s:.0f} s")
            self.task_progress(done, total)
        except Exception as exc:
            self.end(exc)
            raise

    def end(self, outcome: Outcome) -> None:
        """The first outcome counts: a member dropped mid-call keeps its error."""
        if not self.done.is_set():
            self.outcome = outcome
            self.done.set()


class Batcher:
    """Groups waiting Jobs and runs each group on one GPU thread (the engine is created there)."""

    def __init__(
        self,
        engine: Callable[[], ImageEngine],
        batch_max: int,
        wait_s: float,
        micro_batch_pixels: int,
        soft_limit_s: float,
        run_together: RunTogether | None = None,
    ):
        self._engine = engine
        self.batch_max = batch_max
        self.wait_s = wait_s
        self.micro_batch_pixels = micro_batch_pixels
        self.soft_limit_s = soft_limit_s
        self._run_together = run_together or run_diffusers_batch
        self._pending: list[Submission] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._serve, name="openpik-gpu", daemon=True).start()

    def run(self, job: Job, images: Mapping[str, Image.Image], on_progress: ProgressHook) -> GenerationResult:
        """The Job's images, from a call it may share; blocks the calling task thread until then."""
        submission = Submission(job, images, on_progress, time.monotonic(), self.soft_limit_s)
        with self._changed:
            self._pending.append(submission)
            self._changed.notify_all()
        submission.done.wait()
        if isinstance(submission.outcome, Exception):
            raise submission.outcome
        assert submission.outcome is not None
        return submission.outcome

    def _serve(self) -> None:
        while True:
            group = self._next_group()
            try:
                self._run(group)
            except Exception as exc:  # never leave a task thread waiting
                log.exception("batch failed outside its tasks")
                for submission in group:
                    submission.end(exc)

    def _next_group(self) -> list[Submission]:
        """The oldest Job and those that join it, once the group is full or the oldest waited BATCH_WAIT_MS."""
        with self._changed:
            while not self._pending:
                self._changed.wait()
            deadline = self._pending[0].arrived + self.wait_s
            while True:
                jobs = [submission.job for submission in self._pending]
                indexes = group_with_first(jobs, self.batch_max, self.micro_batch_pixels)
                group = [self._pending[i] for i in indexes]
                left = deadline - time.monotonic()
                alone = batch_key(jobs[0], self.micro_batch_pixels) is None
                if alone or left <= 0 or is_full([s.job for s in group], self.batch_max, self.micro_batch_pixels):
                    break
                self._changed.wait(left)
            self._pending = [s for s in self._pending if s not in group]
            return group

    def _run(self, group: list[Submission]) -> None:
        engine = self._engine()
        if len(group) > 1:
            log.info("one call for %d tasks: %s", len(group), " ".join(s.job.task_id for s in group))
            failed = False
            try:
                outcomes = self._run_together(engine, group)
            except Exception:
                failed = True
                log.exception("a batched call of %d tasks failed; running each alone", len(group))
            if not failed:
                for submission, outcome in zip(group, outcomes, strict=True):
                    submission.end(outcome)
                return
            release_gpu_memory(engine, group[0].job)
        for submission in group:  # alone, or after the shared call failed (out of its except block)
            if not submission.done.is_set():
                submission.end(_alone(engine, submission))


def _alone(engine: ImageEngine, submission: Submission) -> Outcome:
    try:
        return run_with_oom_retry(engine, submission.job, submission.images, submission.on_progress, release_gpu_memory)
    except Exception as exc:
        return exc


def run_diffusers_batch(engine: ImageEngine, group: list[Submission]) -> list[Outcome]:
    """One diffusers call for the group (worker/batch_call.py); another engine (the stub) runs each alone."""
    from worker.engine import Engine

    if not isinstance(engine, Engine):
        return [_alone(engine, submission) for submission in group]
    from worker.batch_call import Member, run_batch

    return run_batch(engine, [Member(s.job, s.images, s.on_progress) for s in group])


# --- the task's entry point --------------------------------------------------------------------

_batcher: Batcher | None = None
_batcher_lock = threading.Lock()


def run_generation(
    engine: Callable[[], ImageEngine], job: Job, images: Mapping[str, Image.Image], on_progress: ProgressHook
) -> GenerationResult:
    """The task's images: as before when batching is off (the engine in this thread, the
    out-of-memory retry); through the process's batcher when it is on."""
    settings = get_settings()
    if settings.batch_max <= 1:
        return run_with_oom_retry(engine(), job, images, on_progress, release_gpu_memory)
    return _process_batcher(engine).run(job, images, on_progress)


def _process_batcher(engine: Callable[[], ImageEngine]) -> Batcher:
    global _batcher
    with _batcher_lock:
        if _batcher is None:
            settings = get_settings()
            _batcher = Batcher(
                engine,
                settings.batch_max,
                settings.batch_wait_ms / 1000,
                settings.micro_batch_pixels,
                settings.soft_time_limit_s,
            )
        return _batcher
