"""The operator's catalog, as the catalog actions show it to one key.

A key sees the operator's entries (no owner) and its own; nothing of another key's. VAEs are
not listed: PICPIK's shapes have no place for them and no request names one (the main model's
default VAE, or its own with UseMainModelVAE, is chosen by the gateway).
"""

from __future__ import annotations

from api.catalog.protocol import (
    ControlModelInfo,
    ControlNetModelItem,
    ListControlNetProcessorResponse,
    ListControlNetsResponse,
    ListModelsResponse,
    LoraInferenceParams,
    LoraModelInfo,
    MainInferenceParams,
    MainModelInfo,
    Number,
    PreProcessorInfo,
    PresetItem,
    ProcessorItem,
    ProcessorParam,
)
from api.protocol_base import param_label, wire_param_name
from models_registry.catalog import Catalog, Lora, MainModel, Preprocessor


def list_models(catalog: Catalog, owner: str) -> ListModelsResponse:
    return ListModelsResponse(
        MainModels={m.model_code: _main_model(m) for m in catalog.main_models if m.usable_by(owner)},
        LoraModels={lo.model_code: _lora(lo) for lo in catalog.loras if lo.usable_by(owner)},
        EmbeddingModels={},
        HypernetworkModels={},
    )


def list_controlnets(catalog: Catalog, owner: str) -> ListControlNetsResponse:
    return ListControlNetsResponse(
        PreProcessors={p.model_code: _preprocessor(p) for p in catalog.preprocessors},
        ControlModels={
            c.model_code: ControlModelInfo(Name=c.name, ModelCode=c.model_code, Id=c.id, BaseModel=c.architecture)
            for c in catalog.controlnets
            if c.usable_by(owner)
        },
    )


def list_processors(catalog: Catalog, owner: str) -> ListControlNetProcessorResponse:
    processors = [_processor_item(p) for p in catalog.preprocessors]
    return ListControlNetProcessorResponse(
        ControlNetProcessorList=processors,
        ControlNetPreProcessorList=processors,
        ModelList=[
            ControlNetModelItem(Id=c.id, Name=c.name, ModelCode=c.model_code, BaseModel=c.architecture)
            for c in catalog.controlnets
            if c.usable_by(owner)
        ],
        PresetList=[
            PresetItem(Id=p.id, Name=p.name, ModelId=p.controlnet, PreProcessorId=p.preprocessor)
            for p in catalog.presets
        ],
    )


def _main_model(model: MainModel) -> MainModelInfo:
    defaults = model.defaults
    return MainModelInfo(
        Name=model.name,
        ModelCode=model.model_code,
        IsOfficial=model.owner is None,
        TriggerWordList=[],
        InferenceParams=MainInferenceParams(
            Steps=defaults.steps, Sampler=defaults.sampler, CFGScale=defaults.cfg_scale, ClipSkip=defaults.clip_skip
        ),
        Id=model.id,
        BaseModel=model.architecture,
        Width=model.size[0],
        Height=model.size[1],
    )


def _lora(lora: Lora) -> LoraModelInfo:
    return LoraModelInfo(
        Name=lora.name,
        ModelCode=lora.model_code,
        IsOfficial=lora.owner is None,
        TriggerWordList=lora.trigger_words,
        InferenceParams=LoraInferenceParams(LoraWeight=lora.default_weight),
        Id=lora.id,
        BaseModel=lora.architecture,
    )


def _preprocessor(preprocessor: Preprocessor) -> PreProcessorInfo:
    """Its InferenceParams at their defaults, under the names GenerateImages reads back."""
    resolution: dict[str, Number] = (
        {"Resolution": preprocessor.default_resolution} if preprocessor.has_resolution else {}
    )
    params = {wire_param_name(preprocessor.model_code, s.name): _number(s.default) for s in preprocessor.params}
    return PreProcessorInfo(
        Name=preprocessor.name, ModelCode=preprocessor.model_code, InferenceParams=resolution | params
    )


def _processor_item(preprocessor: Preprocessor) -> ProcessorItem:
    return ProcessorItem(
        Id=preprocessor.id,
        Name=preprocessor.name,
        HasResolution=preprocessor.has_resolution,
        Params=[
            ProcessorParam(
                ParamName=param_label(preprocessor.model_code, s.name),
                ParamDefaultValue=_number(s.default),
                MiniMum=_number(s.min),
                MaxiMum=_number(s.max),
                Step=_number(s.step),
            )
            for s in preprocessor.params
        ],
        ModelCode=preprocessor.model_code,
    )


def _number(value: float) -> Number:
    """100.0 -> 100: a client that decodes a threshold into an int fails on "100.0"."""
    return int(value) if value.is_integer() else value
