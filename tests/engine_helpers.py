"""Small helpers for tests that run the engine and compare pixels."""

from __future__ import annotations

import numpy as np
import torch


def pixels(result) -> list[np.ndarray]:
    return [np.asarray(image, dtype=np.int16) for image in result.images]


def run(engine, job, images=None):
    return engine.run(job, images or {})


def first_unet_inputs(engine, job, images=None) -> torch.Tensor:
    """The latents the UNet sees at the first step: the initial noise, scaled per sample."""
    seen = []
    unet = engine.cache.model(job.model).pipe.unet
    handle = unet.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()) if not seen else None)
    try:
        run(engine, job, images)
    finally:
        handle.remove()
    return seen[0]
