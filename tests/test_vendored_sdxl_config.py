"""configs/sdxl: what a single-file SDXL checkpoint needs to load offline."""

from __future__ import annotations

import pytest
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, ControlNetModel, EulerDiscreteScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from openpik.families import FAMILIES

SDXL = FAMILIES["sdxl"].configs
PROMPT = "a photo of an astronaut riding a horse"

pytestmark = pytest.mark.models


def _parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _unet():
    return UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SDXL / "unet"))


def test_configs_describe_the_published_sdxl_architecture():
    with init_empty_weights():  # shapes only: no memory, no weights
        unet = _unet()
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(SDXL / "vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(SDXL / "text_encoder"))
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(SDXL / "text_encoder_2"))
    counts = [_parameters(m) for m in (unet, vae, text_encoder, text_encoder_2)]
    assert counts == [2_567_463_684, 83_653_863, 123_060_480, 694_659_840]
    assert (vae.config.scaling_factor, vae.config.force_upcast) == (0.13025, True)


def test_controlnet_config_is_a_controlnet_of_the_sdxl_unet():
    """The published SDXL ControlNets copy the UNet's down path: from_unet gives the same shape."""
    with init_empty_weights():
        controlnet = ControlNetModel.from_config(ControlNetModel.load_config(SDXL / "controlnet"))
        from_unet = ControlNetModel.from_unet(_unet())
    assert _parameters(controlnet) == _parameters(from_unet) == 1_251_014_160
    assert controlnet.config.addition_embed_type == "text_time"


def test_scheduler_is_sdxls_euler():
    scheduler = EulerDiscreteScheduler.from_pretrained(SDXL, subfolder="scheduler")
    expected = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}
    assert {key: scheduler.config[key] for key in expected} == expected
    assert scheduler.config.timestep_spacing == "leading"


def test_tokenizers_differ_only_in_padding():
    tokenizer = CLIPTokenizer.from_pretrained(SDXL / "tokenizer")
    tokenizer_2 = CLIPTokenizer.from_pretrained(SDXL / "tokenizer_2")
    ids, ids_2 = (t(PROMPT, padding="max_length").input_ids for t in (tokenizer, tokenizer_2))
    words = [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 49407]

    assert ids == words + [49407] * (77 - len(words))
    assert ids_2 == words + [tokenizer_2.convert_tokens_to_ids("!")] * (77 - len(words))
    assert (tokenizer.pad_token, tokenizer_2.pad_token) == ("<|endoftext|>", "!")
    assert tokenizer.get_vocab() == tokenizer_2.get_vocab()
