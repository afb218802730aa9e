"""Client images (ReferenceImage, ControlNetImg, ...): liberal base64, then a guarded Pillow.

Base64 is read as real clients write it (spec section 0): an optional ``data:`` URL
prefix, whitespace and line breaks anywhere (coreutils ``base64`` wraps at 76 columns,
``openssl base64`` at 64, MIME encoders with CRLF), missing ``=`` padding, the URL-safe
alphabet. What cannot be base64 at all is still refused naming the field: non-ASCII text,
a character of neither alphabet, ``=`` before the end, more padding than belongs, a length
that no byte string encodes, nothing. A URL is refused: we never fetch one.

Pillow can open dozens of formats, some with a long history of parser bugs (EPS runs
Ghostscript, TIFF has many codecs), and a small file can declare billions of pixels.
So only openpik.images.ALLOWED_FORMATS are tried whatever a data: prefix claims, the
pixel count is checked from the header before any pixel is decoded, and the image is read
completely here, exactly as the worker will read it (first frame, EXIF orientation
applied), so that a truncated or corrupt file is an InvalidParameter naming the field at
the gateway, not a failed task later. The bytes stored are the client's, as sent.
"""

from __future__ import annotations

import base64
import binascii
import re
import string
import struct
import warnings
from dataclasses import dataclass

import pybase64
from PIL import Image, UnidentifiedImageError

from api.errors import InvalidParameter
from openpik.images import ALLOWED_FORMATS_TEXT, load_upright, open_image

# RFC 2397: data:[<media type>][;<parameter>=<value>]*;base64, -- any media type, since the
# format is read from the bytes, never from what the prefix claims.
_DATA_URL_PREFIX = re.compile(r"data:(?:[a-z0-9.+-]+/[a-z0-9.+-]+)?(?:;[a-z0-9.+-]+=[^;,]*)*;base64,", re.IGNORECASE)
_DATA_URL = re.compile(r"data:", re.IGNORECASE)
_WEB_URL = re.compile(r"https?://", re.IGNORECASE)
# Removed and checked with bytes.translate, in C: a regex over an image's base64 costs more
# than decoding it.
_WHITESPACE_BYTES = b" \t\r\n\f\v"
# Standard (+/) and URL-safe (-_) alphabets together; "=" only at the end, checked apart.
_BASE64_BYTES = (string.ascii_letters + string.digits + "+/-_").encode()

# What Pillow raises for files it cannot identify (UnidentifiedImageError is an OSError)
# or cannot decode: truncated data, bad chunks, oversized text chunks, broken headers.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error)


@dataclass(frozen=True)
class DecodedImage:
    """An accepted image: the client's bytes as sent, and its upright size."""

    data: bytes
    format: str
    width: int
    height: int


def decode_image(value: str, field: str, max_pixels: int) -> DecodedImage:
    """The image in `value`, or InvalidParameter naming `field` and the rule it breaks."""
    data = decode_base64(value, field)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with open_image(data) as image:
                _check_pixels(image, field, max_pixels)
                load_upright(image)
                return DecodedImage(data, image.format or "", image.width, image.height)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise InvalidParameter(f"{field}: too many pixels ({exc})") from None
        except UnidentifiedImageError:
            raise InvalidParameter(f"{field}: not a {ALLOWED_FORMATS_TEXT} image") from None
        except _DECODE_ERRORS as exc:
            raise InvalidParameter(f"{field}: truncated or corrupt image ({exc})") from None


def decode_base64(value: str, field: str) -> bytes:
    """The bytes of base64 `value` as any common encoder writes it; InvalidParameter naming `field`.

    Non-zero bits in the last character ("QR==" for "QQ==") are ignored as every decoder
    does: they carry no byte, and refusing them would only refuse some hand-made encoders.
    """
    if not isinstance(value, str):
        raise InvalidParameter(f"{field}: must be a base64 string")
    return _strict_base64(value) or liberal_base64(value, field)


def liberal_base64(value: str, field: str) -> bytes:
    """decode_base64's rules, one by one, each with its own message."""
    if not value.isascii():
        raise InvalidParameter(f"{field}: contains non-ASCII characters; base64 expected")
    text = value.encode().translate(None, _WHITESPACE_BYTES).decode()
    if _WEB_URL.match(text):
        raise InvalidParameter(f"{field}: is a URL; URLs are never fetched, send the image itself as base64")
    payload = _strip_data_url(text, field)
    body = payload.rstrip("=")
    if not body:
        raise InvalidParameter(f"{field}: is empty")
    _check_alphabet(body, field)
    if len(body) % 4 == 1:
        raise InvalidParameter(
            f"{field}: not valid base64: {len(body)} characters, 1 more than a multiple of 4, which no "
            "bytes encode to (truncated, or a character too many)"
        )
    missing, padding = -len(body) % 4, len(payload) - len(body)
    if padding > missing:
        raise InvalidParameter(f"{field}: not valid base64: {padding} '=' at the end where at most {missing} belong")
    return base64.b64decode(body + "=" * missing, altchars=b"-_", validate=True)


def _strict_base64(value: str) -> bytes | None:
    """The bytes of ``value`` when it is plain padded standard base64 (what most clients send),
    decoded in one SIMD pass; None for anything else, which decode_base64's rules then read.

    Only a subset of what those rules accept passes here, so the answer never differs from theirs.
    """
    try:
        return pybase64.b64decode(value, validate=True) or None
    except (binascii.Error, ValueError):
        return None


def _strip_data_url(text: str, field: str) -> str:
    """`text` without its data: URL prefix, if it has one; a data: URL must be base64."""
    prefix = _DATA_URL_PREFIX.match(text)
    if prefix:
        return text[prefix.end() :]
    if _DATA_URL.match(text):
        raise InvalidParameter(f"{field}: a data: URL must be base64, as in data:image/png;base64,<data>")
    return text


def _check_alphabet(body: str, field: str) -> None:
    """``body`` is ASCII (checked first), so its first byte outside the alphabet is the culprit."""
    outside = body.encode().translate(None, _BASE64_BYTES)
    if not outside:
        return
    bad = chr(outside[0])
    if bad == "=":
        raise InvalidParameter(f"{field}: not valid base64: '=' before the end of the data")
    raise InvalidParameter(
        f"{field}: not valid base64: character {bad!r} is in neither the standard nor the URL-safe alphabet"
    )


def _check_pixels(image: Image.Image, field: str, max_pixels: int) -> None:
    """Header dimensions against our cap, before load() allocates and decodes anything.

    A transposing EXIF orientation swaps width and height, which keeps the pixel count.
    """
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidParameter(f"{field}: {width}x{height} is {width * height} pixels, more than {max_pixels}")
