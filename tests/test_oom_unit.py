"""The out-of-GPU-memory policy (worker/oom.py): one retry with half the micro-batch and VAE
tiling, then 1002; other errors untouched; the engine's own settings back for the next task.

An engine that raises torch's real CUDA out-of-memory error type on demand stands in for a GPU.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from PIL import Image

from openpik.job import Job, ModelRef
from worker.errors import GpuOutOfMemoryError, InvalidInputError, TaskCancelledError, task_error
from worker.interface import GenerationResult
from worker.oom import (
    ALWAYS_TILE,
    MemorySettings,
    TunableEngine,
    images_per_chunk,
    release_gpu_memory,
    retry_settings,
    run_with_oom_retry,
)

MODEL = ModelRef(model_id=1, path="/models/a", format="diffusers")
OWN = MemorySettings(micro_batch_pixels=8 * 512 * 512, vae_tiling_pixels=1536 * 1536)


def job(batch_size: int = 8, width: int = 512, height: int = 512) -> Job:
    return Job(task_id="t" * 20, model=MODEL, batch_size=batch_size, width=width, height=height, seed=5)


class Cache:
    def __init__(self):
        self.kept: list[ModelRef] = []

    def evict_all_except(self, keep: ModelRef) -> int:
        self.kept.append(keep)
        return 0


class FailingEngine:
    """Raises ``errors`` in turn, one per run, then succeeds; records the settings of every run."""

    def __init__(self, *errors: BaseException, settings: MemorySettings = OWN):
        self.errors = list(errors)
        self.micro_batch_pixels = settings.micro_batch_pixels
        self.vae_tiling_pixels = settings.vae_tiling_pixels
        self.cache = Cache()
        self.runs: list[MemorySettings] = []

    def run(self, job, images, on_progress=None) -> GenerationResult:
        self.runs.append(MemorySettings(self.micro_batch_pixels, self.vae_tiling_pixels))
        if self.errors:
            raise self.errors.pop(0)
        return GenerationResult(images=[Image.new("RGB", (job.width, job.height))], seeds=[job.seed])


class Releases:
    def __init__(self):
        self.calls: list[tuple[object, str]] = []

    def __call__(self, engine, job: Job) -> None:
        self.calls.append((engine, job.task_id))


def oom() -> torch.OutOfMemoryError:
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def run(engine, task: Job | None = None, release: Releases | None = None) -> GenerationResult:
    return run_with_oom_retry(engine, task or job(), {}, None, release or Releases())


def test_the_fake_engine_is_a_tunable_engine():
    assert isinstance(FailingEngine(), TunableEngine)


@pytest.mark.parametrize(
    ("batch", "side", "budget", "chunk", "retry_chunk"),
    [
        (8, 512, 8 * 512 * 512, 8, 4),  # the whole batch fits the budget: half of it
        (16, 512, 8 * 512 * 512, 8, 4),  # already in chunks of 8: chunks of 4
        (6, 512, 0, 6, 3),  # budget 0 = the whole batch at once
        (5, 512, 0, 5, 2),
        (1, 1024, 8 * 512 * 512, 1, 1),  # one image: still one, only tiling changes
        (4, 1024, 512 * 512, 1, 1),  # budget below one image: one at a time already
    ],
)
def test_retry_settings_halve_the_images_per_chunk_and_tile_every_image(batch, side, budget, chunk, retry_chunk):
    task = job(batch_size=batch, width=side, height=side)
    pixels = side * side
    assert images_per_chunk(batch, pixels, budget) == chunk
    retry = retry_settings(task, MemorySettings(micro_batch_pixels=budget, vae_tiling_pixels=OWN.vae_tiling_pixels))
    assert retry == MemorySettings(micro_batch_pixels=retry_chunk * pixels, vae_tiling_pixels=ALWAYS_TILE)
    assert images_per_chunk(batch, pixels, retry.micro_batch_pixels) == retry_chunk


def test_a_first_out_of_memory_is_retried_with_half_the_micro_batch_and_tiling():
    engine, releases = FailingEngine(oom()), Releases()
    result = run(engine, release=releases)
    assert len(result.images) == 1
    assert engine.runs == [OWN, MemorySettings(micro_batch_pixels=4 * 512 * 512, vae_tiling_pixels=ALWAYS_TILE)]
    assert releases.calls == [(engine, "t" * 20)]  # memory freed once, between the two attempts


def test_a_second_out_of_memory_ends_the_task_as_1002_after_freeing_memory_again():
    engine, releases = FailingEngine(oom(), oom()), Releases()
    with pytest.raises(GpuOutOfMemoryError) as raised:
        run(engine, release=releases)
    assert raised.value.code == 1002 and task_error(raised.value) is raised.value
    assert "out of GPU memory" in str(raised.value)
    assert len(engine.runs) == 2 and len(releases.calls) == 2  # no third attempt; freed after each


@pytest.mark.parametrize("error", [ValueError("bad"), InvalidInputError("gone"), TaskCancelledError()])
def test_other_errors_pass_through_untouched_and_are_not_retried(error):
    engine, releases = FailingEngine(error), Releases()
    with pytest.raises(type(error)) as raised:
        run(engine, release=releases)
    assert raised.value is error
    assert engine.runs == [OWN] and releases.calls == []


def test_a_cancel_during_the_retry_is_not_turned_into_1002():
    engine = FailingEngine(oom(), TaskCancelledError())
    with pytest.raises(TaskCancelledError):
        run(engine)
    assert len(engine.runs) == 2


@pytest.mark.parametrize("errors", [(oom(),), (oom(), oom()), (oom(), TaskCancelledError())])
def test_the_next_task_runs_at_the_engine_s_own_settings_again(errors):
    engine = FailingEngine(*errors)
    with contextlib.suppress(GpuOutOfMemoryError, TaskCancelledError):
        run(engine)
    engine.runs.clear()
    run(engine, job(batch_size=2))
    assert engine.runs == [OWN]
    assert (engine.micro_batch_pixels, engine.vae_tiling_pixels) == (OWN.micro_batch_pixels, OWN.vae_tiling_pixels)


def test_an_engine_without_memory_settings_ends_as_1002_at_the_first_out_of_memory():
    class Plain:
        runs = 0

        def run(self, job, images, on_progress=None):
            self.runs += 1
            raise oom()

    engine, releases = Plain(), Releases()
    with pytest.raises(GpuOutOfMemoryError):
        run(engine, release=releases)
    assert engine.runs == 1 and len(releases.calls) == 1


def test_release_keeps_only_the_task_s_model_in_the_cache():
    engine = FailingEngine()
    release_gpu_memory(engine, job())
    assert engine.cache.kept == [MODEL]
