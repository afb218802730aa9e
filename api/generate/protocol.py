"""Wire models of the generate actions, with PICPIK's field names and ranges (spec 3.1, 3.2)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from api.protocol_base import Envelope, SignedRequest, WireModel

ControlModeName = Literal["Balanced", "MyPromptIsMoreImportant", "ControlNetIsMoreImportant"]
ResizeModeName = Literal["JustResize", "CropAndResize", "ResizeAndFill"]
UINT32_MAX = 2**32 - 1


# --- legacy: GenerateImg2Img / GenerateTxt2Img ------------------------------------------


class SubModelParam(WireModel):
    SubModelId: int
    ControlWeight: float = Field(default=1.0, ge=-1, le=2, description="LoRA weight (ours: -1..2)")


class ControlNetParam(WireModel):
    ControlNetImg: str = Field(description="base64 PNG/JPEG/WEBP, optionally with a data: prefix")
    ControlPreSetId: int | Literal["0", "1", "2", "3", "4"] = Field(
        default=0, description="0 custom; 1..4 a preset that fixes all but ControlNetImg and ControlWeight"
    )
    ControlWeight: float = Field(default=1.0, ge=0, le=2)
    ModelId: int | None = None
    PreProcessorId: int | Literal["none"] | None = None
    StartingControlStep: float = Field(default=0.0, ge=0, le=1)
    EndingControlStep: float = Field(default=1.0, ge=0, le=1)
    ControlMode: ControlModeName = "Balanced"
    ResizeMode: ResizeModeName = "JustResize"
    PreProcessorResolution: int | None = Field(default=None, ge=64, le=2048)
    Param1Value: float | None = None
    Param2Value: float | None = None

    @property
    def preset_id(self) -> int:
        return int(self.ControlPreSetId)

    @model_validator(mode="after")
    def _check(self) -> ControlNetParam:
        if not 0 <= self.preset_id <= 4:
            raise ValueError("ControlPreSetId: must be 0 (custom) or a preset 1..4")
        if self.StartingControlStep > self.EndingControlStep:
            raise ValueError("StartingControlStep: must be <= EndingControlStep")
        return self


class _LegacyGenerate(SignedRequest):
    ModelType: Literal["combined_model", "custom_model"]
    MainModelId: int
    SubModelIds: list[int] = Field(default=[], max_length=8)
    SubModelParams: list[SubModelParam] = Field(default=[], max_length=8)
    BatchSize: int = Field(ge=1, le=16)
    Steps: int = Field(ge=1, le=150)
    CfgScale: float = Field(ge=0, le=30)
    Seed: int = Field(ge=-1, le=UINT32_MAX)
    Sampler: str = Field(max_length=64)
    Width: int = Field(ge=16, le=1440)
    Height: int = Field(ge=16, le=1440)
    ClipSkip: int = Field(ge=1, le=12)
    TranslatePrompt: bool
    PositivePrompts: list[str] = Field(default=[], max_length=64)
    NegativePrompts: list[str] = Field(default=[], max_length=64)
    EnableControlNet: bool | None = Field(
        default=None, description="false ignores ControlNetParams; absent uses them when given (ours)"
    )
    ControlNetParams: list[ControlNetParam] = Field(default=[], max_length=3)
    UseCustomMainModelVae: bool = False


class GenerateTxt2ImgRequest(_LegacyGenerate):
    Action: Literal["GenerateTxt2Img"]


class GenerateImg2ImgRequest(_LegacyGenerate):
    Action: Literal["GenerateImg2Img"]
    ReferenceImage: str = Field(default="", description="empty: runs as text-to-image (ours)")
    ReferenceScale: float = Field(default=0.5, ge=0, le=1, description="strength = 1 - ReferenceScale")


# --- current: GenerateImages ------------------------------------------------------------


class MainModelParams(WireModel):
    Steps: int | None = Field(default=None, ge=1, le=150)
    Sampler: str | None = Field(default=None, max_length=64)
    CFGScale: float | None = Field(default=None, ge=0, le=30)
    ClipSkip: int | None = Field(default=None, ge=1, le=12)


class MainModelSpec(WireModel):
    ModelCode: str
    InferenceParams: MainModelParams = MainModelParams()


class LoraParams(WireModel):
    LoraWeight: float = Field(default=1.0, ge=-1, le=2)


class SubModel(WireModel):
    ModelCode: str
    InferenceParams: LoraParams = LoraParams()


class ControlModelParams(WireModel):
    ControlWeight: float = Field(default=1.0, ge=0, le=2)
    StartingStep: float = Field(default=0.0, ge=0, le=1)
    EndingStep: float = Field(default=1.0, ge=0, le=1)
    ControlMode: ControlModeName = "Balanced"
    ResizeMode: ResizeModeName = "JustResize"

    @model_validator(mode="after")
    def _window_ordered(self) -> ControlModelParams:
        if self.StartingStep > self.EndingStep:
            raise ValueError("StartingStep: must be <= EndingStep")
        return self


class ControlModelSpec(WireModel):
    ModelCode: str
    InferenceParams: ControlModelParams = ControlModelParams()


class PreProcessorParams(WireModel):
    """Resolution plus the preprocessor's own parameters by name (e.g. CannyLowThreshold)."""

    model_config = {**WireModel.model_config, "extra": "allow"}
    Resolution: int | None = Field(default=None, ge=64, le=2048)


class PreProcessorSpec(WireModel):
    ModelCode: str
    InferenceParams: PreProcessorParams = PreProcessorParams()


class ControlNetItem(WireModel):
    ControlModel: ControlModelSpec
    PreProcessor: PreProcessorSpec
    ImageIndex: int = Field(ge=0, description="index into ImageAndMaskList")


class Image2ImageSpec(WireModel):
    ImageIndex: int = Field(ge=0)
    ReferStrength: float = Field(default=0.3, ge=0, le=1, description="same meaning as ReferenceScale")
    ResizeMode: ResizeModeName = "JustResize"


class GenerateImagesRequest(SignedRequest):
    Action: Literal["GenerateImages"]
    MainModel: MainModelSpec
    SubModelList: list[SubModel] = Field(default=[], max_length=8)
    PositivePrompts: list[str] = Field(default=[], max_length=64)
    NegativePrompts: list[str] = Field(default=[], max_length=64)
    TranslatePrompts: bool = True
    Seed: int = Field(default=-1, ge=-1, le=2**31 - 1)
    Width: int = Field(default=1024, ge=64, le=2560)
    Height: int = Field(default=1024, ge=64, le=2560)
    BatchSize: int = Field(default=1, ge=1, le=16)
    UseMainModelVAE: bool = False
    ControlNetList: list[ControlNetItem] = Field(default=[], max_length=3)
    Image2Image: Image2ImageSpec | None = None
    ImageAndMaskList: list[str] = Field(default=[], max_length=8)
    Tileable: bool = False


GENERATE_REQUESTS = (GenerateImg2ImgRequest, GenerateTxt2ImgRequest, GenerateImagesRequest)


class GenerateResponse(Envelope):
    TaskUID: str = ""
