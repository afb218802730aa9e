"""What the Celery task needs of an engine, without torch: the stub and the diffusers engine
both implement ``ImageEngine``, and the task module imports only this."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from openpik.job import Job
from openpik.vocabulary import RANDOM_SEED_MAX

ProgressHook = Callable[[int, int], None]
"""Called after each denoising step with (steps done, steps in this run). It may raise to stop
the run there (a cancelled task: worker.errors.TaskCancelledError); an engine lets that error
through unchanged and decodes nothing more."""


@dataclass(frozen=True)
class GenerationResult:
    images: list[Image.Image]
    seeds: list[int]


class ImageEngine(Protocol):
    def run(
        self, job: Job, images: Mapping[str, Image.Image], on_progress: ProgressHook | None = None
    ) -> GenerationResult:
        """The Job's images, in order, with the seed each was drawn from."""
        ...


def image_seeds(seed: int, batch_size: int) -> list[int]:
    """Image i uses seed + i; -1 draws the base seed (reported back, so it reproduces)."""
    base = secrets.randbelow(RANDOM_SEED_MAX + 1) if seed == -1 else seed
    return [base + i for i in range(batch_size)]
