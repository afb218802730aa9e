"""The operator's catalog, as the catalog actions show it to one key."""

from __future__ import annotations

from api.catalog.protocol import ControlNetItem, ModelItem, PresetItem, ProcessorItem, ProcessorParam
from api.protocol_base import wire_param_name
from models_registry.catalog import Catalog


def list_models(catalog: Catalog, owner: str) -> list[ModelItem]:
    mains = [
        ModelItem(
            Id=m.id,
            ModelCode=m.model_code,
            ModelName=m.name,
            ModelType="main_model",
            Scope="custom_model" if m.owner else "combined_model",
            BaseModel=m.architecture,
            DefaultInferenceParams=m.defaults.model_dump(),
        )
        for m in catalog.main_models
        if m.owner in (None, owner)
    ]
    loras = [
        ModelItem(
            Id=lo.id,
            ModelCode=lo.model_code,
            ModelName=lo.name,
            ModelType="lora",
            BaseModel=lo.architecture,
            TriggerWords=lo.trigger_words,
            DefaultInferenceParams={"LoraWeight": lo.default_weight},
        )
        for lo in catalog.loras
    ]
    vaes = [
        ModelItem(Id=v.id, ModelCode=v.model_code, ModelName=v.name or v.model_code, ModelType="vae")
        for v in catalog.vaes
    ]
    return mains + loras + vaes


def list_controlnets(catalog: Catalog) -> list[ControlNetItem]:
    return [
        ControlNetItem(Id=c.id, ModelCode=c.model_code, ModelName=c.name, BaseModel=c.architecture)
        for c in catalog.controlnets
    ]


def list_processors(catalog: Catalog) -> list[ProcessorItem]:
    return [
        ProcessorItem(
            Id=p.id,
            ModelCode=p.model_code,
            Name=p.name,
            HasResolution=p.has_resolution,
            DefaultResolution=p.default_resolution,
            Params=[
                ProcessorParam(
                    Name=wire_param_name(p.model_code, s.name),
                    DefaultValue=s.default,
                    MinValue=s.min,
                    MaxValue=s.max,
                    Step=s.step,
                )
                for s in p.params
            ],
        )
        for p in catalog.preprocessors
    ]


def list_presets(catalog: Catalog) -> list[PresetItem]:
    return [
        PresetItem(Id=p.id, Name=p.name, ModelId=p.controlnet, PreProcessorId=p.preprocessor) for p in catalog.presets
    ]
