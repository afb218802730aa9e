"""Wire models of the catalog actions, in PICPIK's documented shapes (spec section 6).

Field names are PICPIK's, spelling included (``MiniMum``, ``MaxiMum``). The Model objects of
ListModels and the ControlModel/PreProcessor objects of ListControlNets are built so that a
client can send them back unchanged inside GenerateImages: each carries ``ModelCode`` and the
``InferenceParams`` keys GenerateImages reads, with the catalog's defaults as values.
"""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

from api.protocol_base import Envelope, SignedRequest
from openpik import vocabulary as vocab

Number = int | float
"""A value whose type PICPIK does not declare (preprocessor parameters and their ranges):
integral values go out as integers, which typed decoders read as an int or a float alike."""

Params = TypeVar("Params")


class ListModelsRequest(SignedRequest):
    Action: Literal["ListModels"]


class ListControlNetsRequest(SignedRequest):
    Action: Literal["ListControlNets"]


class ListControlNetProcessorRequest(SignedRequest):
    Action: Literal["ListControlNetProcessor"]


# --- ListModels ----------------------------------------------------------------------------


class MainInferenceParams(BaseModel):
    Steps: int
    Sampler: str
    CFGScale: float
    ClipSkip: int


class LoraInferenceParams(BaseModel):
    LoraWeight: float


class Model(BaseModel, Generic[Params]):
    """PICPIK's Model, with our extensions ``Id`` (the legacy MainModelId / SubModelIds value)
    and ``BaseModel`` (the architecture: sd15, sdxl)."""

    Name: str
    ModelCode: str
    IsOfficial: bool  # true: the operator's (combined_model); false: the caller's own (custom_model)
    TriggerWordList: list[str]
    InferenceParams: Params
    Id: int
    BaseModel: str


class MainModelInfo(Model[MainInferenceParams]):
    Width: int  # extension: the native size, GenerateImages' default
    Height: int


LoraModelInfo = Model[LoraInferenceParams]
ExtraModelInfo = Model[dict[str, Number]]
"""An embedding or a hypernetwork (the catalog has none yet)."""


class ListModelsResponse(Envelope):
    MainModels: dict[str, MainModelInfo]
    LoraModels: dict[str, LoraModelInfo]
    EmbeddingModels: dict[str, ExtraModelInfo]
    HypernetworkModels: dict[str, ExtraModelInfo]


# --- ListControlNets -----------------------------------------------------------------------


class PreProcessorInfo(BaseModel):
    """InferenceParams: ``Resolution`` (when the preprocessor has one) and each parameter under
    its wire name (canny: ``CannyLowThreshold``, ``CannyHighThreshold``), at their defaults."""

    Name: str
    ModelCode: str
    InferenceParams: dict[str, Number]


class ControlModelParams(BaseModel):
    ControlWeight: float = vocab.DEFAULT_CONTROL_WEIGHT
    StartingStep: float = vocab.DEFAULT_CONTROL_START
    EndingStep: float = vocab.DEFAULT_CONTROL_END
    ControlMode: vocab.ControlMode = vocab.DEFAULT_CONTROL_MODE
    ResizeMode: vocab.ResizeMode = vocab.DEFAULT_RESIZE_MODE


class ControlModelInfo(BaseModel):
    Name: str
    ModelCode: str
    InferenceParams: ControlModelParams = ControlModelParams()
    Id: int  # extension: the legacy ModelId
    BaseModel: str  # extension: the architecture


class ListControlNetsResponse(Envelope):
    PreProcessors: dict[str, PreProcessorInfo]
    ControlModels: dict[str, ControlModelInfo]


# --- ListControlNetProcessor ---------------------------------------------------------------


class ProcessorParam(BaseModel):
    """One parameter, in the order of the legacy Param1Value / Param2Value."""

    ParamName: str  # words: "Canny Low Threshold"
    ParamDefaultValue: Number
    MiniMum: Number
    MaxiMum: Number
    Step: Number


class ProcessorItem(BaseModel):
    Id: int
    Name: str
    HasResolution: bool
    Params: list[ProcessorParam]
    ModelCode: str  # extension: the GenerateImages PreProcessor.ModelCode


class ControlNetModelItem(BaseModel):
    Id: int
    Name: str
    ModelCode: str  # extension
    BaseModel: str  # extension


class PresetItem(BaseModel):
    Id: int
    Name: str
    ModelId: int
    PreProcessorId: int


class ListControlNetProcessorResponse(Envelope):
    ControlNetProcessorList: list[ProcessorItem]
    ControlNetPreProcessorList: list[ProcessorItem]  # the documentation uses both names
    ModelList: list[ControlNetModelItem]
    PresetList: list[PresetItem]  # extension


CATALOG_REQUESTS = (ListModelsRequest, ListControlNetsRequest, ListControlNetProcessorRequest)
