"""Runs a Job on diffusers: the mapping from our Job onto a pipeline call, in one place."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from pathlib import Path

import torch
from diffusers import MultiControlNetModel
from PIL import Image

from openpik.job import ControlUnit, Job
from openpik.settings import Settings, get_settings
from openpik.translation import needs_translation
from worker.compiled import CompileOptions
from worker.control_images import fit
from worker.controlnet import ControlNetCache, ModedControlNet
from worker.errors import InvalidInputError, ModelLoadError, TaskError
from worker.families import CONTROL_IMAGE_ARGUMENT, RUNTIMES, PipelineKind, pipeline_kind
from worker.interface import GenerationResult, ProgressHook, image_seeds
from worker.masks import Inpainting, inpainting
from worker.pipeline_cache import LoadedModel, PipelineCache, default_budget_bytes
from worker.preprocessors import PreprocessorError, Preprocessors, PreprocessorSetupError, UnreadableImageError
from worker.prompts import prompt_arguments
from worker.samplers import make_scheduler
from worker.tiling import circular_padding
from worker.translation import Translator

# A preprocessor's failure -> the task error the client sees: the worker's setup (its annotator
# files, an unknown detector) or the client's image.
PREPROCESSOR_FAILURES: dict[type[PreprocessorError], type[TaskError]] = {
    PreprocessorSetupError: ModelLoadError,
    UnreadableImageError: InvalidInputError,
}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """float16 on CUDA unless told otherwise (bfloat16 where its range matters), float32 on CPU."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def micro_batches(seeds: list[int], pixels_per_image: int, budget_pixels: int) -> list[list[int]]:
    """The task's images in chunks of at most ``budget_pixels`` pixels (0: all at once).

    A chunk's memory grows with its pixel count; each image keeps its own seed whatever
    chunk it falls in.
    """
    size = max(1, budget_pixels // pixels_per_image) if budget_pixels else len(seeds)
    return [seeds[i : i + size] for i in range(0, len(seeds), size)]


def effective_strength(strength: float, steps: int) -> float:
    """img2img strength, raised so that at least one denoising step runs.

    diffusers runs int(steps * strength) steps; below 1/steps it would run none.
    """
    return min(1.0, max(strength, 1.0 / steps))


class Engine:
    """One per worker process: owns the model cache and turns Jobs into images (an ImageEngine)."""

    def __init__(
        self, settings: Settings | None = None, annotators_dir: Path | None = None, translator_dir: Path | None = None
    ):
        settings = settings or get_settings()
        self.device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, self.device)
        self.micro_batch_pixels = settings.micro_batch_pixels
        self.prompt_weighting = settings.prompt_weighting
        self.vae_tiling_pixels = settings.vae_tiling_pixels
        compile_options = CompileOptions.from_settings(settings)
        self.cache = PipelineCache(
            self.device,
            dtype,
            budget_bytes=default_budget_bytes(self.device)
            if settings.model_cache_bytes is None
            else settings.model_cache_bytes,
            lora_slots=settings.lora_cache_size,
            compile_options=compile_options,
        )
        self.controlnets = ControlNetCache(self.device, dtype, compile_options=compile_options)
        self.preprocessors = Preprocessors(annotators_dir, self.device)
        self.translator_dir = translator_dir

    @cached_property
    def translator(self) -> Translator:
        if self.translator_dir is None:
            raise ModelLoadError("prompt translation was asked for but the catalog names no translator")
        return Translator(self.translator_dir)

    def run(
        self, job: Job, images: Mapping[str, Image.Image], on_progress: ProgressHook | None = None
    ) -> GenerationResult:
        painting = _inpainting(job, images)
        if painting is not None and painting.empty:
            return GenerationResult(
                images=[painting.canvas.copy() for _ in range(job.batch_size)],
                seeds=image_seeds(job.seed, job.batch_size),
            )
        if job.translate_prompts and any(map(needs_translation, (job.prompt, job.negative_prompt))):
            job = self.translator.translate_job(job)  # loaded on the first prompt that needs it, not before
        loaded = self.cache.model(job.model)
        self.cache.select_loras(loaded, job.loras)
        seeds = image_seeds(job.seed, job.batch_size)
        control = self._control_arguments(job, images, painting)
        prompts = prompt_arguments(
            loaded.pipe, job.model.architecture, job.prompt, job.negative_prompt, job.clip_skip, self.prompt_weighting
        )
        chunks = micro_batches(seeds, job.width * job.height, self.micro_batch_pixels)
        results: list[Image.Image] = []
        for index, chunk in enumerate(chunks):
            pipe = self._pipeline(job, loaded, chunk[0])
            call = self._call_arguments(job, images, chunk, painting) | prompts | control
            if on_progress:
                call["callback_on_step_end"] = _progress_callback(on_progress, index, len(chunks))
            with torch.inference_mode(), circular_padding(_convolution_models(pipe), enabled=job.tileable):
                results += pipe(**call).images
        if painting is not None:
            results = [painting.composite(image) for image in results]
        return GenerationResult(images=results, seeds=seeds)

    def _pipeline(self, job: Job, loaded: LoadedModel, seed: int):
        """The request's pipeline class around the loaded model's components (nothing copied)."""
        base = loaded.pipe
        runtime = RUNTIMES[job.model.architecture]
        components = (
            {name: getattr(base, name) for name in runtime.components}
            | {name: base.config[name] for name in runtime.inherited}
            | runtime.fixed
        )
        components["scheduler"] = make_scheduler(job.sampler, base.scheduler.config, seed=seed)
        if job.vae:
            components["vae"] = self.cache.vae(job.vae)
        if job.controlnets:
            cfg_batch = job.cfg_scale > 1
            components["controlnet"] = MultiControlNetModel(
                [
                    ModedControlNet(self.controlnets.get(unit.controlnet_id, unit.path), unit.mode, cfg_batch)
                    for unit in job.controlnets
                ]
            )
        pipe = runtime.pipelines[_kind(job)](**components)
        pipe.set_progress_bar_config(disable=True)
        large = job.width * job.height > self.vae_tiling_pixels
        pipe.vae.enable_tiling() if large else pipe.vae.disable_tiling()
        return pipe

    def _control_arguments(
        self, job: Job, images: Mapping[str, Image.Image], painting: Inpainting | None = None
    ) -> dict:
        if not job.controlnets:
            return {}
        units = job.controlnets
        return {
            CONTROL_IMAGE_ARGUMENT[_kind(job)]: [self._unit_map(job, images, u, painting) for u in units],
            "controlnet_conditioning_scale": [u.weight for u in units],
            "control_guidance_start": [u.start for u in units],
            "control_guidance_end": [u.end for u in units],
        }

    def _unit_map(
        self, job: Job, images: Mapping[str, Image.Image], unit: ControlUnit, painting: Inpainting | None
    ) -> Image.Image | torch.Tensor:
        """A unit's control map; an inpaint ControlNet's, when inpainting, has -1 where the mask
        repaints (a tensor: a PIL image cannot hold -1)."""
        fitted = control_map(self.preprocessors, unit, _input_image(images, unit.image), (job.width, job.height))
        if painting is None or not unit.masked_control:
            return fitted
        return torch.from_numpy(painting.control_map(fitted)).permute(2, 0, 1).unsqueeze(0)

    def _call_arguments(
        self, job: Job, images: Mapping[str, Image.Image], seeds: list[int], painting: Inpainting | None = None
    ) -> dict:
        call = dict(
            num_inference_steps=job.steps,
            guidance_scale=job.cfg_scale,
            num_images_per_prompt=len(seeds),
            generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
        ) | RUNTIMES[job.model.architecture].size_conditioning(job.width, job.height)
        if job.init_image is None:
            return call | dict(width=job.width, height=job.height)
        if painting is not None:
            size = (job.width, job.height)
            return call | dict(
                image=painting.pipeline_image(size),
                mask_image=painting.pipeline_mask(size),
                width=job.width,
                height=job.height,
                strength=effective_strength(job.strength, job.steps),
            )
        init = fit(_input_image(images, job.init_image), (job.width, job.height), job.init_resize_mode)
        return call | dict(image=init, strength=effective_strength(job.strength, job.steps))


