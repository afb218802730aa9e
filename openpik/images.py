"""The image formats OpenPik accepts from clients, and how an accepted image is read.

The gateway and the worker read a client's bytes with the same two functions: the gateway
to check them (api/images.py), the worker to use them (``open_stored_image``). So an image
the gateway accepted cannot fail, or look different, in the worker.

Animated GIF, PNG (APNG) and WEBP files are accepted and their first frame is used: that is
the picture a client sending one means (what a viewer that does not animate shows, what a
thumbnail shows), and refusing a reaction GIF or an animated sticker would be strict in what
we accept for no gain. Only frame 0 is ever decoded, so later frames cost nothing.

The EXIF orientation is applied before anything else: a phone stores a portrait photo as
landscape pixels plus an orientation tag, and every viewer shows it upright; the worker must
too. It is applied when reading, not by re-encoding at the gateway, so the gateway stores the
client's bytes as sent and no image pays for an encode.
"""

from __future__ import annotations

import io

from PIL import Image, ImageFile, ImageOps

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")
"""Pillow format names: the only parsers a client's bytes reach, whatever a data: URL claims."""

ALLOWED_FORMATS_TEXT = ", ".join(ALLOWED_FORMATS[:-1]) + " or " + ALLOWED_FORMATS[-1]
"""For messages: "PNG, JPEG, WEBP, BMP or GIF"."""


def open_image(data: bytes) -> ImageFile.ImageFile:
    """Identify `data` among ALLOWED_FORMATS and read its header only: no pixel is decoded yet."""
    return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)


def load_upright(image: Image.Image) -> None:
    """Decode the first frame of `image` and turn it as its EXIF orientation says, in place.

    In place, so an image that is already upright (most) is not copied; one that is not is
    transposed once (no resampling, exact pixels).
    """
    ImageOps.exif_transpose(image, in_place=True)


def open_stored_image(data: bytes) -> Image.Image:
    """The upright first frame of bytes the gateway accepted, fully decoded (worker side)."""
    image = open_image(data)
    load_upright(image)
    return image


def has_alpha(image: Image.Image) -> bool:
    """Whether the image carries transparency: an alpha channel or a transparent palette entry or colour."""
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
