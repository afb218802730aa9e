"""Wire models of the inpainting actions, RemoveContents and GenerateBackgrounds (spec section 9).

GenerateBackgrounds takes GenerateImages' fields, so its model is GenerateImages' with its
own image list (ImageList, which ControlNetList's ImageIndex points into), the foreground
and an optional reference background; GenerateImages' Image2Image and ImageAndMaskList are
not read there.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from api.generate.protocol import CallbackUrlField, GenerateImagesRequest, Image2ImageSpec
from api.protocol_base import SignedRequest, WireModel
from openpik import vocabulary as vocab

MAX_IMAGE_LIST = 8


class RemoveContentsRequest(SignedRequest):
    Action: Literal["RemoveContents"]
    RawImage: str = Field(description="base64, the image to erase from")
    Mask: str = Field(description="base64, white = erase; resized to RawImage when its size differs")
    InvertMask: bool = Field(default=False, description="true: black = erase")
    MaskBlur: vocab.MaskBlur = Field(default=vocab.DEFAULT_MASK_BLUR, description="Gaussian sigma of the mask's edge")
    CallbackUrl: CallbackUrlField = None


class TransparentForegroundSpec(WireModel):
    ImageIndex: int = Field(ge=0, description="index into ImageList of a PNG with alpha")


class GenerateBackgroundsRequest(GenerateImagesRequest):
    Action: Literal["GenerateBackgrounds"]  # type: ignore[assignment]
    unread: ClassVar[frozenset[str]] = frozenset({"Image2Image", "ImageAndMaskList"})
    images_field: ClassVar[str] = "ImageList"

    ImageList: list[str] = Field(default=[], max_length=MAX_IMAGE_LIST)
    TransparentForeground: TransparentForegroundSpec
    BackgroundImage2Image: Image2ImageSpec | None = Field(
        default=None,
        description="a reference background in ImageList: it shows through the foreground's transparent area "
        "and is kept by ReferStrength; its MaskIndex is not read",
    )

    @property
    def image_list(self) -> list[str]:
        return self.ImageList


INPAINTING_REQUESTS = (RemoveContentsRequest, GenerateBackgroundsRequest)
