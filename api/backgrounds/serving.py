"""Translation of RemoveBackground and RemoveBackgroundsInBatch into a BackgroundJob, once.

Every image is decoded here (so a Box can be checked against the image's size) and the
remover resolved from the catalog; the Submission leaves for api.generate.submission like a
generate action's, for the remover's queue group.
"""

from __future__ import annotations

from api.backgrounds.protocol import RemoveBackgroundRequest, RemoveBackgroundsInBatchRequest
from api.errors import InvalidParameter, UnsupportedAction
from api.generate.serving import Submission, callback_url
from api.images import DecodedImage, decode_image
from models_registry.catalog import BackgroundRemover, Catalog
from openpik.job import BackgroundJob, Box, RemoverRef
from openpik.routing import REMOVE_BACKGROUND_TASK, queue_name
from openpik.settings import Settings

RemovalRequest = RemoveBackgroundRequest | RemoveBackgroundsInBatchRequest


def translate_remove_background(
    request: RemoveBackgroundRequest, catalog: Catalog, owner: str, settings: Settings
) -> Submission:
    remover = _remover(catalog)
    image = decode_image(request.RawImage, "RawImage", settings.max_image_pixels)
    return _submission(request, remover, [image], _box(request.Box, image))


def translate_batch(
    request: RemoveBackgroundsInBatchRequest, catalog: Catalog, owner: str, settings: Settings
) -> Submission:
    remover = _remover(catalog)
    images = [
        decode_image(value, f"RawImages[{i}]", settings.max_image_pixels) for i, value in enumerate(request.RawImages)
    ]
    return _submission(request, remover, images, None)


def _submission(
    request: RemovalRequest, remover: BackgroundRemover, images: list[DecodedImage], box: Box | None
) -> Submission:
    keys = [f"image{i}" for i in range(len(images))]
    job = BackgroundJob(
        remover=RemoverRef(remover_id=remover.id, path=str(remover.path)),
        images=tuple(keys),
        box=box,
        erode_size=request.ErodeSize,
        foreground_threshold=request.ForegroundThreshold,
        background_threshold=request.BackgroundThreshold,
        hair_optimization=request.HairOptimization,
        only_mask=request.OnlyMask,
    )
    return Submission(
        job=job,
        queue=queue_name(remover.group),
        images={key: image.data for key, image in zip(keys, images, strict=True)},
        task_name=REMOVE_BACKGROUND_TASK,
        callback_url=callback_url(request.CallbackUrl),
    )


def _remover(catalog: Catalog) -> BackgroundRemover:
    remover = catalog.background_remover
    if remover is None:
        raise UnsupportedAction("this server has no background remover installed (catalog background_removers)")
    return remover


def _box(box: list[int] | None, image: DecodedImage) -> Box | None:
    """The Box (ordered by the wire model) within the image: 0 <= x1 < x2 <= width, likewise y."""
    if box is None:
        return None
    x1, y1, x2, y2 = box
    if x1 < 0 or y1 < 0 or x2 > image.width or y2 > image.height:
        raise InvalidParameter(
            f"Box: {box} reaches outside the {image.width}x{image.height} image "
            f"(0 <= x1 < x2 <= {image.width}, 0 <= y1 < y2 <= {image.height})"
        )
    return x1, y1, x2, y2
