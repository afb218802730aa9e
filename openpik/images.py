"""The image formats OpenPik accepts from clients, and re-opening stored inputs (worker side)."""

from __future__ import annotations

import io

from PIL import Image

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")


def open_stored_image(data: bytes) -> Image.Image:
    """Re-open bytes the gateway accepted, with the same allow-list, fully decoded."""
    image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    image.load()
    return image