def control_map(
    preprocessors: Preprocessors, unit: ControlUnit, image: Image.Image, size: tuple[int, int]
) -> Image.Image:
    """The unit's control image through its preprocessor, fitted to the output size."""
    try:
        detected = preprocessors.run(unit.preprocessor, image, unit.preprocessor_params, unit.detect_resolution)
    except PreprocessorError as exc:
        raise PREPROCESSOR_FAILURES[type(exc)](str(exc)) from exc
    return fit(detected, size, unit.resize_mode)


def _kind(job: Job) -> PipelineKind:
    return pipeline_kind(job.init_image is not None, job.mask_image is not None, bool(job.controlnets))


def _inpainting(job: Job, images: Mapping[str, Image.Image]) -> Inpainting | None:
    """A masked Job's canvas and soft mask (worker/masks.py); None for other Jobs."""
    if job.init_image is None or job.mask_image is None:
        return None
    background = _input_image(images, job.background_image) if job.background_image else None
    return inpainting(job, _stored(images, job.init_image), _stored(images, job.mask_image), background)


def _input_image(images: Mapping[str, Image.Image], key: str) -> Image.Image:
    return _stored(images, key).convert("RGB")


def _stored(images: Mapping[str, Image.Image], key: str) -> Image.Image:
    """An input image as stored (its alpha kept)."""
    if key not in images:
        raise InvalidInputError(f"input image {key!r} is missing (expired or never stored)")
    return images[key]


def _convolution_models(pipe) -> list[torch.nn.Module]:
    models = [pipe.unet, pipe.vae]
    return models + ([pipe.controlnet] if getattr(pipe, "controlnet", None) is not None else [])


def _progress_callback(on_progress: ProgressHook, chunk: int, chunks: int):
    """Steps of micro-batch ``chunk`` of ``chunks``, reported as progress over the whole task.

    What ``on_progress`` raises (a cancelled task) leaves the pipeline call at this step: no
    further step runs and nothing is decoded."""

    def callback(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        total = max(getattr(pipe, "num_timesteps", 0) or 0, step + 1)
        on_progress(chunk * total + step + 1, chunks * total)
        return callback_kwargs

    return callback
