"""The words both sides share, declared once: modes, ranges, defaults, statuses, detectors.

The wire models (api/), the Job (openpik/job.py) and the catalog (models_registry/) import
these instead of repeating them, so a range or a mode changes in one place. Light on
purpose: pydantic's annotations only.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from annotated_types import Interval

# --- ControlNet modes ---------------------------------------------------------------------

ControlMode = Literal["Balanced", "MyPromptIsMoreImportant", "ControlNetIsMoreImportant"]
"""How a ControlNet unit weighs against the prompt (A1111's control modes)."""

ResizeMode = Literal["JustResize", "CropAndResize", "ResizeAndFill"]
"""How an input image is fitted to the output size."""

# --- ranges of the inference parameters --------------------------------------------------

UINT32_MAX = 2**32 - 1
RANDOM_SEED_MAX = 2**31 - 1
"""Seeds drawn for -1 lie in 0..RANDOM_SEED_MAX, so a reported seed is valid in every action."""

Steps = Annotated[int, Interval(ge=1, le=150)]
CfgScale = Annotated[float, Interval(ge=0, le=30)]
ClipSkip = Annotated[int, Interval(ge=1, le=12)]
"""A1111's meaning: 1 = the text encoder's last layer."""
BatchSize = Annotated[int, Interval(ge=1, le=16)]
Seed = Annotated[int, Interval(ge=-1, le=UINT32_MAX)]
"""-1: the worker draws one."""
LoraWeight = Annotated[float, Interval(ge=-1, le=2)]
ControlWeight = Annotated[float, Interval(ge=0, le=2)]
Fraction = Annotated[float, Interval(ge=0, le=1)]
"""A share of something, 0..1: where in the denoising a ControlNet starts or stops acting,
how much of a reference image is kept (ReferenceScale) or noised away (strength)."""
DetectResolution = Annotated[int, Interval(ge=64, le=2048)]

MAX_LORAS = 8
MAX_CONTROLNETS = 3
MAX_PROMPTS = 64

# --- inference defaults (a catalog model may set its own) ---------------------------------

DEFAULT_SAMPLER = "Euler a"
DEFAULT_STEPS = 20
DEFAULT_CFG_SCALE = 7.0
DEFAULT_CLIP_SKIP = 1
DEFAULT_SIZE = 512
DEFAULT_LORA_WEIGHT = 1.0
DEFAULT_CONTROL_WEIGHT = 1.0
DEFAULT_DETECT_RESOLUTION = 512
DEFAULT_CONTROL_START = 0.0
DEFAULT_CONTROL_END = 1.0
DEFAULT_CONTROL_MODE: ControlMode = "Balanced"
DEFAULT_RESIZE_MODE: ResizeMode = "ResizeAndFill"
"""What GenerateImages uses when a unit sends no ResizeMode (spec 3.2)."""

# --- inpainting (RemoveContents, GenerateBackgrounds, GenerateImages' MaskIndex) ----------

MaskBlur = Annotated[int, Interval(ge=0, le=64)]
"""The Gaussian blur (sigma, pixels) that softens a mask's edge before compositing (A1111's mask blur)."""
MaskSource = Literal["luminance", "transparency"]
"""What of the mask image says "repaint": its brightness (white, a drawn mask) or its
transparency (a foreground PNG, whose transparent area is the background to generate)."""
DEFAULT_MASK_BLUR = 12
"""RemoveContents' MaskBlur default (spec 9)."""
IMAGE2IMAGE_MASK_BLUR = 4
"""The blur of GenerateImages' Image2Image.MaskIndex masks (no wire field sets it): A1111's inpainting default."""
DEFAULT_PAINT_STRENGTH = 1.0
"""Strength of RemoveContents and of GenerateBackgrounds without a reference background: the
repainted area starts from pure noise (nothing of what was there is kept)."""

# --- background removal (RemoveBackground, RemoveBackgroundsInBatch) ---------------------

HairOptimization = Literal["auto", "on", "off"]
"""Whether the uncertain band of a subject's alpha is alpha-matted: always (on), never (off: the
band keeps the model's soft alpha), or when the band is wide enough to matter (auto)."""
ErodeSize = Annotated[int, Interval(ge=0, le=40)]
"""Pixels the sure foreground and background are eroded by before matting."""
AlphaThreshold = Annotated[int, Interval(ge=0, le=255)]
MAX_BACKGROUND_IMAGES = 16
"""RemoveBackgroundsInBatch's most images in one task."""
DEFAULT_ERODE_SIZE = 15
DEFAULT_FOREGROUND_THRESHOLD = 240
DEFAULT_BACKGROUND_THRESHOLD = 15
DEFAULT_HAIR_OPTIMIZATION: HairOptimization = "auto"

# --- task statuses -----------------------------------------------------------------------


class TaskStatus(StrEnum):
    QUEUING = "Queuing"
    RUNNING = "Running"
    FINISHED = "Finished"
    ERROR = "Error"


ENDED_STATUSES = frozenset({TaskStatus.FINISHED, TaskStatus.ERROR})
"""A task in one of these never changes again."""

CANCELLED_ERROR_CODE = 1004
"""The TaskErrorCode of a cancelled task (spec section 8). Declared here, not only in
worker/errors.py's table, because both sides write it: the gateway ends a queued task with
it (CancelTask), the worker a running one."""
CANCELLED_MESSAGE = "the task was cancelled (CancelTask)"

# --- preprocessors -------------------------------------------------------------------------

DETECTOR_PARAMS: dict[str, tuple[str, ...]] = {
    "none": (),
    "canny": ("low_threshold", "high_threshold"),
    "scribble_xdog": ("threshold",),
    "scribble_hed": (),
    "softedge_hed": (),
    "lineart": (),
    "lineart_anime": (),
    "lineart_anime_denoise": (),
    "mlsd": ("value_threshold", "distance_threshold"),
    "openpose_full": (),
    "depth_midas": (),
    "depth_leres": (),
    "depth_zoe": (),
    "normal_bae": (),
    "shuffle": (),
    "recolor_luminance": ("gamma_correction",),
    "recolor_intensity": ("gamma_correction",),
    "lineart_standard": (),
    "openpose": (),
    "openpose_face": (),
    "openpose_faceonly": (),
    "openpose_hand": (),
    "lineart_coarse": (),
    "softedge_hedsafe": (),
    "softedge_pidinet": (),
    "softedge_pidisafe": (),
    "scribble_pidinet": (),
    "normal_midas": ("bg_threshold",),
    "tile_resample": ("down_sampling_rate",),
    "invert": (),
}
"""Every detector a worker can run (a catalog preprocessor's ``detector``) and the names of
the parameters it takes, in the order of the legacy Param1Value/Param2Value."""
