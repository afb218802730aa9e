"""Diffusers SD1.x / SDXL folder -> one checkpoint file in the original LDM / A1111 key layout.

Operators drop single-file checkpoints (the layout A1111 and civitai use) into the catalog,
so the worker must load that layout too; this writer gives the tiny models a single-file
twin with the very same weights, so that path is tested against a known answer.

The mapping is the inverse of what ``from_single_file`` undoes
(``diffusers/loaders/single_file_utils.py``). It is a table from diffusers module paths to
LDM module paths, built from the component configs so any number of levels and layers per
block works; a weight key is renamed by its longest module path found in the table, and a
key with no entry is an error rather than silently dropped. Which components a family's
file holds, under which prefix, is the table ``LDM_LAYOUTS``, keyed by pipeline class.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
# from_single_file reads the CLIP text encoder from the file only when it finds
# "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight";
# otherwise it quietly loads text_encoder/ from the config folder instead.
TEXT_ENCODER_PREFIX = "cond_stage_model.transformer."
TEXT_MODEL_PREFIX = "text_model."
# SDXL: the CLIP ViT-L encoder keeps the HF names; the OpenCLIP bigG one has OpenCLIP's own.
SDXL_TEXT_ENCODER_PREFIX = "conditioner.embedders.0.transformer."
SDXL_TEXT_ENCODER_2_PREFIX = "conditioner.embedders.1.model."

WEIGHT_FILES = {
    "unet": "diffusion_pytorch_model.safetensors",
    "vae": "diffusion_pytorch_model.safetensors",
    "text_encoder": "model.safetensors",
    "text_encoder_2": "model.safetensors",
}

UNET_TOP_LEVEL = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    # SDXL's size-conditioning ("text_time") embedding
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
}
UNET_RESNET_LAYERS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
# The mid block is resnet, cross-attention, resnet: LDM numbers them 0, 1, 2.
UNET_MID_BLOCK = {
    "mid_block.resnets.0": "middle_block.0",
    "mid_block.attentions.0": "middle_block.1",
    "mid_block.resnets.1": "middle_block.2",
}

VAE_TOP_LEVEL = {
    "encoder.conv_in": "encoder.conv_in",
    "encoder.conv_norm_out": "encoder.norm_out",
    "encoder.conv_out": "encoder.conv_out",
    "decoder.conv_in": "decoder.conv_in",
    "decoder.conv_norm_out": "decoder.norm_out",
    "decoder.conv_out": "decoder.conv_out",
    "quant_conv": "quant_conv",
    "post_quant_conv": "post_quant_conv",
}
VAE_RESNET_LAYERS = {"conv_shortcut": "nin_shortcut"}
VAE_MID_RESNETS = {"resnets.0": "block_1", "resnets.1": "block_2"}
VAE_ATTENTION = "attn_1"
VAE_ATTENTION_LAYERS = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}
# diffusers stores these as Linear weights [C, C]; LDM as 1x1 Conv2d weights [C, C, 1, 1].
VAE_ATTENTION_CONV_WEIGHTS = {
    f"{coder}.mid.{VAE_ATTENTION}.{layer}.weight"
    for coder in ("encoder", "decoder")
    for layer in ("q", "k", "v", "proj_out")
}

# OpenCLIP names (SDXL's second text encoder): whole parameters first, then per block.
OPEN_CLIP_TOP_LEVEL = {
    "text_model.embeddings.token_embedding": "token_embedding",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm": "ln_final",
    "text_projection.weight": "text_projection",
}
OPEN_CLIP_BLOCK_LAYERS = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn": "attn",
}
# OpenCLIP applies its projection as a plain matrix from the right: the HF Linear weight's transpose.
OPEN_CLIP_TRANSPOSED = {"text_projection"}
# OpenCLIP keeps q, k and v as one input projection (torch's MultiheadAttention layout).
OPEN_CLIP_FUSED_ATTENTION = {
    "in_proj_weight": ("q_proj.weight", "k_proj.weight", "v_proj.weight"),
    "in_proj_bias": ("q_proj.bias", "k_proj.bias", "v_proj.bias"),
}

ModuleTable = dict[str, str]
StateDict = dict[str, torch.Tensor]


def write_ldm_checkpoint(diffusers_dir: Path, out_file: Path) -> None:
    """Write the components of the pipeline in ``diffusers_dir`` as one LDM-layout file."""
    diffusers_dir = Path(diffusers_dir)
    out_file = Path(out_file)
    tensors: StateDict = {}
    for part in ldm_layout(diffusers_dir):
        tensors |= _with_prefix(part.prefix, part.convert(*_load_component(diffusers_dir, part.component)))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_file), metadata={"format": "pt"})


def ldm_layout(diffusers_dir: Path) -> tuple[LdmPart, ...]:
    """The single-file layout of the pipeline class that ``model_index.json`` names."""
    pipeline = json.loads((diffusers_dir / "model_index.json").read_text())["_class_name"]
    if pipeline not in LDM_LAYOUTS:
        raise ValueError(f"{diffusers_dir}: no single-file layout for {pipeline} (known: {', '.join(LDM_LAYOUTS)})")
    return LDM_LAYOUTS[pipeline]


# --- UNet ----------------------------------------------------------------------------------


def unet_to_ldm(weights: StateDict, config: dict) -> StateDict:
    """UNet2DConditionModel weights -> keys under ``model.diffusion_model.``."""
    return _rename(weights, unet_module_table(config))


def unet_module_table(config: dict) -> ModuleTable:
    """Diffusers -> LDM module paths for a UNet with the shape given by its config.

    LDM numbers the down path as one flat list ``input_blocks``: conv_in, then per level its
    resnets (each with its attention beside it as ``.1``) and a downsampler slot; the up path
    likewise as ``output_blocks`` with one more resnet per level, the upsampler last.
    """
    layers = _layers_per_block(config)
    table = dict(UNET_TOP_LEVEL) | UNET_MID_BLOCK
    for level in range(len(config["down_block_types"])):
        first = 1 + level * (layers + 1)
        for layer in range(layers):
            table |= _unet_layer(f"down_blocks.{level}", layer, f"input_blocks.{first + layer}")
        table[f"down_blocks.{level}.downsamplers.0.conv"] = f"input_blocks.{first + layers}.0.op"
    for level, block_type in enumerate(config["up_block_types"]):
        first = level * (layers + 1)
        for layer in range(layers + 1):
            table |= _unet_layer(f"up_blocks.{level}", layer, f"output_blocks.{first + layer}")
        upsampler_slot = 2 if "CrossAttn" in block_type else 1
        table[f"up_blocks.{level}.upsamplers.0.conv"] = f"output_blocks.{first + layers}.{upsampler_slot}.conv"
    for resnet in ("mid_block.resnets.0", "mid_block.resnets.1"):
        table |= _sublayers(resnet, UNET_MID_BLOCK[resnet], UNET_RESNET_LAYERS)
    return table


def _unet_layer(block: str, layer: int, ldm_block: str) -> ModuleTable:
    """One resnet (LDM ``.0``) and the attention after it (LDM ``.1``, if the block has one)."""
    resnet = f"{block}.resnets.{layer}"
    return {
        resnet: f"{ldm_block}.0",
        **_sublayers(resnet, f"{ldm_block}.0", UNET_RESNET_LAYERS),
        f"{block}.attentions.{layer}": f"{ldm_block}.1",
    }


def _layers_per_block(config: dict) -> int:
    layers = config["layers_per_block"]
    if not isinstance(layers, int):
        raise ValueError(f"layers_per_block must be one number for an SD1.x/SDXL UNet, got {layers!r}")
    return layers


# --- VAE -----------------------------------------------------------------------------------


def vae_to_ldm(weights: StateDict, config: dict) -> StateDict:
    """AutoencoderKL weights -> keys under ``first_stage_model.``."""
    renamed = _rename(weights, vae_module_table(config))
    return {key: _as_conv1x1(t) if key in VAE_ATTENTION_CONV_WEIGHTS else t for key, t in renamed.items()}


def vae_module_table(config: dict) -> ModuleTable:
    """Diffusers -> LDM module paths for an AutoencoderKL with the shape given by its config.

    LDM numbers the decoder's up levels from the bottom (``up.0`` is the last to run), the
    reverse of diffusers' ``up_blocks``; the decoder has one resnet more per level.
    """
    layers = config["layers_per_block"]
    levels = len(config["down_block_types"])
    table = dict(VAE_TOP_LEVEL)
    for level in range(levels):
        encoder_block, decoder_block = f"encoder.down_blocks.{level}", f"decoder.up_blocks.{level}"
        table |= _vae_level(encoder_block, f"encoder.down.{level}", layers, "downsamplers", "downsample")
        ldm_decoder_block = f"decoder.up.{levels - 1 - level}"
        table |= _vae_level(decoder_block, ldm_decoder_block, layers + 1, "upsamplers", "upsample")
    for coder in ("encoder", "decoder"):
        for resnet, ldm_resnet in VAE_MID_RESNETS.items():
            table |= _vae_resnet(f"{coder}.mid_block.{resnet}", f"{coder}.mid.{ldm_resnet}")
        attention, ldm_attention = f"{coder}.mid_block.attentions.0", f"{coder}.mid.{VAE_ATTENTION}"
        table |= {attention: ldm_attention, **_sublayers(attention, ldm_attention, VAE_ATTENTION_LAYERS)}
    return table


def _vae_level(block: str, ldm_block: str, resnets: int, sampler: str, ldm_sampler: str) -> ModuleTable:
    table = {f"{block}.{sampler}.0.conv": f"{ldm_block}.{ldm_sampler}.conv"}
    for layer in range(resnets):
        table |= _vae_resnet(f"{block}.resnets.{layer}", f"{ldm_block}.block.{layer}")
    return table


def _vae_resnet(resnet: str, ldm_resnet: str) -> ModuleTable:
    return {resnet: ldm_resnet, **_sublayers(resnet, ldm_resnet, VAE_RESNET_LAYERS)}


def _as_conv1x1(linear_weight: torch.Tensor) -> torch.Tensor:
    return linear_weight.reshape(*linear_weight.shape, 1, 1)


# --- text encoder --------------------------------------------------------------------------


def text_encoder_to_ldm(weights: StateDict, config: dict) -> StateDict:
    """CLIPTextModel weights -> keys under ``<prefix>text_model.`` (config unused: any size works).

    The HF CLIP names are kept as they are; only newer transformers save the text model
    without its ``text_model.`` wrapper, which the LDM layout always has.
    """
    return {_with_text_model_prefix(key): tensor for key, tensor in weights.items()}


def _with_text_model_prefix(key: str) -> str:
    return key if key.startswith(TEXT_MODEL_PREFIX) else TEXT_MODEL_PREFIX + key


def open_clip_to_ldm(weights: StateDict, config: dict) -> StateDict:
    """CLIPTextModelWithProjection weights -> OpenCLIP keys (SDXL's ``conditioner.embedders.1.model.``).

    OpenCLIP fuses q/k/v into one ``in_proj`` and transposes the text projection.
    """
    renamed = _rename(_fused_attention_inputs(weights), open_clip_module_table(config))
    return {key: t.T.contiguous() if key in OPEN_CLIP_TRANSPOSED else t for key, t in renamed.items()}


def open_clip_module_table(config: dict) -> ModuleTable:
    table = dict(OPEN_CLIP_TOP_LEVEL)
    for layer in range(config["num_hidden_layers"]):
        block, ldm_block = f"text_model.encoder.layers.{layer}", f"transformer.resblocks.{layer}"
        table |= _sublayers(block, ldm_block, OPEN_CLIP_BLOCK_LAYERS)
    return table


def _fused_attention_inputs(weights: StateDict) -> StateDict:
    fused = dict(weights)
    attentions = {key.rsplit(".", 2)[0] for key in weights if key.endswith(".q_proj.weight")}
    for attention in attentions:
        for fused_name, parts in OPEN_CLIP_FUSED_ATTENTION.items():
            fused[f"{attention}.{fused_name}"] = torch.cat([fused.pop(f"{attention}.{part}") for part in parts])
    return fused


@dataclass(frozen=True)
class LdmPart:
    """One diffusers component of a single file: where it sits and how its keys are renamed."""

    component: str
    prefix: str
    convert: Callable[[StateDict, dict], StateDict]


_UNET = LdmPart("unet", UNET_PREFIX, unet_to_ldm)
_VAE = LdmPart("vae", VAE_PREFIX, vae_to_ldm)
LDM_LAYOUTS: dict[str, tuple[LdmPart, ...]] = {
    "StableDiffusionPipeline": (_UNET, _VAE, LdmPart("text_encoder", TEXT_ENCODER_PREFIX, text_encoder_to_ldm)),
    "StableDiffusionXLPipeline": (
        _UNET,
        _VAE,
        LdmPart("text_encoder", SDXL_TEXT_ENCODER_PREFIX, text_encoder_to_ldm),
        LdmPart("text_encoder_2", SDXL_TEXT_ENCODER_2_PREFIX, open_clip_to_ldm),
    ),
}


# --- shared --------------------------------------------------------------------------------


def _sublayers(module: str, ldm_module: str, renames: dict[str, str]) -> ModuleTable:
    return {f"{module}.{name}": f"{ldm_module}.{ldm_name}" for name, ldm_name in renames.items()}


def _rename(weights: StateDict, table: ModuleTable) -> StateDict:
    renamed: StateDict = {}
    for key, tensor in weights.items():
        ldm_key = to_ldm_key(key, table)
        if ldm_key in renamed:
            raise ValueError(f"two weights map to {ldm_key}")
        renamed[ldm_key] = tensor
    return renamed


def to_ldm_key(key: str, table: ModuleTable) -> str:
    """Rename ``key`` by the longest module path of it (or the whole key) that the table knows."""
    parts = key.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        if module in table:
            return ".".join([table[module], *parts[cut:]])
    raise KeyError(f"no LDM name for weight {key} (not an SD1.x or SDXL layout?)")


def _with_prefix(prefix: str, weights: StateDict) -> StateDict:
    return {prefix + key: tensor for key, tensor in weights.items()}


def _load_component(diffusers_dir: Path, component: str) -> tuple[StateDict, dict]:
    config = json.loads((diffusers_dir / component / "config.json").read_text())
    weights_file = diffusers_dir / component / WEIGHT_FILES[component]
    if not weights_file.is_file():
        raise FileNotFoundError(f"{weights_file} missing: expected unsharded safetensors weights")
    return load_file(str(weights_file)), config
