"""Client images (ReferenceImage, ControlNetImg, ...): strict base64, then a guarded Pillow.

Pillow can open dozens of formats, some with a long history of parser bugs (EPS runs
Ghostscript, TIFF has many codecs), and a small file can declare billions of pixels.
So only PNG, JPEG and WEBP are tried whatever a data: prefix claims, the pixel count is
checked from the header before any pixel is decoded, animated files are refused, and the
image is decoded completely here so that a truncated or corrupt file is an InvalidParameter naming the
field at the gateway, not a failed task later.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from api.errors import InvalidParameter
from openpik.images import ALLOWED_FORMATS

_DATA_URL_PREFIX = re.compile(r"data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)

# What Pillow raises for files it cannot identify (UnidentifiedImageError is an OSError)
# or cannot decode: truncated data, bad chunks, oversized text chunks, broken headers.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error)


@dataclass(frozen=True)
class DecodedImage:
    """An accepted image: the client's bytes as sent (stored and re-opened by the worker)."""

    data: bytes
    format: str
    width: int
    height: int


def decode_image(value: str, field: str, max_pixels: int) -> DecodedImage:
    """The image in `value`, or InvalidParameter naming `field` and the rule it breaks."""
    data = _decode_base64(value, field)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
                _check_single_frame(image, field)
                _check_pixels(image, field, max_pixels)
                image.load()
                return DecodedImage(data, image.format or "", image.width, image.height)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise InvalidParameter(f"{field}: too many pixels ({exc})") from None
        except UnidentifiedImageError:
            raise InvalidParameter(f"{field}: not a PNG, JPEG or WEBP image") from None
        except _DECODE_ERRORS as exc:
            raise InvalidParameter(f"{field}: truncated or corrupt image ({exc})") from None


def _decode_base64(value: str, field: str) -> bytes:
    """Strict base64: standard alphabet, canonical padding, no whitespace, optional data: URL.

    The re-encoding comparison refuses what b64decode(validate=True) still lets through,
    such as non-zero bits in the last character ("QR==" decodes like "QQ==").
    """
    if not isinstance(value, str):
        raise InvalidParameter(f"{field}: must be a base64 string")
    if not value.isascii():
        raise InvalidParameter(f"{field}: contains non-ASCII characters; base64 expected")
    prefix = _DATA_URL_PREFIX.match(value)
    payload = value[prefix.end() :] if prefix else value
    if not payload:
        raise InvalidParameter(f"{field}: is empty")
    try:
        data = base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise InvalidParameter(f"{field}: not valid base64 ({exc})") from None
    if base64.b64encode(data) != payload.encode("ascii"):
        raise InvalidParameter(f"{field}: not canonical base64 (padding or trailing bits)")
    return data


def _check_single_frame(image: Image.Image, field: str) -> None:
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise InvalidParameter(f"{field}: animated image with {frames} frames; one frame expected")


def _check_pixels(image: Image.Image, field: str, max_pixels: int) -> None:
    """Header dimensions against our cap, before load() allocates and decodes anything."""
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidParameter(f"{field}: {width}x{height} is {width * height} pixels, more than {max_pixels}")
