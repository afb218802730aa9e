"""Tiny random-weight models in the standard on-disk formats, built offline.

`make run` and the tests use them: SD1.5-shaped (so every code path is the real one) but
small enough that a 64x64, 20-step image takes a fraction of a second on a laptop CPU.
Everything is seeded, so two builds give the same weights. Models are always built with
the installed library versions (a text encoder saved by another transformers version can
load silently random), never committed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from models_registry.catalog import Catalog, load_catalog
from models_registry.tiny_annotators import write_tiny_annotators
from models_registry.tiny_inpainting import (
    REMOVE_CONTENTS_MODEL,
    build_tiny_inpainting_models,
    tiny_inpainting_catalog_entries,
)
from models_registry.tiny_segmentation import build_tiny_segmentation
from models_registry.tiny_translator import build_tiny_translator

DEFAULT_CATALOG = Path(__file__).resolve().parent.parent / "configs" / "catalog.yaml"

TINY_SIZE = 64
CROSS_ATTENTION_DIM = 32
LORA_RANK = 4
# Kohya files carry alpha = rank / 2, as many trained LoRAs do, so that loading must apply
# alpha / rank; their up weights are scaled to keep the same effect as the peft layout's.
KOHYA_ALPHA = LORA_RANK / 2
# Scales chosen so that each random piece changes a 64x64 image visibly (measured, see tests).
LORA_STD = 0.25
CONTROLNET_ZERO_CONV_STD = 0.05

SD15_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "skip_prk_steps": True,
}
SD15_DDIM_FLAGS = {"clip_sample": False, "set_alpha_to_one": False}

# The tiny catalog's main models: (id, model_code, seed, default VAE id)
TINY_MAIN_MODELS = [(1, "tiny-sd15-a", 1, 1), (2, "tiny-sd15-b", 2, None)]
SINGLE_FILE_ID = 3  # the single-file (LDM layout) twin of main model 1
TINY_REMOVER_PATH = "remover/tiny-remover.onnx"
TINY_VAE_SEED = 3
# (id, model_code, layout, targets): LoRAs in both on-disk layouts
TINY_LORAS = [
    (1, "tiny-lora-style", "peft", ("unet",)),
    (2, "tiny-lora-detail", "kohya", ("unet", "text_encoder")),
    (3, "tiny-lora-ink", "peft", ("unet", "text_encoder")),
]
UNET_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
# Kohya's key prefix per component; SDXL's files number the encoders and name UNet modules
# by the original (SGM) UNet's paths, e.g. lora_unet_input_blocks_4_1_transformer_blocks_0_...
KOHYA_PREFIXES = {
    "sd15": {"unet": "lora_unet", "text_encoder": "lora_te"},
    "sdxl": {"unet": "lora_unet", "text_encoder": "lora_te1", "text_encoder_2": "lora_te2"},
}
KOHYA_LDM_UNET_NAMES = {"sdxl"}


def build_tiny_models(out_dir: Path) -> Path:
    """Write every tiny model plus a catalog with the default catalog's ids; return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    default = load_catalog(DEFAULT_CATALOG)

    for _, code, seed, _ in TINY_MAIN_MODELS:
        build_main_model(out_dir / "main" / code, seed)
    base = out_dir / "main" / TINY_MAIN_MODELS[0][1]
    write_config_folder(base, out_dir / "main" / "tiny-sd15-config")
    _write_single_file_twin(base, out_dir / "main" / "tiny-sd15-a.safetensors")
    build_vae(out_dir / "vae" / "tiny-vae", TINY_VAE_SEED)
    for controlnet in default.controlnets:
        build_controlnet(base, out_dir / "controlnet" / controlnet.model_code, seed=100 + controlnet.id)
    for lora_id, code, layout, targets in TINY_LORAS:
        write_lora(base, out_dir / "lora" / f"{code}.safetensors", seed=200 + lora_id, layout=layout, targets=targets)
    _build_tiny_sdxl_models(out_dir)
    build_tiny_inpainting_models(out_dir)
    write_tiny_annotators(out_dir / "annotators")
    build_tiny_translator(out_dir / "translator")
    build_tiny_segmentation(out_dir / TINY_REMOVER_PATH)

    catalog_file = out_dir / "catalog.yaml"
    catalog_file.write_text(yaml.safe_dump(tiny_catalog_dict(default), sort_keys=False))
    return catalog_file


def _build_tiny_sdxl_models(out_dir: Path) -> None:
    from models_registry.tiny_sdxl import build_tiny_sdxl_models  # it builds on this module

    build_tiny_sdxl_models(out_dir)


