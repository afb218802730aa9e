"""Out of GPU memory without a restart: one retry on the same worker, then Error 1002.

A CUDA out-of-memory error says that this request, at this worker's memory settings, did not
fit beside what the worker holds; A1111 users restart their server after one. Here the worker
frees what the failed attempt left behind (unreachable tensors, CUDA's cached blocks, the
other models in its cache) and runs the task once more with half as many images denoised at
once and the VAE decoding tile by tile. A second out-of-memory error ends the task as 1002.
Either way the engine's own settings come back for the next task.

The policy takes the engine and a release function as arguments and imports no torch (a stub
worker imports this module too), so tests drive it with an engine that fails on demand.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from PIL import Image

from openpik.job import Job, ModelRef
from worker.errors import GpuOutOfMemoryError, foreign_error
from worker.interface import GenerationResult, ImageEngine, ProgressHook

log = logging.getLogger("openpik.worker")

ALWAYS_TILE = 0
"""vae_tiling_pixels for "decode every image tile by tile" (images larger than 0 pixels)."""

RETRY_FAILED = "out of GPU memory, even retried with half the images at once: ask for fewer or smaller images"


@dataclass(frozen=True)
class MemorySettings:
    """The engine's knobs that trade speed for memory (OPENPIK_MICRO_BATCH_PIXELS, OPENPIK_VAE_TILING_PIXELS)."""

    micro_batch_pixels: int
    """Pixels denoised at once; 0: the whole batch."""
    vae_tiling_pixels: int
    """Images larger than this are decoded tile by tile."""


class EvictingCache(Protocol):
    def evict_all_except(self, keep: ModelRef) -> int: ...


@runtime_checkable
class TunableEngine(ImageEngine, Protocol):
    """An engine whose memory settings can be turned down for one run (worker.engine.Engine)."""

    micro_batch_pixels: int
    vae_tiling_pixels: int
    cache: EvictingCache


Release = Callable[[ImageEngine, Job], None]


def images_per_chunk(batch_size: int, pixels_per_image: int, micro_batch_pixels: int) -> int:
    """How many of a task's images the engine denoises at once (worker.engine.micro_batches)."""
    if not micro_batch_pixels:
        return batch_size
    return min(batch_size, max(1, micro_batch_pixels // pixels_per_image))


def retry_settings(job: Job, current: MemorySettings) -> MemorySettings:
    """The settings of the retry: half the images at once (at least one), every image decoded in tiles."""
    pixels = job.width * job.height
    half = max(1, images_per_chunk(job.batch_size, pixels, current.micro_batch_pixels) // 2)
    return MemorySettings(micro_batch_pixels=half * pixels, vae_tiling_pixels=ALWAYS_TILE)


def run_with_oom_retry(
    engine: ImageEngine,
    job: Job,
    images: Mapping[str, Image.Image],
    on_progress: ProgressHook | None,
    release: Release,
) -> GenerationResult:
    """``engine.run``, retried once after an out-of-memory error (see the module's docstring).

    ``release(engine, job)`` frees memory after each failed attempt. Other errors, a
    cancellation included, pass through untouched and are never retried.
    """
    result = _attempt(engine, job, images, on_progress)
    if result is not None:
        return result
    release(engine, job)
    if isinstance(engine, TunableEngine):
        with memory_settings(engine, retry_settings(job, current_settings(engine))) as retry:
            log.warning("task %s: out of GPU memory; retrying with %s", job.task_id, retry)
            result = _attempt(engine, job, images, on_progress)
        if result is not None:
            return result
        release(engine, job)
    raise GpuOutOfMemoryError(RETRY_FAILED)


def _attempt(
    engine: ImageEngine, job: Job, images: Mapping[str, Image.Image], on_progress: ProgressHook | None
) -> GenerationResult | None:
    """The run's result, or None after an out-of-memory error. The error is dropped here, and
    with it the frames (and tensors) its traceback held, before anything is freed."""
    try:
        return engine.run(job, images, on_progress)
    except Exception as exc:
        if not isinstance(foreign_error(exc), GpuOutOfMemoryError):
            raise
        log.warning("task %s: %s", job.task_id, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None


def current_settings(engine: TunableEngine) -> MemorySettings:
    return MemorySettings(micro_batch_pixels=engine.micro_batch_pixels, vae_tiling_pixels=engine.vae_tiling_pixels)


@contextlib.contextmanager
def memory_settings(engine: TunableEngine, settings: MemorySettings) -> Iterator[MemorySettings]:
    """``settings`` for the runs inside the block, the engine's own again after it, however it ends."""
    own = current_settings(engine)
    engine.micro_batch_pixels, engine.vae_tiling_pixels = settings.micro_batch_pixels, settings.vae_tiling_pixels
    try:
        yield settings
    finally:
        engine.micro_batch_pixels, engine.vae_tiling_pixels = own.micro_batch_pixels, own.vae_tiling_pixels


def release_gpu_memory(engine: ImageEngine, job: Job) -> None:
    """After an out-of-memory error: the engine's other cached models go (the task's own stays:
    the retry needs it), then what nothing references any more is returned to the GPU."""
    if isinstance(engine, TunableEngine):
        engine.cache.evict_all_except(job.model)
    free_cuda_cache()


def free_cuda_cache() -> None:
    """Collect unreachable objects (a failed run's tensors may sit in reference cycles), then hand
    CUDA's cached free blocks back, so the next task starts with what the worker holds by design.
    A no-op on CPU and in workers that never imported torch (the stub engine)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return
    gc.collect()
    torch.cuda.empty_cache()
