"""Catalog entries -> the resolved file references a Job carries."""
from __future__ import annotations

from models_registry.catalog import VENDORED_SD15_CONFIG, Catalog, Lora, MainModel
from openpik.job import LoraRef, ModelRef, VaeRef


def model_ref(model: MainModel) -> ModelRef:
    config = None
    if model.format == "single_file":
        config = str(model.config or VENDORED_SD15_CONFIG)
    return ModelRef(model_id=model.id, path=str(model.path), format=model.format, config_dir=config)


def default_vae_ref(catalog: Catalog, model: MainModel) -> VaeRef | None:
    """The catalog's default VAE for ``model``, or None to keep the checkpoint's own."""
    vae = catalog.vae(model.vae) if model.vae is not None else None
    return VaeRef(vae_id=vae.id, path=str(vae.path)) if vae else None


def lora_ref(lora: Lora, weight: float | None = None) -> LoraRef:
    return LoraRef(lora_id=lora.id, path=str(lora.path), weight=lora.default_weight if weight is None else weight)