def _write_single_file_twin(diffusers_dir: Path, out_file: Path) -> None:
    from models_registry.ldm_format import write_ldm_checkpoint

    write_ldm_checkpoint(diffusers_dir, out_file)


def tiny_catalog_dict(default: Catalog) -> dict:
    """The tiny catalog: the default catalog's ids, presets and preprocessors, tiny files."""
    from models_registry.tiny_sdxl import tiny_sdxl_catalog_entries

    defaults = {
        "steps": 20,
        "sampler": "Euler a",
        "cfg_scale": 7.0,
        "clip_skip": 1,
        "width": TINY_SIZE,
        "height": TINY_SIZE,
    }
    sdxl = tiny_sdxl_catalog_entries(defaults)
    main_models = [
        {
            "id": model_id,
            "model_code": code,
            "name": f"Tiny SD1.5 {code[-1].upper()}",
            "path": f"main/{code}",
            "defaults": defaults,
        }
        | ({"vae": vae} if vae else {})
        for model_id, code, _, vae in TINY_MAIN_MODELS
    ]
    main_models.append(
        {
            "id": SINGLE_FILE_ID,
            "model_code": "tiny-sd15-a-single-file",
            "name": "Tiny SD1.5 A (single file)",
            "path": "main/tiny-sd15-a.safetensors",
            "config": "main/tiny-sd15-config",
            "defaults": defaults,
        }
    )
    main_models += sdxl["main_models"] + tiny_inpainting_catalog_entries(defaults)
    return {
        "version": 1,
        "annotators_dir": "annotators",
        "translator": "translator",
        "main_models": main_models,
        "vaes": [{"id": 1, "model_code": "tiny-vae", "name": "Tiny VAE", "path": "vae/tiny-vae"}],
        "loras": [
            {
                "id": lora_id,
                "model_code": code,
                "name": code,
                "path": f"lora/{code}.safetensors",
                "trigger_words": [code.removeprefix("tiny-lora-")],
            }
            for lora_id, code, _, _ in TINY_LORAS
        ]
        + sdxl["loras"],
        "controlnets": [
            {"id": c.id, "model_code": c.model_code, "name": c.name, "path": f"controlnet/{c.model_code}"}
            | ({"inpaint": True} if c.inpaint else {})
            for c in default.controlnets
        ]
        + sdxl["controlnets"],
        "preprocessors": [p.model_dump(mode="json", exclude_defaults=True) for p in default.preprocessors],
        "presets": [p.model_dump(mode="json", exclude_defaults=True) for p in default.presets],
        "remove_contents_model": REMOVE_CONTENTS_MODEL,
        "background_removers": [{"id": 1, "name": "Tiny remover (brightness)", "path": TINY_REMOVER_PATH}],
    }


# --- main models -------------------------------------------------------------------------


