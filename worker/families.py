"""The worker's half of the family table: how each architecture runs on diffusers.

openpik/families.py says what a family is (native size, vendored configs); this says which
pipeline classes run it, which components they share, and the rules that differ between
families (text encoders and clip skip, size conditioning, the VAE's precision). The engine
and the model cache read this table and nothing else about families, so the next family
(SD3.5, FLUX) is one entry here, one in openpik/families.py and its configs under configs/.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diffusers import (
    DiffusionPipeline,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetInpaintPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLControlNetImg2ImgPipeline,
    StableDiffusionXLControlNetInpaintPipeline,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)

from openpik.families import Architecture


class PipelineKind(enum.Enum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"
    CONTROLNET = "controlnet"
    CONTROLNET_IMG2IMG = "controlnet_img2img"
    CONTROLNET_INPAINT = "controlnet_inpaint"


# (has a reference image, has a mask, has ControlNets) -> the kind of pipeline that runs it.
KINDS = {
    (False, False, False): PipelineKind.TXT2IMG,
    (True, False, False): PipelineKind.IMG2IMG,
    (True, True, False): PipelineKind.INPAINT,
    (False, False, True): PipelineKind.CONTROLNET,
    (True, False, True): PipelineKind.CONTROLNET_IMG2IMG,
    (True, True, True): PipelineKind.CONTROLNET_INPAINT,
}
# The call argument that carries the control images, per pipeline kind.
CONTROL_IMAGE_ARGUMENT = {
    PipelineKind.CONTROLNET: "image",
    PipelineKind.CONTROLNET_IMG2IMG: "control_image",
    PipelineKind.CONTROLNET_INPAINT: "control_image",
}


def _no_size_conditioning(width: int, height: int) -> dict[str, Any]:
    return {}


def _sdxl_size_conditioning(width: int, height: int) -> dict[str, Any]:
    """As A1111 sets it: trained-at size = target size = the output, no crop."""
    size = (height, width)
    return dict(original_size=size, target_size=size, crops_coords_top_left=(0, 0))


@dataclass(frozen=True)
class PromptEncoding:
    """How a family's diffusers pipelines encode a prompt, so weighted prompts (worker/prompts.py)
    are embedded exactly as diffusers embeds plain ones."""

    encoders: tuple[tuple[str, str], ...]
    """(tokenizer, text encoder) attribute names on the pipeline; their embeddings concatenate."""
    layer_offset: int
    """Hidden state read: ``hidden_states[-(skipped + layer_offset)]``."""
    normalized: bool
    """Whether the text encoder's final layer norm is applied to that hidden state."""
    pooled_encoder: int | None
    """Which encoder's pooled output conditions the UNet too (SDXL's second)."""


@dataclass(frozen=True)
class FamilyRuntime:
    loader: type[DiffusionPipeline]
    """Loads a checkpoint (``from_pretrained`` for folders, ``from_single_file`` for files)."""
    pipelines: dict[PipelineKind, type[DiffusionPipeline]]
    """Built per request around the loaded components (MultiControlNet for several units)."""
    components: tuple[str, ...]
    """What every pipeline of the family shares with the loaded one."""
    fixed: dict[str, Any]
    """Constructor arguments the same for every request (no safety checker, no watermark)."""
    inherited: tuple[str, ...]
    """Constructor arguments read from the loaded pipeline's config (the checkpoint's choice)."""
    size_conditioning: Callable[[int, int], dict[str, Any]]
    """Extra call arguments for an output of (width, height)."""
    prompt_encoding: PromptEncoding


RUNTIMES: dict[Architecture, FamilyRuntime] = {
    # One CLIP text encoder; clip skip counts back from its last layer. The VAE runs in the
    # model's dtype (SD1.5's VAE is float16-safe).
    "sd15": FamilyRuntime(
        loader=StableDiffusionPipeline,
        pipelines={
            PipelineKind.TXT2IMG: StableDiffusionPipeline,
            PipelineKind.IMG2IMG: StableDiffusionImg2ImgPipeline,
            PipelineKind.INPAINT: StableDiffusionInpaintPipeline,
            PipelineKind.CONTROLNET: StableDiffusionControlNetPipeline,
            PipelineKind.CONTROLNET_IMG2IMG: StableDiffusionControlNetImg2ImgPipeline,
            PipelineKind.CONTROLNET_INPAINT: StableDiffusionControlNetInpaintPipeline,
        },
        components=("unet", "vae", "text_encoder", "tokenizer"),
        fixed=dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False),
        inherited=(),
        size_conditioning=_no_size_conditioning,
        # The last layer, normalized; clip skip N reads the N-th from last, normalized.
        prompt_encoding=PromptEncoding((("tokenizer", "text_encoder"),), 1, True, None),
    ),
    # Two text encoders (CLIP ViT-L and OpenCLIP bigG, the second also pooled); diffusers reads
    # their penultimate layer and clip skip counts back from there. Size conditioning as A1111.
    # The VAE overflows in float16: the pipelines upcast it while decoding when its config says
    # force_upcast (SDXL's does); a float16-safe VAE named in the catalog says it does not.
    "sdxl": FamilyRuntime(
        loader=StableDiffusionXLPipeline,
        pipelines={
            PipelineKind.TXT2IMG: StableDiffusionXLPipeline,
            PipelineKind.IMG2IMG: StableDiffusionXLImg2ImgPipeline,
            PipelineKind.INPAINT: StableDiffusionXLInpaintPipeline,
            PipelineKind.CONTROLNET: StableDiffusionXLControlNetPipeline,
            PipelineKind.CONTROLNET_IMG2IMG: StableDiffusionXLControlNetImg2ImgPipeline,
            PipelineKind.CONTROLNET_INPAINT: StableDiffusionXLControlNetInpaintPipeline,
        },
        components=("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"),
        fixed=dict(add_watermarker=False),
        inherited=("force_zeros_for_empty_prompt",),
        size_conditioning=_sdxl_size_conditioning,
        # The penultimate layer of both encoders, not normalized; clip skip counts back from it.
        prompt_encoding=PromptEncoding((("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")), 2, False, 1),
    ),
}


def pipeline_kind(has_init_image: bool, has_mask: bool, has_controlnets: bool) -> PipelineKind:
    return KINDS[(has_init_image, has_mask, has_controlnets)]
