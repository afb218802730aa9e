"""Translation of RemoveContents and GenerateBackgrounds into a generate Job with a mask, once.

Both run as inpainting on the generate task (worker/masks.py has the rules): RemoveContents
repaints the masked area with the catalog's remove_contents_model and no prompt, at the
input's exact size; GenerateBackgrounds is GenerateImages (api.generate.serving) plus a
foreground whose transparent area is repainted and whose opaque pixels are kept exactly.
Both results have the requested size exactly, not rounded to a multiple of 8: they are
generated at the rounded size and resized before the input is composited back.
"""

from __future__ import annotations

from typing import Any

from api.errors import InvalidParameter, UnsupportedAction
from api.generate.serving import Submission, callback_url, checked_job, images_fields, images_submission
from api.images import DecodedImage, decode_image
from api.inpainting.protocol import GenerateBackgroundsRequest, RemoveContentsRequest
from models_registry.catalog import Catalog, MainModel
from models_registry.resolve import default_vae_ref, model_ref
from openpik import vocabulary as vocab
from openpik.images import has_alpha, open_image
from openpik.job import round_dimension
from openpik.routing import queue_name
from openpik.settings import Settings

RAW_IMAGE, MASK = "raw", "mask"


def translate_remove_contents(
    request: RemoveContentsRequest, catalog: Catalog, owner: str, settings: Settings
) -> Submission:
    model = _remove_contents_model(catalog)
    raw = decode_image(request.RawImage, "RawImage", settings.max_image_pixels)
    mask = decode_image(request.Mask, "Mask", settings.max_image_pixels)
    defaults = model.defaults
    fields = dict(
        model=model_ref(model),
        vae=default_vae_ref(catalog, model),
        sampler=defaults.sampler,
        steps=defaults.steps,
        cfg_scale=defaults.cfg_scale,
        clip_skip=defaults.clip_skip,
        init_image=RAW_IMAGE,
        mask_image=MASK,
        invert_mask=request.InvertMask,
        mask_blur=request.MaskBlur,
        strength=vocab.DEFAULT_PAINT_STRENGTH,
    ) | _exact_size(raw.width, raw.height)
    return Submission(
        job=checked_job(fields, settings),
        queue=queue_name(model.group),
        images={RAW_IMAGE: raw.data, MASK: mask.data},
        callback_url=callback_url(request.CallbackUrl),
    )


def translate_backgrounds(
    request: GenerateBackgroundsRequest, catalog: Catalog, owner: str, settings: Settings
) -> Submission:
    index = request.TransparentForeground.ImageIndex
    foreground = _foreground(request, index, settings)
    model, fields, images = images_fields(
        request, catalog, owner, settings, default_size=(foreground.width, foreground.height)
    )
    key = images.add(f"image{index}", request.ImageList[index], f"ImageList[{index}]")
    fields |= dict(
        init_image=key,
        mask_image=key,
        mask_source="transparency",
        mask_blur=0,
        strength=vocab.DEFAULT_PAINT_STRENGTH,
        init_resize_mode=vocab.DEFAULT_RESIZE_MODE,
    ) | _exact_size(request.Width or foreground.width, request.Height or foreground.height)
    reference = request.BackgroundImage2Image
    if reference is not None:
        listed = _checked_index(request, reference.ImageIndex, "BackgroundImage2Image.ImageIndex")
        fields |= dict(
            background_image=images.add(f"image{listed}", request.ImageList[listed], f"ImageList[{listed}]"),
            strength=1.0 - reference.ReferStrength,
            init_resize_mode=reference.ResizeMode,
        )
    return images_submission(request, model, fields, images, catalog, settings)


def _exact_size(width: int, height: int) -> dict[str, Any]:
    """Job fields for a result of exactly width x height: generated at the size rounded to a
    multiple of 8, resized to the exact one (output_size) when that differs."""
    rounded = (round_dimension(width), round_dimension(height))
    exact = None if rounded == (width, height) else (width, height)
    return dict(width=rounded[0], height=rounded[1], output_size=exact)


def _foreground(request: GenerateBackgroundsRequest, index: int, settings: Settings) -> DecodedImage:
    where = "TransparentForeground.ImageIndex"
    _checked_index(request, index, where)
    decoded = decode_image(request.ImageList[index], f"ImageList[{index}]", settings.max_image_pixels)
    with open_image(decoded.data) as image:
        if not has_alpha(image):
            raise InvalidParameter(
                f"{where}: ImageList[{index}] has no alpha channel; the foreground must be a PNG (or WEBP) "
                "whose transparent area is the background to generate"
            )
    return decoded


def _checked_index(request: GenerateBackgroundsRequest, index: int, where: str) -> int:
    if index >= len(request.ImageList):
        raise InvalidParameter(f"{where}: {index} is outside ImageList (length {len(request.ImageList)})")
    return index


def _remove_contents_model(catalog: Catalog) -> MainModel:
    model = catalog.main_model(catalog.remove_contents_model) if catalog.remove_contents_model else None
    if model is None:
        raise UnsupportedAction("RemoveContents: this server's catalog names no remove_contents_model")
    return model
