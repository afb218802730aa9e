"""Wire models of the background-removal actions, with PICPIK's field names (spec section 9).

Read liberally (api/protocol_base.py): an empty HairOptimization, and an empty or all-zero
Box (what typed clients send for "not set"), are the defaults; HairOptimization is read in
any case. ErodeSize 0 and thresholds 0 are real values. Whether a Box lies inside the image
needs the decoded image: that is serving.py's check.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from api.generate.protocol import CallbackUrlField
from api.protocol_base import EMPTY_IS_DEFAULT, DefaultWhen, SignedRequest
from openpik import vocabulary as vocab

UNSET_BOX = DefaultWhen(([], [0, 0, 0, 0]))


class _RemovalOptions(SignedRequest):
    ErodeSize: vocab.ErodeSize = vocab.DEFAULT_ERODE_SIZE
    ForegroundThreshold: vocab.AlphaThreshold = vocab.DEFAULT_FOREGROUND_THRESHOLD
    BackgroundThreshold: vocab.AlphaThreshold = vocab.DEFAULT_BACKGROUND_THRESHOLD
    HairOptimization: Annotated[vocab.HairOptimization, EMPTY_IS_DEFAULT] = Field(
        default=vocab.DEFAULT_HAIR_OPTIMIZATION,
        description="auto (matting where the subject's edge is soft), on or off; any case",
    )
    OnlyMask: bool = Field(default=False, description="true: the subject's mask as an L PNG instead of the cut-out")
    CallbackUrl: CallbackUrlField = None

    @field_validator("HairOptimization", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


class RemoveBackgroundRequest(_RemovalOptions):
    Action: Literal["RemoveBackground"]
    RawImage: str = Field(description="base64 PNG/JPEG/WEBP/BMP/GIF, optionally with a data: prefix")
    Box: Annotated[list[int] | None, UNSET_BOX] = Field(
        default=None,
        min_length=4,
        max_length=4,
        description="x1, y1, x2, y2: the subject lies in x1 <= x < x2, y1 <= y < y2; outside is background",
    )

    @model_validator(mode="after")
    def _box_ordered(self) -> RemoveBackgroundRequest:
        if self.Box is not None:
            x1, y1, x2, y2 = self.Box
            if not (x1 < x2 and y1 < y2):
                raise ValueError(f"Box: must be x1, y1, x2, y2 with x1 < x2 and y1 < y2; got {self.Box}")
        return self


class RemoveBackgroundsInBatchRequest(_RemovalOptions):
    Action: Literal["RemoveBackgroundsInBatch"]
    unread: ClassVar[frozenset[str]] = frozenset({"Box"})
    RawImages: list[str] = Field(
        min_length=1, max_length=vocab.MAX_BACKGROUND_IMAGES, description="one result per image, in this order"
    )


BACKGROUND_REQUESTS = (RemoveBackgroundRequest, RemoveBackgroundsInBatchRequest)
