"""Tiny random-weight inpainting checkpoints (SD1.5 and SDXL), built offline like tiny.py's.

An inpainting checkpoint differs from its base in one place: its UNet reads nine input
channels (the noisy latents, the mask, the masked image's latents) instead of four. These
are the tiny base models with such a UNet, so the 9-channel path of diffusers' inpaint
pipelines runs in the tests, and RemoveContents has a model of its own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from models_registry.importer import INPAINTING_IN_CHANNELS

# The tiny catalog's inpainting main models: (id, model_code, architecture, base model folder, seed)
TINY_INPAINTING_MODELS = [
    (4, "tiny-sd15-inpainting", "sd15", "main/tiny-sd15-a", 4),
    (14, "tiny-sdxl-inpainting", "sdxl", "main/tiny-sdxl-a", 14),
]
REMOVE_CONTENTS_MODEL = 4
"""The tiny catalog's remove_contents_model."""


def build_tiny_inpainting_models(out_dir: Path) -> None:
    """Every tiny inpainting model, next to the base models tiny.py built under ``out_dir``."""
    for _, code, _, base, seed in TINY_INPAINTING_MODELS:
        build_inpainting_model(out_dir / base, out_dir / "main" / code, seed)


def build_inpainting_model(base_dir: Path, out_dir: Path, seed: int) -> Path:
    """``base_dir``'s pipeline (diffusers layout) with a fresh seeded 9-channel UNet."""
    import torch
    from diffusers import UNet2DConditionModel

    shutil.copytree(base_dir, out_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("unet"))
    config = dict(UNet2DConditionModel.load_config(base_dir / "unet"))
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(config | {"in_channels": INPAINTING_IN_CHANNELS})
    unet.save_pretrained(out_dir / "unet", safe_serialization=True)
    return out_dir


def tiny_inpainting_catalog_entries(defaults: dict) -> list[dict]:
    """The tiny catalog's inpainting main models."""
    return [
        {
            "id": model_id,
            "model_code": code,
            "name": f"Tiny {architecture.upper()} inpainting",
            "path": f"main/{code}",
            "architecture": architecture,
            "inpainting": True,
            "defaults": defaults,
        }
        for model_id, code, architecture, _, _ in TINY_INPAINTING_MODELS
    ]
