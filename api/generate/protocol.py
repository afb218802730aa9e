"""Wire models of the generate actions, with PICPIK's field names and ranges (spec 3.1, 3.2)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from api.protocol_base import Envelope, SignedRequest, WireModel
from openpik import vocabulary as vocab

# --- legacy: GenerateImg2Img / GenerateTxt2Img ------------------------------------------


class SubModelParam(WireModel):
    SubModelId: int
    ControlWeight: vocab.LoraWeight = Field(default=vocab.DEFAULT_LORA_WEIGHT, description="LoRA weight (ours: -1..2)")


class ControlNetParam(WireModel):
    ControlNetImg: str = Field(description="base64 PNG/JPEG/WEBP, optionally with a data: prefix")
    ControlPreSetId: int | Literal["0", "1", "2", "3", "4"] = Field(
        default=0, description="0 custom; 1..4 a preset that fixes all but ControlNetImg and ControlWeight"
    )
    ControlWeight: vocab.ControlWeight = vocab.DEFAULT_CONTROL_WEIGHT
    ModelId: int | None = None
    PreProcessorId: int | Literal["none"] | None = None
    StartingControlStep: vocab.Fraction = 0.0
    EndingControlStep: vocab.Fraction = 1.0
    ControlMode: vocab.ControlMode = "Balanced"
    ResizeMode: vocab.ResizeMode = "JustResize"
    PreProcessorResolution: vocab.DetectResolution | None = None
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
    SubModelIds: list[int] = Field(default=[], max_length=vocab.MAX_LORAS)
    SubModelParams: list[SubModelParam] = Field(default=[], max_length=vocab.MAX_LORAS)
    BatchSize: vocab.BatchSize
    Steps: vocab.Steps
    CfgScale: vocab.CfgScale
    Seed: vocab.Seed
    Sampler: str = Field(max_length=64)
    Width: int = Field(ge=16, le=1440)
    Height: int = Field(ge=16, le=1440)
    ClipSkip: vocab.ClipSkip
    TranslatePrompt: bool
    PositivePrompts: list[str] = Field(default=[], max_length=vocab.MAX_PROMPTS)
    NegativePrompts: list[str] = Field(default=[], max_length=vocab.MAX_PROMPTS)
    EnableControlNet: bool | None = Field(
        default=None, description="false ignores ControlNetParams; absent uses them when given (ours)"
    )
    ControlNetParams: list[ControlNetParam] = Field(default=[], max_length=vocab.MAX_CONTROLNETS)
    UseCustomMainModelVae: bool = False


class GenerateTxt2ImgRequest(_LegacyGenerate):
    Action: Literal["GenerateTxt2Img"]


class GenerateImg2ImgRequest(_LegacyGenerate):
    Action: Literal["GenerateImg2Img"]
    ReferenceImage: str = Field(default="", description="empty: runs as text-to-image (ours)")
    ReferenceScale: vocab.Fraction = Field(default=0.5, description="strength = 1 - ReferenceScale")


# --- current: GenerateImages ------------------------------------------------------------


class MainModelParams(WireModel):
    Steps: vocab.Steps | None = None
    Sampler: str | None = Field(default=None, max_length=64)
    CFGScale: vocab.CfgScale | None = None
    ClipSkip: vocab.ClipSkip | None = None


class MainModelSpec(WireModel):
    ModelCode: str
    InferenceParams: MainModelParams = MainModelParams()


class LoraParams(WireModel):
    LoraWeight: vocab.LoraWeight = vocab.DEFAULT_LORA_WEIGHT


class SubModel(WireModel):
    ModelCode: str
    InferenceParams: LoraParams = LoraParams()


class ControlModelParams(WireModel):
    ControlWeight: vocab.ControlWeight = vocab.DEFAULT_CONTROL_WEIGHT
    StartingStep: vocab.Fraction = 0.0
    EndingStep: vocab.Fraction = 1.0
    ControlMode: vocab.ControlMode = "Balanced"
    ResizeMode: vocab.ResizeMode = "JustResize"

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

    model_config = ConfigDict(extra="allow")  # merged with WireModel's: strict, no aliases
    Resolution: vocab.DetectResolution | None = None


class PreProcessorSpec(WireModel):
    ModelCode: str
    InferenceParams: PreProcessorParams = PreProcessorParams()


class ControlNetItem(WireModel):
    ControlModel: ControlModelSpec
    PreProcessor: PreProcessorSpec
    ImageIndex: int = Field(ge=0, description="index into ImageAndMaskList")


class Image2ImageSpec(WireModel):
    ImageIndex: int = Field(ge=0)
    ReferStrength: vocab.Fraction = Field(default=0.3, description="same meaning as ReferenceScale")
    ResizeMode: vocab.ResizeMode = "JustResize"


class GenerateImagesRequest(SignedRequest):
    Action: Literal["GenerateImages"]
    MainModel: MainModelSpec
    SubModelList: list[SubModel] = Field(default=[], max_length=vocab.MAX_LORAS)
    PositivePrompts: list[str] = Field(default=[], max_length=vocab.MAX_PROMPTS)
    NegativePrompts: list[str] = Field(default=[], max_length=vocab.MAX_PROMPTS)
    TranslatePrompts: bool = True
    Seed: int = Field(default=-1, ge=-1, le=2**31 - 1)
    Width: int = Field(default=1024, ge=64, le=2560)
    Height: int = Field(default=1024, ge=64, le=2560)
    BatchSize: vocab.BatchSize = 1
    UseMainModelVAE: bool = False
    ControlNetList: list[ControlNetItem] = Field(default=[], max_length=vocab.MAX_CONTROLNETS)
    Image2Image: Image2ImageSpec | None = None
    ImageAndMaskList: list[str] = Field(default=[], max_length=8)
    Tileable: bool = False


GENERATE_REQUESTS = (GenerateImg2ImgRequest, GenerateTxt2ImgRequest, GenerateImagesRequest)


class GenerateResponse(Envelope):
    TaskUID: str = ""
