"""Wire models of the catalog actions: what a client can ask for, by id and ModelCode."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from api.protocol_base import Envelope, SignedRequest


class ListModelsRequest(SignedRequest):
    Action: Literal["ListModels"]


class ListControlNetsRequest(SignedRequest):
    Action: Literal["ListControlNets"]


class ListControlNetProcessorRequest(SignedRequest):
    Action: Literal["ListControlNetProcessor"]


class ModelItem(BaseModel):
    Id: int  # extension: the legacy MainModelId / SubModelIds value
    ModelCode: str
    ModelName: str
    ModelType: Literal["main_model", "lora", "vae"]
    Scope: Literal["combined_model", "custom_model"] = "combined_model"
    BaseModel: str = "sd15"
    TriggerWords: list[str] = []
    DefaultInferenceParams: dict[str, float | int | str] = {}


class ListModelsResponse(Envelope):
    ModelList: list[ModelItem]


class ControlNetItem(BaseModel):
    Id: int
    ModelCode: str
    ModelName: str
    BaseModel: str = "sd15"


class ListControlNetsResponse(Envelope):
    ControlNetList: list[ControlNetItem]


class ProcessorParam(BaseModel):
    Name: str  # the GenerateImages InferenceParams key; Param1Value/Param2Value in order
    DefaultValue: float
    MinValue: float
    MaxValue: float
    Step: float


class ProcessorItem(BaseModel):
    Id: int
    ModelCode: str
    Name: str
    HasResolution: bool
    DefaultResolution: int
    Params: list[ProcessorParam]


class PresetItem(BaseModel):
    Id: int
    Name: str
    ModelId: int
    PreProcessorId: int


class ListControlNetProcessorResponse(Envelope):
    ControlNetProcessorList: list[ProcessorItem]
    ControlNetPreProcessorList: list[ProcessorItem]  # the documentation uses both names
    ModelList: list[ControlNetItem]
    PresetList: list[PresetItem]


CATALOG_REQUESTS = (ListModelsRequest, ListControlNetsRequest, ListControlNetProcessorRequest)
