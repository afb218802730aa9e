"""A full-size SD1.5-shaped model set with random weights, built offline once.

The tiny models make every code path run, but their compute is so small that fixed costs
dominate any ratio. These models have the published SD1.5 shapes (UNet, CLIP-L text
encoder, VAE and ControlNet from the vendored configs/sd15, the real CLIP tokenizer), so a
benchmark on them costs what a real checkpoint costs; only the weights are random.

Stored in float16 (2.9 GB instead of 5.8 GB; the worker loads them as float32 on the CPU),
with two LoRAs and a catalog. Built into var/bench/full-sd15 when its catalog is missing.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from models_registry.catalog import VENDORED_SD15_CONFIG, load_catalog
from models_registry.tiny import DEFAULT_CATALOG, write_lora

SEED = 1515
SIZE = 256
MODEL_DIR = "main/sd15-random"
CONTROLNET_DIR = "controlnet/sd15-random"
# (id, file name, layout, targets): the two LoRA layouts the worker reads, as in the tiny set.
LORAS = [(1, "style.safetensors", "peft", ("unet",)), (2, "detail.safetensors", "kohya", ("unet", "text_encoder"))]


def ensure_full_size_models(out_dir: Path) -> Path:
    """The catalog of the full-size set in ``out_dir``, building the set first when missing."""
    catalog_file = Path(out_dir) / "catalog.yaml"
    if not catalog_file.exists():
        build_full_size_models(Path(out_dir))
    return catalog_file


def build_full_size_models(out_dir: Path) -> Path:
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    _build_main_model(out_dir / MODEL_DIR)
    _build_controlnet(out_dir / CONTROLNET_DIR)
    for lora_id, name, layout, targets in LORAS:
        write_lora(out_dir / MODEL_DIR, out_dir / "lora" / name, seed=SEED + lora_id, layout=layout, targets=targets)
    catalog_file = out_dir / "catalog.yaml"
    catalog_file.write_text(yaml.safe_dump(_catalog_dict(), sort_keys=False))
    return catalog_file


def _build_main_model(out: Path) -> None:
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    pipe = StableDiffusionPipeline(
        unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(VENDORED_SD15_CONFIG / "unet")),
        vae=AutoencoderKL.from_config(AutoencoderKL.load_config(VENDORED_SD15_CONFIG / "vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(VENDORED_SD15_CONFIG / "text_encoder")),
        tokenizer=CLIPTokenizer.from_pretrained(VENDORED_SD15_CONFIG / "tokenizer"),
        scheduler=PNDMScheduler.from_pretrained(VENDORED_SD15_CONFIG / "scheduler"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(dtype=torch.float16).save_pretrained(out, safe_serialization=True)


def _build_controlnet(out: Path) -> None:
    """The ControlNet with random zero-convolutions too: a fresh one would add exact zeros."""
    import torch
    from diffusers import ControlNetModel

    controlnet = ControlNetModel.from_config(ControlNetModel.load_config(VENDORED_SD15_CONFIG / "controlnet"))
    with torch.no_grad():
        for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            torch.nn.init.normal_(conv.weight, std=0.01)
    controlnet.to(dtype=torch.float16).save_pretrained(out, safe_serialization=True)


def _catalog_dict() -> dict:
    default = load_catalog(DEFAULT_CATALOG)
    defaults = {"steps": 20, "sampler": "Euler a", "cfg_scale": 7.0, "clip_skip": 1, "width": SIZE, "height": SIZE}
    return {
        "version": 1,
        "main_models": [
            {
                "id": 1,
                "model_code": "sd15-random",
                "name": "SD1.5-shaped, random weights",
                "path": MODEL_DIR,
                "defaults": defaults,
            }
        ],
        "loras": [
            {
                "id": lora_id,
                "model_code": f"sd15-random-{Path(name).stem}",
                "name": Path(name).stem,
                "path": f"lora/{name}",
            }
            for lora_id, name, _, _ in LORAS
        ],
        "controlnets": [
            {
                "id": 1,
                "model_code": "cn-sd15-random",
                "name": "SD1.5 ControlNet, random weights",
                "path": CONTROLNET_DIR,
            }
        ],
        "preprocessors": [p.model_dump(mode="json", exclude_defaults=True) for p in default.preprocessors],
    }
