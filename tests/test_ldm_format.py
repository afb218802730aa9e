"""The LDM-layout writer must round-trip through diffusers' own single-file loader.

The single file is loaded with a config folder that holds no weights, so every weight the
loaded pipeline has can only have come from the file.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from diffusers.loaders.single_file_utils import infer_diffusers_model_type
from safetensors.torch import load_file

from models_registry.ldm_format import TEXT_ENCODER_PREFIX, UNET_PREFIX, VAE_PREFIX, write_ldm_checkpoint
from models_registry.tiny import TINY_SIZE, build_main_model, write_config_folder

pytestmark = pytest.mark.models

COMPONENTS = ("unet", "vae", "text_encoder")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(diffusers folder, single-file checkpoint, weightless config folder) of one tiny model."""
    root = tmp_path_factory.mktemp("ldm")
    diffusers_dir = build_main_model(root / "diffusers", seed=0)
    checkpoint = root / "model.safetensors"
    write_ldm_checkpoint(diffusers_dir, checkpoint)
    return diffusers_dir, checkpoint, write_config_folder(diffusers_dir, root / "config")


@pytest.fixture(scope="module")
def pipelines(converted):
    """The folder pipeline and its single-file twin, the latter loaded strictly offline."""
    diffusers_dir, checkpoint, config_dir = converted
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
        single_file = StableDiffusionPipeline.from_single_file(
            str(checkpoint), config=str(config_dir), local_files_only=True
        )
    return StableDiffusionPipeline.from_pretrained(diffusers_dir), single_file


def test_checkpoint_uses_ldm_layout_detected_as_sd1(converted):
    tensors = load_file(str(converted[1]))

    assert all(key.startswith((UNET_PREFIX, VAE_PREFIX, TEXT_ENCODER_PREFIX)) for key in tensors)
    assert f"{TEXT_ENCODER_PREFIX}text_model.embeddings.position_embedding.weight" in tensors
    assert tensors[f"{VAE_PREFIX}decoder.mid.attn_1.q.weight"].ndim == 4
    assert infer_diffusers_model_type(tensors) == "v1"


@pytest.mark.parametrize("component", COMPONENTS)
def test_single_file_weights_are_identical(pipelines, component):
    expected, loaded = (getattr(pipe, component).state_dict() for pipe in pipelines)

    assert loaded.keys() == expected.keys()
    assert [key for key in expected if not torch.equal(loaded[key], expected[key])] == []


def test_single_file_generates_identical_pixels(pipelines):
    images = [
        pipe(
            "a red apple",
            num_inference_steps=2,
            height=TINY_SIZE,
            width=TINY_SIZE,
            output_type="np",
            generator=torch.Generator().manual_seed(7),
        ).images
        for pipe in pipelines
    ]

    assert np.array_equal(*images)