def build_main_model(out_dir: Path, seed: int) -> Path:
    """An SD1.5-shaped pipeline (UNet, VAE, CLIP text encoder, tokenizer) in diffusers layout."""
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(out_dir / "tokenizer")
    torch.manual_seed(seed)
    pipe = StableDiffusionPipeline(
        unet=_tiny_unet(),
        vae=tiny_vae(),
        text_encoder=_tiny_text_encoder(tokenizer),
        tokenizer=tokenizer,
        scheduler=PNDMScheduler(**SD15_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    _add_sd15_sampling_flags(out_dir / "scheduler" / "scheduler_config.json")
    return out_dir


def _add_sd15_sampling_flags(config_file: Path) -> None:
    """SD1.5's scheduler config carries DDIM's flags too (PNDM ignores them); so do ours."""
    config = json.loads(config_file.read_text())
    config.update(SD15_DDIM_FLAGS)
    config_file.write_text(json.dumps(config, indent=2))


def write_config_folder(diffusers_dir: Path, out_dir: Path) -> Path:
    """The configs and tokenizer of a pipeline without weights: what a single file needs."""
    shutil.copytree(diffusers_dir, out_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return out_dir


def build_vae(out_dir: Path, seed: int) -> Path:
    import torch

    torch.manual_seed(seed)
    tiny_vae().save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def _tiny_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=TINY_SIZE // 8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=CROSS_ATTENTION_DIM,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def tiny_vae(**overrides):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        **overrides,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 64, 64),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
        sample_size=TINY_SIZE,
    )


def _tiny_text_encoder(tokenizer):
    from transformers import CLIPTextModel

    return CLIPTextModel(tiny_text_config(tokenizer))


def tiny_text_config(tokenizer, **overrides):
    """The tiny CLIP text encoder's config for ``tokenizer``; SDXL's second encoder overrides some."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        **{
            "vocab_size": len(tokenizer),
            "hidden_size": CROSS_ATTENTION_DIM,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 5,
            "max_position_embeddings": 77,
            "projection_dim": CROSS_ATTENTION_DIM,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
        | overrides
    )


# --- tokenizer ---------------------------------------------------------------------------

_MERGES = ["t h", "th e</w>", "a n", "an d</w>", "i n", "in g</w>", "o n</w>", "e r</w>", "a p", "ap p", "l e</w>"]


def build_tokenizer(out_dir: Path):
    """A byte-level BPE CLIP tokenizer with a vocabulary written here (no download)."""
    from transformers import CLIPTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    symbols = list(byte_symbols().values())
    tokens = symbols + [s + "</w>" for s in symbols] + [m.replace(" ", "") for m in _MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    merges = [tuple(m.split(" ")) for m in _MERGES]
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def byte_symbols() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode table, in CLIP's vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


# --- ControlNet --------------------------------------------------------------------------


def build_controlnet(base_dir: Path, out_dir: Path, seed: int) -> Path:
    """A ControlNet matching the base UNet, with weights that let a control image matter.

    A fresh ControlNet adds nothing: its zero-convolutions are zero, and the default-init
    conditioning embedding shrinks the control image to nearly nothing. So the zero-convs get
    small random values and the conditioning embedding is re-initialised (Kaiming-normal).
    """
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet")
    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(unet)
    with torch.no_grad():
        for conv in [
            *controlnet.controlnet_down_blocks,
            controlnet.controlnet_mid_block,
            controlnet.controlnet_cond_embedding.conv_out,
        ]:
            conv.weight.normal_(0, CONTROLNET_ZERO_CONV_STD)
            conv.bias.normal_(0, CONTROLNET_ZERO_CONV_STD)
        embedding = controlnet.controlnet_cond_embedding
        for conv in [embedding.conv_in, *embedding.blocks]:
            torch.nn.init.kaiming_normal_(conv.weight)
            torch.nn.init.zeros_(conv.bias)
    controlnet.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


# --- LoRA --------------------------------------------------------------------------------


def write_lora(
    base_dir: Path, out_file: Path, seed: int, layout: str, targets: tuple[str, ...], architecture: str = "sd15"
) -> Path:
    """A random rank-4 LoRA for the base model, in the diffusers/peft or the kohya layout."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    kohya_name = _kohya_namer(base_dir, architecture)
    tensors: dict[str, torch.Tensor] = {}
    for component, module_name, linear in _lora_target_modules(base_dir, targets):
        down = torch.randn(LORA_RANK, linear.in_features, generator=generator) * LORA_STD
        up = torch.randn(linear.out_features, LORA_RANK, generator=generator) * LORA_STD
        if layout == "peft":
            key = f"{component}.{module_name}"
            tensors |= {f"{key}.lora_A.weight": down, f"{key}.lora_B.weight": up}
        else:
            tensors |= _kohya_keys(kohya_name(component, module_name), down, up)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_file))
    return out_file


def _kohya_keys(key: str, down, up) -> dict:
    import torch

    return {
        f"{key}.lora_down.weight": down,
        f"{key}.lora_up.weight": up * (LORA_RANK / KOHYA_ALPHA),
        f"{key}.alpha": torch.tensor(KOHYA_ALPHA),
    }


def _kohya_namer(base_dir: Path, architecture: str):
    """Kohya's name of a module: component prefix + path with "_" for "." (SDXL: SGM UNet paths)."""
    from models_registry.ldm_format import to_ldm_key, unet_module_table

    prefixes = KOHYA_PREFIXES[architecture]
    unet_config = json.loads((base_dir / "unet" / "config.json").read_text())
    unet_table = unet_module_table(unet_config) if architecture in KOHYA_LDM_UNET_NAMES else {}

    def name(component: str, module_name: str) -> str:
        if component == "unet" and unet_table:
            module_name = to_ldm_key(module_name, unet_table)
        return f"{prefixes[component]}_{module_name.replace('.', '_')}"

    return name


def _lora_target_modules(base_dir: Path, targets: tuple[str, ...]):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    loaders = {
        "unet": (UNet2DConditionModel, UNET_LORA_TARGETS),
        "text_encoder": (CLIPTextModel, TEXT_LORA_TARGETS),
        "text_encoder_2": (CLIPTextModelWithProjection, TEXT_LORA_TARGETS),
    }
    for component in targets:
        model_class, suffixes = loaders[component]
        for name, module in model_class.from_pretrained(base_dir, subfolder=component).named_modules():
            if name.endswith(suffixes) and hasattr(module, "in_features"):
                yield component, name, module
