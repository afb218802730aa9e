"""The out-of-memory retry on the real engine (tiny models, CPU): the retry really denoises half
the images at once and decodes tile by tile, and the engine's own settings come back.

The CUDA out-of-memory error is raised from inside the pipeline, at the first denoising step,
by the progress hook: where a real one would come from.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.oom import run_with_oom_retry

pytestmark = pytest.mark.models

STEPS = 3


def vae(engine, job):
    """The VAE the job's pipeline decodes with: its own (a catalog VAE) or its model's."""
    return engine.cache.vae(job.vae) if job.vae else engine.cache.model(job.model).pipe.vae


def pixels(result) -> list[np.ndarray]:
    return [np.asarray(image) for image in result.images]


def test_a_real_engine_retries_in_chunks_of_half_the_batch_with_tiling_then_runs_as_before(engine, make_job):
    job = make_job(batch_size=4, steps=STEPS, seed=21)
    own = (engine.micro_batch_pixels, engine.vae_tiling_pixels)
    reported: list[tuple[int, int]] = []
    releases: list[str] = []

    def progress(done: int, total: int) -> None:
        reported.append((done, total))
        if len(reported) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (raised at the first step)")

    retried = run_with_oom_retry(engine, job, {}, progress, lambda _engine, task: releases.append(task.task_id))

    assert reported[0] == (1, STEPS)  # the first attempt: the 4 images in one chunk
    assert reported[1:] == [(step, 2 * STEPS) for step in range(1, 2 * STEPS + 1)]  # the retry: two chunks
    assert len(releases) == 1 and retried.seeds == [21, 22, 23, 24]
    assert vae(engine, job).use_tiling  # the retry decoded tile by tile
    assert (engine.micro_batch_pixels, engine.vae_tiling_pixels) == own
    # Each chunk of the retry is exactly a batch of two run alone with its first seed.
    first, second = (pixels(engine.run(make_job(batch_size=2, steps=STEPS, seed=s), {})) for s in (21, 23))
    assert all(np.array_equal(a, b) for a, b in zip(pixels(retried), first + second, strict=True))
    assert not vae(engine, job).use_tiling  # the next tasks: the engine's own settings
