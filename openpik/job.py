"""The Job: the one message the gateway sends a worker.

Light on purpose (pydantic only): the gateway imports it, and it must never pull in torch.
Every model reference is already resolved against the catalog, so a worker needs no
catalog lookup to run a Job; images travel beside the Job (see ``ImageKey``), never in it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from openpik.families import Architecture
from openpik.vocabulary import (
    DEFAULT_BACKGROUND_THRESHOLD,
    DEFAULT_CFG_SCALE,
    DEFAULT_CLIP_SKIP,
    DEFAULT_CONTROL_WEIGHT,
    DEFAULT_ERODE_SIZE,
    DEFAULT_FOREGROUND_THRESHOLD,
    DEFAULT_HAIR_OPTIMIZATION,
    DEFAULT_SAMPLER,
    DEFAULT_SIZE,
    DEFAULT_STEPS,
    MAX_BACKGROUND_IMAGES,
    MAX_CONTROLNETS,
    AlphaThreshold,
    BatchSize,
    CfgScale,
    ClipSkip,
    ControlMode,
    ControlWeight,
    ErodeSize,
    Fraction,
    HairOptimization,
    LoraWeight,
    MaskBlur,
    MaskSource,
    ResizeMode,
    Seed,
    Steps,
)

JOB_VERSION: Literal[1] = 1

ImageKey = str
"""Name of an input image stored beside the Job (in Redis for queued Jobs)."""

ModelFormat = Literal["diffusers", "single_file"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelRef(_Frozen):
    """A main model resolved to its files."""

    model_id: int
    path: str
    format: ModelFormat
    config_dir: str | None = Field(
        default=None, description="Diffusers folder with the configs a single-file checkpoint needs"
    )
    architecture: Architecture = "sd15"


class VaeRef(_Frozen):
    vae_id: int
    path: str


class LoraRef(_Frozen):
    lora_id: int
    path: str
    weight: LoraWeight

    @property
    def adapter_name(self) -> str:
        return f"lora_{self.lora_id}"


class ControlUnit(_Frozen):
    """One ControlNet applied to the denoising (MultiControlNet when several)."""

    controlnet_id: int
    path: str
    image: ImageKey
    preprocessor: str = "none"
    preprocessor_params: dict[str, float] = Field(default_factory=dict)
    detect_resolution: int | None = None
    weight: ControlWeight = DEFAULT_CONTROL_WEIGHT
    start: Fraction = 0.0
    end: Fraction = 1.0
    mode: ControlMode = "Balanced"
    resize_mode: ResizeMode = "JustResize"
    masked_control: bool = Field(
        default=False,
        description="An inpaint ControlNet: with a mask, its control map is its image with the masked "
        "pixels set to -1 (what such ControlNets were trained on)",
    )

    @model_validator(mode="after")
    def _window_ordered(self) -> ControlUnit:
        if self.start > self.end:
            raise ValueError("start must be <= end")
        return self


class Job(_Frozen):
    version: Literal[1] = JOB_VERSION
    task_id: str = ""
    model: ModelRef
    vae: VaeRef | None = Field(default=None, description="None: the checkpoint's own VAE")
    prompt: str = ""
    negative_prompt: str = ""
    translate_prompts: bool = Field(default=False, description="Translate non-English prompts before use")
    sampler: str = DEFAULT_SAMPLER
    steps: Steps = DEFAULT_STEPS
    cfg_scale: CfgScale = DEFAULT_CFG_SCALE
    seed: Seed = -1
    width: int = Field(default=DEFAULT_SIZE, ge=16, multiple_of=8)
    height: int = Field(default=DEFAULT_SIZE, ge=16, multiple_of=8)
    batch_size: BatchSize = 1
    clip_skip: ClipSkip = DEFAULT_CLIP_SKIP
    init_image: ImageKey | None = None
    init_resize_mode: ResizeMode = "JustResize"
    strength: Fraction = Field(default=0.75, description="img2img only")
    loras: tuple[LoraRef, ...] = ()
    controlnets: tuple[ControlUnit, ...] = Field(default=(), max_length=MAX_CONTROLNETS)
    tileable: bool = False
    mask_image: ImageKey | None = Field(
        default=None, description="Inpainting: what to repaint of init_image (the rest is composited back)"
    )
    mask_source: MaskSource = "luminance"
    invert_mask: bool = False
    mask_blur: MaskBlur = 0
    background_image: ImageKey | None = Field(
        default=None, description="What shows through init_image's transparent pixels (None: mid-grey)"
    )
    output_size: tuple[int, int] | None = Field(
        default=None,
        description="The result's (width, height) when it is not width x height (an input's exact size, "
        "not a multiple of 8): generated at width x height, resized to this, then composited",
    )

    @model_validator(mode="after")
    def _inpainting_has_an_image(self) -> Job:
        if (self.mask_image or self.background_image) and self.init_image is None:
            raise ValueError("mask_image and background_image need init_image")
        return self

    @property
    def image_keys(self) -> list[ImageKey]:
        keys = [self.init_image, self.mask_image, self.background_image, *(unit.image for unit in self.controlnets)]
        return list(dict.fromkeys(key for key in keys if key))


class RemoverRef(_Frozen):
    """A background remover (catalog ``background_removers``) resolved to its ONNX file."""

    remover_id: int
    path: str


Box = tuple[int, int, int, int]
"""x1, y1, x2, y2 in pixels: the subject lies in x1 <= x < x2, y1 <= y < y2 (PIL's crop box)."""


class BackgroundJob(_Frozen):
    """RemoveBackground / RemoveBackgroundsInBatch: one cut-out (or mask) per input image, in order."""

    version: Literal[1] = JOB_VERSION
    task_id: str = ""
    remover: RemoverRef
    images: tuple[ImageKey, ...] = Field(min_length=1, max_length=MAX_BACKGROUND_IMAGES)
    box: Box | None = Field(default=None, description="None: the whole image may be subject")
    erode_size: ErodeSize = DEFAULT_ERODE_SIZE
    foreground_threshold: AlphaThreshold = DEFAULT_FOREGROUND_THRESHOLD
    background_threshold: AlphaThreshold = DEFAULT_BACKGROUND_THRESHOLD
    hair_optimization: HairOptimization = DEFAULT_HAIR_OPTIMIZATION
    only_mask: bool = Field(default=False, description="True: the alpha alone, as an L image")

    @property
    def image_keys(self) -> list[ImageKey]:
        return list(self.images)


QueuedJob = Job | BackgroundJob
"""Every message the gateway queues; the Celery task name says which one a worker receives."""


def round_dimension(value: int) -> int:
    """A requested Width/Height -> the nearest multiple of 8 (halves up), at least 16."""
    return max(16, (value + 4) // 8 * 8)
