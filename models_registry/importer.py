"""`openpik-models add` and `pull`: bring local or hub files into the catalog.

The catalog is edited round-trip (ruamel.yaml) so the operator's comments and layout stay;
the result is validated with the same loader the servers use before it replaces the file.
A new entry's architecture (model family) is read from the file: a folder's config, a
single file's key names and shapes (headers only, no weights loaded).
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from models_registry.catalog import CatalogError, load_catalog
from openpik.families import Architecture

KINDS = {"main": "main_models", "lora": "loras", "controlnet": "controlnets", "vae": "vaes"}
# Diffusers folder -> kind, by the class its config names.
FOLDER_CLASSES = {
    "StableDiffusionPipeline": "main",
    "StableDiffusionXLPipeline": "main",
    "StableDiffusionInpaintPipeline": "main",
    "StableDiffusionXLInpaintPipeline": "main",
    "ControlNetModel": "controlnet",
    "AutoencoderKL": "vae",
}
# Single .safetensors file -> kind, by a key prefix or marker it contains (first match wins).
FILE_MARKERS = (
    ("model.diffusion_model.", "main"),
    ("lora_down", "lora"),
    ("lora_A", "lora"),
    ("lora_unet_", "lora"),
    ("control_model.", "controlnet"),
    ("decoder.up.", "vae"),
    ("encoder.down.", "vae"),
)
# No width/height: a main model's default size is its family's native one (512, 1024, ...).
DEFAULT_MAIN_PARAMS = {"steps": 20, "sampler": "Euler a", "cfg_scale": 7.0, "clip_skip": 1}

# --- architecture detection: first match wins ---------------------------------------------
# A diffusers pipeline folder, by its pipeline class.
PIPELINE_ARCHITECTURES: dict[str, Architecture] = {
    "StableDiffusionPipeline": "sd15",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusionInpaintPipeline": "sd15",
    "StableDiffusionXLInpaintPipeline": "sdxl",
}
# An inpainting checkpoint's UNet reads 9 channels (latents, mask, masked image's latents):
# its first convolution, in a single file, or its config's in_channels, in a folder.
INPAINTING_IN_CHANNELS = 9
SINGLE_FILE_UNET_INPUT = "model.diffusion_model.input_blocks.0.0.weight"
# A diffusers ControlNet folder, by a (field, value) of its config: SDXL's has the size
# conditioning ("text_time") add embedding, SD1.5's none.
CONTROLNET_CONFIG_MARKERS: tuple[tuple[str, object, Architecture], ...] = (
    ("addition_embed_type", "text_time", "sdxl"),
    ("cross_attention_dim", 2048, "sdxl"),
    ("addition_embed_type", None, "sd15"),
)
# A single file, by a fragment of its key names, per kind.
FILE_ARCHITECTURE_MARKERS: dict[str, tuple[tuple[str, Architecture], ...]] = {
    "main": (("conditioner.embedders.1.", "sdxl"), ("cond_stage_model.transformer.", "sd15")),
    "lora": (
        # SDXL: a second text encoder (kohya numbers both), or more than one transformer
        # block in an attention (SD1.5 has exactly one)
        ("lora_te1_", "sdxl"),
        ("lora_te2_", "sdxl"),
        ("text_encoder_2.", "sdxl"),
        ("transformer_blocks.1.", "sdxl"),
        ("transformer_blocks_1_", "sdxl"),
        # SD1.5: kohya's single text encoder, or attention on the first level (SDXL has none)
        ("lora_te_", "sd15"),
        ("down_blocks.0.attentions.", "sd15"),
        ("down_blocks_0_attentions_", "sd15"),
    ),
}
# Else by the width of the text the UNet's cross-attention reads (its key projection's input):
# CLIP ViT-L's 768 for SD1.5, both encoders' 768 + 1280 for SDXL.
CROSS_ATTENTION_KEY_SUFFIXES = (
    "attn2.to_k.weight",
    "attn2.to_k.lora_down.weight",
    "attn2_to_k.lora_down.weight",
    "attn2.to_k.lora_A.weight",
)
CROSS_ATTENTION_WIDTHS: dict[int, Architecture] = {768: "sd15", 2048: "sdxl"}
# Kinds whose catalog entries carry an architecture.
KINDS_WITH_ARCHITECTURE = ("main", "lora", "controlnet")


class ModelImportError(ValueError):
    """A file that cannot be imported; the message says why and what to do."""


def detect_kind(path: Path) -> str:
    if path.is_dir():
        for config in ("model_index.json", "config.json"):
            if (path / config).is_file():
                kind = FOLDER_CLASSES.get(json.loads((path / config).read_text()).get("_class_name", ""))
                if kind:
                    return kind
        raise ModelImportError(f"{path}: not a diffusers pipeline, ControlNet or VAE folder")
    if path.suffix != ".safetensors":
        raise ModelImportError(f"{path}: only .safetensors files and diffusers folders are imported")
    keys = safetensors_keys(path)
    for marker, kind in FILE_MARKERS:
        if any(marker in key for key in keys):
            if kind == "controlnet":
                raise ModelImportError(
                    f"{path}: single-file ControlNets are not served; convert it to a diffusers folder"
                )
            return kind
    raise ModelImportError(f"{path}: no Stable Diffusion, LoRA or VAE weights recognised")


def safetensors_keys(path: Path) -> list[str]:
    """The tensor names from a .safetensors header, without loading any weight."""
    return list(safetensors_shapes(path))


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, from a .safetensors header, without loading any weight."""
    with path.open("rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(length))
    return {key: entry["shape"] for key, entry in header.items() if key != "__metadata__"}


def detect_architecture(path: Path, kind: str) -> Architecture:
    """The model family of a main model, LoRA or ControlNet (folder or single file)."""
    if path.is_dir():
        architecture = _folder_architecture(path, kind)
    else:
        shapes = safetensors_shapes(path)
        architecture = _marked_architecture(shapes, kind) or _cross_attention_architecture(shapes)
    if architecture is None:
        raise ModelImportError(
            f"{path}: cannot tell which model family this {kind} is for; name it with --architecture"
        )
    return architecture


def _folder_architecture(path: Path, kind: str) -> Architecture | None:
    if kind == "main":
        pipeline = json.loads((path / "model_index.json").read_text()).get("_class_name", "")
        return PIPELINE_ARCHITECTURES.get(pipeline)
    config = json.loads((path / "config.json").read_text())
    return next((arch for field, value, arch in CONTROLNET_CONFIG_MARKERS if config.get(field) == value), None)


def _marked_architecture(shapes: dict[str, list[int]], kind: str) -> Architecture | None:
    markers = FILE_ARCHITECTURE_MARKERS.get(kind, ())
    return next((arch for marker, arch in markers if any(marker in key for key in shapes)), None)


def _cross_attention_architecture(shapes: dict[str, list[int]]) -> Architecture | None:
    widths = (shape[-1] for key, shape in shapes.items() if key.endswith(CROSS_ATTENTION_KEY_SUFFIXES))
    return next((CROSS_ATTENTION_WIDTHS[w] for w in widths if w in CROSS_ATTENTION_WIDTHS), None)


def is_inpainting(path: Path) -> bool:
    """Whether a main model (folder or single file) is an inpainting checkpoint (a 9-channel UNet)."""
    if path.is_dir():
        unet_config = path / "unet" / "config.json"
        return (
            unet_config.is_file() and json.loads(unet_config.read_text()).get("in_channels") == INPAINTING_IN_CHANNELS
        )
    shape = safetensors_shapes(path).get(SINGLE_FILE_UNET_INPUT, [])
    return len(shape) > 1 and shape[1] == INPAINTING_IN_CHANNELS


def add_to_catalog(
    catalog_file: Path,
    path: Path,
    kind: str = "auto",
    name: str | None = None,
    code: str | None = None,
    architecture: Architecture | None = None,
    config: Path | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Append ``path`` as a new entry of its kind with the next free id; returns the entry.

    Main models, LoRAs and ControlNets get the architecture the file shows (or ``architecture``).
    """
    path = path.resolve()
    if not path.exists():
        raise ModelImportError(f"{path}: no such file or folder")
    kind = detect_kind(path) if kind == "auto" else kind
    yaml = YAML()
    document = yaml.load(catalog_file.read_text())
    entries = document.setdefault(KINDS[kind], [])
    entry = {
        "id": max((e["id"] for e in entries), default=0) + 1,
        "model_code": _unique_code(code or _slug(path.stem if path.is_file() else path.name), entries),
        "name": name or path.stem,
        "path": _relative(path, catalog_file.parent),
    }
    if kind in KINDS_WITH_ARCHITECTURE:
        entry["architecture"] = architecture or detect_architecture(path, kind)
    if kind == "main":
        entry["defaults"] = dict(DEFAULT_MAIN_PARAMS)
        entry |= {"inpainting": True} if is_inpainting(path) else {}
    if config is not None:
        entry["config"] = _relative(config.resolve(), catalog_file.parent)
    entry |= {k: v for k, v in extra.items() if v is not None}
    entries.append(entry)
    _write_validated(catalog_file, yaml, document)
    return entry


def pull(repo_id: str, target: Path, revision: str | None = None) -> Path:
    """Download a model repository's weights and configs from the Hugging Face hub."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                local_dir=target,
                allow_patterns=["*.json", "*.txt", "*.safetensors", "*.model", "*.spm"],
            )
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, OSError) as exc:
        raise ModelImportError(
            f"cannot download {repo_id!r} from the Hugging Face hub ({type(exc).__name__}): this machine may be "
            "offline. Copy the files here another way, then run `openpik-models add PATH`."
        ) from None


def _write_validated(catalog_file: Path, yaml: YAML, document: Any) -> None:
    candidate = catalog_file.with_name(catalog_file.name + ".new")
    with candidate.open("w") as out:
        yaml.dump(document, out)
    try:
        load_catalog(candidate)
    except CatalogError as exc:
        candidate.unlink()
        raise ModelImportError(f"the catalog would become invalid: {exc}") from None
    candidate.replace(catalog_file)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "model"


def _unique_code(code: str, entries: list[dict[str, Any]]) -> str:
    taken = {e["model_code"] for e in entries}
    candidate, n = code, 2
    while candidate in taken:
        candidate, n = f"{code}-{n}", n + 1
    return candidate


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base.resolve()))
    except ValueError:
        return str(path)
