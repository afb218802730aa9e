"""Runs a Job on diffusers: the mapping from our Job onto a pipeline call, in one place."""
from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from diffusers import (
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
)
from PIL import Image

from openpik.job import Job
from openpik.settings import Settings, get_settings
from worker.errors import InvalidInputError
from worker.pipeline_cache import LoadedModel, PipelineCache
from worker.samplers import make_scheduler
from worker.tiling import circular_padding

# (has a reference image, has ControlNets) -> pipeline class; all share the loaded components.
PIPELINES = {
    (False, False): StableDiffusionPipeline,
    (True, False): StableDiffusionImg2ImgPipeline,
    (False, True): StableDiffusionControlNetPipeline,
    (True, True): StableDiffusionControlNetImg2ImgPipeline,
}

ProgressHook = Callable[[int, int], None]
"""Called after each denoising step with (steps done, steps in this run)."""


@dataclass(frozen=True)
class GenerationResult:
    images: list[Image.Image]
    seeds: list[int]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def image_seeds(seed: int, batch_size: int) -> list[int]:
    """Image i uses seed + i; -1 draws the base seed (reported back, so it reproduces)."""
    base = secrets.randbelow(2**32) if seed == -1 else seed
    return [base + i for i in range(batch_size)]


def effective_strength(strength: float, steps: int) -> float:
    """img2img strength, raised so that at least one denoising step runs.

    diffusers runs int(steps * strength) steps; below 1/steps it would run none.
    """
    return min(1.0, max(strength, 1.0 / steps))


def diffusers_clip_skip(clip_skip: int) -> int | None:
    """A1111's ClipSkip (1 = last layer) -> diffusers' count of layers skipped."""
    return clip_skip - 1 if clip_skip > 1 else None


class Engine:
    """One per worker process: owns the model cache and turns Jobs into images."""

    def __init__(self, settings: Settings | None = None):
        settings = settings or get_settings()
        self.device = resolve_device(settings.device)
        dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.cache = PipelineCache(
            self.device, dtype, budget_bytes=settings.pipeline_cache_mb * 2**20, lora_slots=settings.lora_cache_size
        )

    def run(self, job: Job, images: Mapping[str, Image.Image], on_progress: ProgressHook | None = None) -> GenerationResult:
        if job.controlnets:
            raise InvalidInputError("ControlNet units are not supported by this worker version")
        loaded = self.cache.model(job.model)
        self.cache.select_loras(loaded, job.loras)
        seeds = image_seeds(job.seed, job.batch_size)
        pipe = self._pipeline(job, loaded, seeds[0])
        call = self._call_arguments(job, images, seeds)
        if on_progress:
            call["callback_on_step_end"] = _progress_callback(on_progress)
        with torch.inference_mode(), circular_padding([pipe.unet, pipe.vae], enabled=job.tileable):
            output = pipe(**call)
        return GenerationResult(images=list(output.images), seeds=seeds)

    def _pipeline(self, job: Job, loaded: LoadedModel, seed: int):
        base = loaded.pipe
        components = dict(
            unet=base.unet,
            vae=self.cache.vae(job.vae) if job.vae else base.vae,
            text_encoder=base.text_encoder,
            tokenizer=base.tokenizer,
            scheduler=make_scheduler(job.sampler, base.scheduler.config, seed=seed),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe = PIPELINES[(job.init_image is not None, False)](**components)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _call_arguments(self, job: Job, images: Mapping[str, Image.Image], seeds: list[int]) -> dict:
        call = dict(
            prompt=job.prompt,
            negative_prompt=job.negative_prompt or None,
            num_inference_steps=job.steps,
            guidance_scale=job.cfg_scale,
            num_images_per_prompt=job.batch_size,
            generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
            clip_skip=diffusers_clip_skip(job.clip_skip),
        )
        if job.init_image is None:
            return call | dict(width=job.width, height=job.height)
        init = _input_image(images, job.init_image).resize((job.width, job.height), Image.Resampling.LANCZOS)
        return call | dict(image=init, strength=effective_strength(job.strength, job.steps))


def _input_image(images: Mapping[str, Image.Image], key: str) -> Image.Image:
    if key not in images:
        raise InvalidInputError(f"input image {key!r} is missing (expired or never stored)")
    return images[key].convert("RGB")


def _progress_callback(on_progress: ProgressHook):
    def callback(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        total = max(getattr(pipe, "num_timesteps", 0) or 0, step + 1)
        on_progress(step + 1, total)
        return callback_kwargs

    return callback
