"""Wire models of the generate actions, with PICPIK's field names and ranges (spec 3.1, 3.2).

Read liberally (api/protocol_base.py): ``DefaultWhen`` marks the zero values typed clients
send for "not set"; ``unread`` lists documented fields an action does not read.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from api.protocol_base import (
    EMPTY_IS_DEFAULT,
    INFERENCE_PARAM_KEYS,
    MODEL_OBJECT_FIELDS,
    ZERO_IS_DEFAULT,
    Envelope,
    SignedRequest,
    WireModel,
)
from openpik import vocabulary as vocab

PRESET_FIELDS = frozenset({"ControlNetImg", "ControlPreSetId", "ControlWeight"})
"""All a preset unit reads; its other fields are not validated (PICPIK's documentation)."""
PRESET_IDS = ("0", "1", "2", "3", "4")

CallbackUrlField = Annotated[
    str | None,
    EMPTY_IS_DEFAULT,
    Field(
        max_length=2048,
        description="ours: when the task ends, its ListTasksDetails item is POSTed here, signed as Standard "
        "Webhooks with the PrivateKey; only under the key's callback_url_prefixes (spec section 11)",
    ),
]
"""Every generate and editing action takes it; translated into the task record, never into the Job."""


def _window(start: float, end: float, start_field: str) -> tuple[float, float]:
    """A control window as typed clients send an unset one (0, 0) is the whole run."""
    if start == end == 0:
        return 0.0, 1.0
    if start > end:
        raise ValueError(f"{start_field}: must be <= the ending step")
    return start, end


# --- legacy: GenerateImg2Img / GenerateTxt2Img ------------------------------------------


class SubModelParam(WireModel):
    SubModelId: int
    ControlWeight: vocab.LoraWeight = Field(default=vocab.DEFAULT_LORA_WEIGHT, description="LoRA weight (ours: -1..2)")


class ControlNetParam(WireModel):
    ControlNetImg: str = Field(description="base64 PNG/JPEG/WEBP/BMP/GIF, optionally with a data: prefix")
    ControlPreSetId: int | Literal["0", "1", "2", "3", "4"] = Field(
        default=0, description="0 custom; 1..4 a preset that fixes all but ControlNetImg and ControlWeight"
    )
    ControlWeight: vocab.ControlWeight = vocab.DEFAULT_CONTROL_WEIGHT
    ModelId: Annotated[int | None, ZERO_IS_DEFAULT] = None
    PreProcessorId: int | Literal["none"] | None = Field(default=None, description="0 or none: no preprocessing")
    StartingControlStep: vocab.Fraction = vocab.DEFAULT_CONTROL_START
    EndingControlStep: vocab.Fraction = vocab.DEFAULT_CONTROL_END
    ControlMode: Annotated[vocab.ControlMode, EMPTY_IS_DEFAULT] = vocab.DEFAULT_CONTROL_MODE
    ResizeMode: Annotated[vocab.ResizeMode, EMPTY_IS_DEFAULT] = "JustResize"
    PreProcessorResolution: Annotated[vocab.DetectResolution | None, ZERO_IS_DEFAULT] = None
    Param1Value: float | None = None
    Param2Value: float | None = None

    @classmethod
    def unread_in(cls, data: dict[str, Any]) -> frozenset[str]:
        preset = data.get("ControlPreSetId", 0)
        if str(int(preset) if isinstance(preset, float) and preset.is_integer() else preset) in PRESET_IDS[1:]:
            return frozenset(cls.model_fields) - PRESET_FIELDS
        return cls.unread

    @property
    def preset_id(self) -> int:
        return int(self.ControlPreSetId)

    @model_validator(mode="after")
    def _check(self) -> ControlNetParam:
        if not 0 <= self.preset_id <= 4:
            raise ValueError("ControlPreSetId: must be 0 (custom) or a preset 1..4")
        self.StartingControlStep, self.EndingControlStep = _window(
            self.StartingControlStep, self.EndingControlStep, "StartingControlStep"
        )
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
    ClipSkip: Annotated[vocab.ClipSkip, ZERO_IS_DEFAULT] = Field(default=vocab.DEFAULT_CLIP_SKIP, description="0 = 1")
    TranslatePrompt: bool
    PositivePrompts: list[str] = Field(default=[], max_length=vocab.MAX_PROMPTS)
    NegativePrompts: list[str] = Field(default=[], max_length=vocab.MAX_PROMPTS)
    EnableControlNet: bool | None = Field(
        default=None, description="false ignores ControlNetParams; absent uses them when given (ours)"
    )
    ControlNetParams: list[ControlNetParam] = Field(default=[], max_length=vocab.MAX_CONTROLNETS)
    UseCustomMainModelVae: bool = False
    CallbackUrl: CallbackUrlField = None

    @classmethod
    def unread_in(cls, data: dict[str, Any]) -> frozenset[str]:
        return cls.unread | ({"ControlNetParams"} if data.get("EnableControlNet") is False else frozenset())


class GenerateTxt2ImgRequest(_LegacyGenerate):
    Action: Literal["GenerateTxt2Img"]
    unread: ClassVar[frozenset[str]] = frozenset({"ReferenceImage", "ReferenceScale"})


class GenerateImg2ImgRequest(_LegacyGenerate):
    Action: Literal["GenerateImg2Img"]
    ReferenceImage: str = Field(default="", description="empty: runs as text-to-image (ours)")
    ReferenceScale: vocab.Fraction = Field(default=0.5, description="strength = 1 - ReferenceScale")


# --- current: GenerateImages ------------------------------------------------------------


class _InferenceParams(WireModel):
    """One parent's InferenceParams; the keys of the others are not read (one struct for all)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.unread = INFERENCE_PARAM_KEYS - set(cls.__annotations__)


class MainModelParams(_InferenceParams):
    Steps: Annotated[vocab.Steps | None, ZERO_IS_DEFAULT] = None
    Sampler: Annotated[str | None, EMPTY_IS_DEFAULT] = Field(default=None, max_length=64)
    CFGScale: Annotated[vocab.CfgScale | None, ZERO_IS_DEFAULT] = None
    ClipSkip: Annotated[vocab.ClipSkip | None, ZERO_IS_DEFAULT] = None


class _ModelObject(WireModel):
    """A Model as ListModels / ListControlNets show it: what they add besides these is not read."""

    unread: ClassVar[frozenset[str]] = MODEL_OBJECT_FIELDS
    ModelCode: str


class MainModelSpec(_ModelObject):
    InferenceParams: MainModelParams = MainModelParams()


class LoraParams(_InferenceParams):
    LoraWeight: vocab.LoraWeight | None = Field(default=None, description="default: the catalog's")


class SubModel(_ModelObject):
    InferenceParams: LoraParams = LoraParams()


class ControlModelParams(_InferenceParams):
    ControlWeight: vocab.ControlWeight = vocab.DEFAULT_CONTROL_WEIGHT
    StartingStep: vocab.Fraction = vocab.DEFAULT_CONTROL_START
    EndingStep: vocab.Fraction = vocab.DEFAULT_CONTROL_END
    ControlMode: Annotated[vocab.ControlMode, EMPTY_IS_DEFAULT] = vocab.DEFAULT_CONTROL_MODE
    ResizeMode: Annotated[vocab.ResizeMode, EMPTY_IS_DEFAULT] = vocab.DEFAULT_RESIZE_MODE

    @model_validator(mode="after")
    def _window_ordered(self) -> ControlModelParams:
        self.StartingStep, self.EndingStep = _window(self.StartingStep, self.EndingStep, "StartingStep")
        return self


class ControlModelSpec(_ModelObject):
    InferenceParams: ControlModelParams = ControlModelParams()


class PreProcessorParams(_InferenceParams):
    """Resolution plus the preprocessor's own parameters as ListControlNets names them
    (CannyLowThreshold); which of those a preprocessor takes is checked when translating."""

    extras_are_values: ClassVar[bool] = True
    Resolution: Annotated[vocab.DetectResolution | None, ZERO_IS_DEFAULT] = None


class PreProcessorSpec(_ModelObject):
    ModelCode: Annotated[str, EMPTY_IS_DEFAULT] = Field(default="none", description="none: no preprocessing")
    InferenceParams: PreProcessorParams = PreProcessorParams()


class ControlNetItem(WireModel):
    ControlModel: ControlModelSpec
    PreProcessor: PreProcessorSpec = Field(
        default=PreProcessorSpec(), description="absent or ModelCode none: the image is the control map"
    )
    ImageIndex: int = Field(ge=0, description="index into ImageAndMaskList")


class Image2ImageSpec(WireModel):
    ImageIndex: int = Field(ge=0)
    ReferStrength: vocab.Fraction = Field(default=0.3, description="same meaning as ReferenceScale")
    ResizeMode: Annotated[vocab.ResizeMode, EMPTY_IS_DEFAULT] = vocab.DEFAULT_RESIZE_MODE
    MaskIndex: int | None = Field(
        default=None, ge=0, description="ours: a mask in ImageAndMaskList, white = repaint (inpainting, spec 9)"
    )


class GenerateImagesRequest(SignedRequest):
    Action: Literal["GenerateImages"]
    MainModel: MainModelSpec
    SubModelList: list[SubModel] = Field(default=[], max_length=vocab.MAX_LORAS)
    PositivePrompts: list[str] = Field(default=[], max_length=vocab.MAX_PROMPTS)
    NegativePrompts: list[str] = Field(default=[], max_length=vocab.MAX_PROMPTS)
    TranslatePrompts: bool = True
    Seed: int = Field(default=-1, ge=-1, le=vocab.RANDOM_SEED_MAX)
    Width: Annotated[int | None, ZERO_IS_DEFAULT] = Field(
        default=None, ge=64, le=2560, description="default: the main model's native size"
    )
    Height: Annotated[int | None, ZERO_IS_DEFAULT] = Field(
        default=None, ge=64, le=2560, description="default: the main model's native size"
    )
    BatchSize: Annotated[vocab.BatchSize, ZERO_IS_DEFAULT] = 1
    UseMainModelVAE: bool = False
    ControlNetList: list[ControlNetItem] = Field(default=[], max_length=vocab.MAX_CONTROLNETS)
    Image2Image: Image2ImageSpec | None = None
    ImageAndMaskList: list[str] = Field(default=[], max_length=8)
    Tileable: bool = False
    CallbackUrl: CallbackUrlField = None

    images_field: ClassVar[str] = "ImageAndMaskList"
    """The wire name of the list the ImageIndex and MaskIndex fields point into."""

    @property
    def image_list(self) -> list[str]:
        return self.ImageAndMaskList


GENERATE_REQUESTS = (GenerateImg2ImgRequest, GenerateTxt2ImgRequest, GenerateImagesRequest)


class GenerateResponse(Envelope):
    TaskUID: str = ""
