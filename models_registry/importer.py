"""`openpik-models add` and `pull`: bring local or hub files into the catalog.

The catalog is edited round-trip (ruamel.yaml) so the operator's comments and layout stay;
the result is validated with the same loader the servers use before it replaces the file.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from models_registry.catalog import CatalogError, load_catalog

KINDS = {"main": "main_models", "lora": "loras", "controlnet": "controlnets", "vae": "vaes"}
# Diffusers folder -> kind, by the class its config names.
FOLDER_CLASSES = {"StableDiffusionPipeline": "main", "ControlNetModel": "controlnet", "AutoencoderKL": "vae"}
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
DEFAULT_MAIN_PARAMS = {"steps": 20, "sampler": "Euler a", "cfg_scale": 7.0, "clip_skip": 1, "width": 512, "height": 512}


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
    with path.open("rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(length))
    return [key for key in header if key != "__metadata__"]


def add_to_catalog(
    catalog_file: Path, path: Path, kind: str = "auto", name: str | None = None, code: str | None = None, **extra: Any
) -> dict[str, Any]:
    """Append ``path`` as a new entry of its kind with the next free id; returns the entry."""
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
    if kind == "main":
        entry["defaults"] = dict(DEFAULT_MAIN_PARAMS)
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
