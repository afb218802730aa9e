"""configs/sd15: what a single-file SD1.5 checkpoint needs to load offline."""

from __future__ import annotations

import pytest
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from openpik.families import FAMILIES

SD15 = FAMILIES["sd15"].configs

pytestmark = pytest.mark.models


def _parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_configs_describe_the_published_sd15_architecture():
    with init_empty_weights():  # shapes only: no memory, no weights
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SD15 / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(SD15 / "vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(SD15 / "text_encoder"))
    assert (_parameters(unet), _parameters(vae), _parameters(text_encoder)) == (859_520_964, 83_653_863, 123_060_480)


def test_controlnet_config_is_the_published_sd15_controlnet():
    """configs/sd15/controlnet: the full-size benchmark's ControlNet (bench/full_size.py)."""
    with init_empty_weights():
        controlnet = ControlNetModel.from_config(ControlNetModel.load_config(SD15 / "controlnet"))
    assert _parameters(controlnet) == 361_279_120


def test_tokenizer_is_clips():
    tokenizer = CLIPTokenizer.from_pretrained(SD15 / "tokenizer")
    ids = tokenizer("a photo of an astronaut riding a horse").input_ids
    assert ids == [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 49407]
    assert len(tokenizer) == 49408
