"""Tiny random-weight SDXL-shaped models, built offline like tiny.py's SD1.5 ones.

SDXL differs from SD1.5 where the worker's code differs: two text encoders (the second with
a projection whose pooled output joins the UNet's "text_time" add embedding), a UNet with
size conditioning, a tokenizer pair whose second pads with "!", an Euler scheduler. The tiny
models keep all of that at a size where a 64x64, 4-step image takes about a tenth of a
second. Tokenizers and scheduler are the vendored ones (configs/sdxl), so they are real.
"""

from __future__ import annotations

from pathlib import Path

from models_registry.tiny import (
    CROSS_ATTENTION_DIM,
    TINY_SIZE,
    build_controlnet,
    tiny_text_config,
    tiny_vae,
    write_config_folder,
    write_lora,
)
from openpik.families import FAMILIES

SDXL_CONFIGS = FAMILIES["sdxl"].configs
# The second encoder must be wider than the first, as SDXL's (1280 vs 768): diffusers'
# single-file loader tells the two apart by their width. It recognises an SDXL base file by
# the second encoder's tenth block, so the tiny one has ten.
TEXT_ENCODER_2_WIDTH = 2 * CROSS_ATTENTION_DIM
TEXT_ENCODER_2 = {
    "hidden_act": "gelu",
    "num_hidden_layers": 10,
    "hidden_size": TEXT_ENCODER_2_WIDTH,
    "projection_dim": TEXT_ENCODER_2_WIDTH,
}
# The UNet attends to both encoders' hidden states side by side, as SDXL's 768 + 1280 = 2048.
SDXL_CROSS_ATTENTION_DIM = CROSS_ATTENTION_DIM + TEXT_ENCODER_2_WIDTH
# Size conditioning: six numbers (original size, crop corner, target size), each embedded
# in this many channels, plus the second encoder's pooled projection.
ADDITION_TIME_EMBED_DIM = 8
SDXL_VAE = {"scaling_factor": 0.13025, "force_upcast": True}

# The tiny catalog's SDXL entries: (id, model_code, seed) main models in diffusers layout,
# the first one's single-file (LDM layout) twin, LoRAs (id, model_code, layout), ControlNets.
TINY_SDXL_MAIN_MODELS = [(11, "tiny-sdxl-a", 1), (12, "tiny-sdxl-b", 2)]
SDXL_SINGLE_FILE_ID = 13
SDXL_SINGLE_FILE = "main/tiny-sdxl-a.safetensors"
SDXL_SINGLE_FILE_CONFIG = "main/tiny-sdxl-config"
TINY_SDXL_LORAS = [(11, "tiny-sdxl-lora-kohya", "kohya"), (12, "tiny-sdxl-lora-peft", "peft")]
SDXL_LORA_TARGETS = ("unet", "text_encoder", "text_encoder_2")
TINY_SDXL_CONTROLNETS = [(21, "tiny-sdxl-controlnet-a"), (22, "tiny-sdxl-controlnet-b"), (23, "tiny-sdxl-controlnet-c")]


def build_sdxl_main_model(out_dir: Path, seed: int) -> Path:
    """An SDXL-shaped StableDiffusionXLPipeline in diffusers layout, seeded."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    out_dir = Path(out_dir)
    tokenizer = CLIPTokenizer.from_pretrained(SDXL_CONFIGS / "tokenizer")
    tokenizer_2 = CLIPTokenizer.from_pretrained(SDXL_CONFIGS / "tokenizer_2")
    torch.manual_seed(seed)
    pipe = StableDiffusionXLPipeline(
        unet=_tiny_sdxl_unet(),
        vae=tiny_vae(**SDXL_VAE),
        text_encoder=CLIPTextModel(tiny_text_config(tokenizer)),
        text_encoder_2=CLIPTextModelWithProjection(tiny_text_config(tokenizer_2, **TEXT_ENCODER_2)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        scheduler=EulerDiscreteScheduler.from_pretrained(SDXL_CONFIGS, subfolder="scheduler"),
        add_watermarker=False,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def _tiny_sdxl_unet():
    """SDXL's UNet layout (3 levels, no attention on the first, linear projections, more
    transformer layers deeper down, "text_time" add embedding) at tiny widths."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=TINY_SIZE // 8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(2, 4, 8),
        use_linear_projection=True,
        cross_attention_dim=SDXL_CROSS_ATTENTION_DIM,
        addition_embed_type="text_time",
        addition_embed_type_num_heads=64,
        addition_time_embed_dim=ADDITION_TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=6 * ADDITION_TIME_EMBED_DIM + TEXT_ENCODER_2_WIDTH,
        norm_num_groups=32,
    )


# --- the tiny catalog's SDXL entries (ids clear of the SD1.5 ones) ------------------------


def build_tiny_sdxl_models(out_dir: Path) -> None:
    """Every tiny SDXL file of the tiny catalog, under ``out_dir`` as tiny.py lays them out."""
    from models_registry.ldm_format import write_ldm_checkpoint

    for _, code, seed in TINY_SDXL_MAIN_MODELS:
        build_sdxl_main_model(out_dir / "main" / code, seed)
    base = out_dir / "main" / TINY_SDXL_MAIN_MODELS[0][1]
    write_config_folder(base, out_dir / SDXL_SINGLE_FILE_CONFIG)
    write_ldm_checkpoint(base, out_dir / SDXL_SINGLE_FILE)
    for controlnet_id, code in TINY_SDXL_CONTROLNETS:
        build_controlnet(base, out_dir / "controlnet" / code, seed=100 + controlnet_id)
    for lora_id, code, layout in TINY_SDXL_LORAS:
        lora_file = out_dir / "lora" / f"{code}.safetensors"
        write_lora(base, lora_file, seed=200 + lora_id, layout=layout, targets=SDXL_LORA_TARGETS, architecture="sdxl")


def tiny_sdxl_catalog_entries(defaults: dict) -> dict[str, list[dict]]:
    """The tiny catalog's SDXL main models, LoRAs and ControlNets, by catalog section."""
    main_models = [
        {
            "id": model_id,
            "model_code": code,
            "name": f"Tiny SDXL {code[-1].upper()}",
            "path": f"main/{code}",
            "architecture": "sdxl",
            "defaults": defaults,
        }
        for model_id, code, _ in TINY_SDXL_MAIN_MODELS
    ]
    main_models.append(
        {
            "id": SDXL_SINGLE_FILE_ID,
            "model_code": "tiny-sdxl-a-single-file",
            "name": "Tiny SDXL A (single file)",
            "path": SDXL_SINGLE_FILE,
            "config": SDXL_SINGLE_FILE_CONFIG,
            "architecture": "sdxl",
            "defaults": defaults,
        }
    )
    loras = [
        {"id": lora_id, "model_code": code, "name": code, "path": f"lora/{code}.safetensors", "architecture": "sdxl"}
        for lora_id, code, _ in TINY_SDXL_LORAS
    ]
    controlnets = [
        {"id": c_id, "model_code": code, "name": code, "path": f"controlnet/{code}", "architecture": "sdxl"}
        for c_id, code in TINY_SDXL_CONTROLNETS
    ]
    return {"main_models": main_models, "loras": loras, "controlnets": controlnets}
