"""An engine that answers instantly with solid images: load-tests the stack, not the GPU.

Selected with OPENPIK_ENGINE=stub. It honours everything a client can check (image count,
size, seeds, progress) so the gateway, queue, worker and result store do their real work.
"""

from __future__ import annotations

from collections.abc import Mapping

from PIL import Image

from openpik.job import Job
from worker.interface import GenerationResult, ProgressHook, image_seeds


class StubEngine:
    def run(
        self, job: Job, images: Mapping[str, Image.Image], on_progress: ProgressHook | None = None
    ) -> GenerationResult:
        seeds = image_seeds(job.seed, job.batch_size)
        for step in range(1, job.steps + 1):
            if on_progress:
                on_progress(step, job.steps)
        colours = [(seed % 251, seed * 7 % 253, seed * 13 % 255) for seed in seeds]
        return GenerationResult(images=[Image.new("RGB", (job.width, job.height), c) for c in colours], seeds=seeds)
