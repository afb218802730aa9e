"""Catalog entries -> the resolved file references a Job carries."""

from __future__ import annotations

from typing import Any, TypeVar

from models_registry.catalog import Catalog, Lora, MainModel
from openpik.job import ControlUnit, LoraRef, ModelRef, VaeRef

Entry = TypeVar("Entry")


def model_ref(model: MainModel) -> ModelRef:
    config = str(model.config_dir) if model.format == "single_file" else None
    return ModelRef(
        model_id=model.id, path=str(model.path), format=model.format, config_dir=config, architecture=model.architecture
    )


def default_vae_ref(catalog: Catalog, model: MainModel) -> VaeRef | None:
    """The catalog's default VAE for ``model``, or None to keep the checkpoint's own."""
    vae = catalog.vae(model.vae) if model.vae is not None else None
    return VaeRef(vae_id=vae.id, path=str(vae.path)) if vae else None


def lora_ref(lora: Lora, weight: float | None = None) -> LoraRef:
    return LoraRef(lora_id=lora.id, path=str(lora.path), weight=lora.default_weight if weight is None else weight)


def preset_unit(catalog: Catalog, preset_id: int, image: str, weight: float) -> ControlUnit:
    """A PICPIK preset (ControlPreSetId 1..4): the catalog fixes all but image and weight."""
    preset = _require(catalog.preset(preset_id), "preset", preset_id)
    preprocessor = _require(catalog.preprocessor(preset.preprocessor), "preprocessor", preset.preprocessor)
    return control_unit(
        catalog,
        preset.controlnet,
        preprocessor.id,
        image,
        weight=weight,
        params=preset.params or None,
        detect_resolution=preset.resolution,
        start=preset.start,
        end=preset.end,
        mode=preset.mode,
        resize_mode=preset.resize_mode,
    )


def control_unit(
    catalog: Catalog,
    controlnet_id: int,
    preprocessor_id: int,
    image: str,
    params: list[float] | None = None,
    **fields: Any,
) -> ControlUnit:
    """A ControlNet unit; ``params`` are the preprocessor's Param1Value/Param2Value in order."""
    controlnet = _require(catalog.controlnet(controlnet_id), "ControlNet", controlnet_id)
    preprocessor = _require(catalog.preprocessor(preprocessor_id), "preprocessor", preprocessor_id)
    values = params if params is not None else [p.default for p in preprocessor.params]
    named = {spec.name: value for spec, value in zip(preprocessor.params, values)}
    return ControlUnit(
        controlnet_id=controlnet.id,
        path=str(controlnet.path),
        image=image,
        preprocessor=preprocessor.detector,
        preprocessor_params=named,
        **fields,
    )


def _require(entry: Entry | None, kind: str, entry_id: int) -> Entry:
    """Callers check ids against the catalog first (with the client's field named): a miss here is ours."""
    if entry is None:
        raise LookupError(f"no {kind} with id {entry_id} in the catalog")
    return entry
