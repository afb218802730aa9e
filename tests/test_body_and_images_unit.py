"""Unit tests of the strict body reader, JSON parser and image decoder (api.body, api.images).

A corpus of hostile and broken inputs: each must end as the right 230/400/413 exception
with a message naming the field and the rule, never as another exception type.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import struct
import sys
import time
import zlib

import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.body import parse_json_object, read_body
from api.errors import BodyTooLarge, InvalidParameter, MalformedBody
from api.images import DecodedImage, decode_image
from openpik.images import open_stored_image

FIELD = "ControlNetParams[1].ControlNetImg"
MAX_PIXELS = 4096 * 4096


# --- parse_json_object ------------------------------------------------------------------

BAD_JSON = {
    "not json": (b"{Action: 1}", "not valid JSON"),
    "truncated": (b'{"Action": "GenerateImg2Img"', "not valid JSON"),
    "empty": (b"", "not valid JSON"),
    "trailing garbage": (b'{"a": 1} x', "not valid JSON"),
    "utf-8 bom": (b'\xef\xbb\xbf{"a": 1}', "not valid JSON"),
    "invalid utf-8": (b'{"a": "\xff\xfe"}', "not valid UTF-8"),
    "overlong utf-8": (b'{"a": "\xc0\xaf"}', "not valid UTF-8"),
    "utf-16": ('{"a": 1}'.encode("utf-16"), "not valid UTF-8"),
    "array": (b"[]", "must be a JSON object, not an array"),
    "string": (b'"x"', "must be a JSON object, not a string"),
    "number": (b"1", "must be a JSON object, not a number"),
    "boolean": (b"true", "must be a JSON object, not a boolean"),
    "null": (b"null", "must be a JSON object, not null"),
    "NaN": (b'{"CfgScale": NaN}', "NaN is not a JSON number"),
    "Infinity": (b'{"CfgScale": Infinity}', "Infinity is not a JSON number"),
    "-Infinity": (b'{"CfgScale": -Infinity}', "-Infinity is not a JSON number"),
    "overflow": (b'{"CfgScale": 1e309}', "number 1e309 is out of range"),
    "negative overflow": (b'{"CfgScale": -1e309}', "number -1e309 is out of range"),
    "duplicate key": (b'{"Seed": 1, "Seed": 2}', "duplicate key 'Seed'"),
    "nested duplicate": (
        b'{"ControlNetParams": [{"ModelId": 1, "ModelId": 1}]}',
        "duplicate key 'ModelId'",
    ),
    "huge integer": (b'{"Seed": ' + b"9" * 10**5 + b"}", f"more than {sys.get_int_max_str_digits()}"),
    "deep array": (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 32 levels"),
    "deep object": (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested deeper than 32 levels"),
    "deep unclosed": (b"[" * 100_000, "nested deeper than 32 levels"),
    "lone surrogate": (b'{"PositivePrompts": ["ok", "\\ud800"]}', "PositivePrompts[1]: contains a lone"),
    "lone surrogate key": (b'{"A": {"\\udc00": 1}}', "A: key '\\udc00': contains a lone"),
}


@pytest.mark.parametrize("raw, rule", BAD_JSON.values(), ids=BAD_JSON.keys())
def test_malformed_bodies_are_refused_naming_the_rule(raw, rule):
    started = time.perf_counter()
    with pytest.raises(MalformedBody) as caught:
        parse_json_object(raw)
    assert rule in caught.value.message
    assert time.perf_counter() - started < 2, "hostile input must be refused fast"


def test_errors_are_400_with_retcode_230():
    with pytest.raises(MalformedBody) as caught:
        parse_json_object(b"[]")
    assert (caught.value.retcode, caught.value.http_status) == (230, 400)


def test_valid_object_parses():
    raw = (
        b'{"Action": "GenerateImg2Img", "Seed": -1, "CfgScale": 7.5, "Big": 1e308, '
        b'"Prompts": ["caf\xc3\xa9 \\"[[{{\\" ]]", "\\ud83d\\ude00"], "Nested": {"A": [null, true]}}'
    )
    assert parse_json_object(raw) == {
        "Action": "GenerateImg2Img",
        "Seed": -1,
        "CfgScale": 7.5,
        "Big": 1e308,
        "Prompts": ['café "[[{{" ]]', "\U0001f600"],
        "Nested": {"A": [None, True]},
    }


def test_depth_limit_is_exact_and_ignores_brackets_in_strings():
    """The top-level object is level 1; brackets inside strings (and escaped quotes) do not count."""
    at_limit = b'{"x": ' + b"[" * 30 + b'{"a": "\\"' + b"[{" * 1000 + b'"}' + b"]" * 30 + b"}"
    value = parse_json_object(at_limit)["x"]
    for _ in range(30):
        (value,) = value
    assert value == {"a": '"' + "[{" * 1000}
    with pytest.raises(MalformedBody, match="deeper than 32"):
        parse_json_object(b'{"x": ' + b"[" * 32 + b"]" * 32 + b"}")
    with pytest.raises(MalformedBody, match="deeper than 5"):
        parse_json_object(b'{"a": {"b": {"c": {"d": {"e": {}}}}}}', max_depth=5)


# --- read_body --------------------------------------------------------------------------


def _post(max_bytes: int, content) -> bytes:
    """POST `content` through a one-route Starlette app whose endpoint calls read_body."""

    async def echo(request: Request) -> Response:
        return Response(await read_body(request, max_bytes))

    async def post() -> bytes:
        transport = httpx.ASGITransport(app=Starlette(routes=[Route("/", echo, methods=["POST"])]))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return (await client.post("/", content=content)).content

    return asyncio.run(post())


def test_body_under_and_at_the_cap_is_returned():
    assert _post(10, b"x" * 3) == b"x" * 3
    assert _post(10, b"y" * 10) == b"y" * 10


def test_body_over_the_cap_with_content_length_is_refused():
    with pytest.raises(BodyTooLarge, match="limit of 10 bytes") as caught:
        _post(10, b"x" * 11)
    assert caught.value.http_status == 413


def test_chunked_body_over_the_cap_is_refused():
    async def chunks():
        for _ in range(2):
            yield b"x" * 6

    with pytest.raises(BodyTooLarge, match="limit of 10 bytes"):
        _post(10, chunks())


def _request(headers: list[tuple[bytes, bytes]], receive) -> Request:
    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"", "headers": headers}
    return Request(scope, receive)


def test_declared_length_over_the_cap_is_refused_before_reading():
    async def receive():
        raise AssertionError("the body must not be read")

    request = _request([(b"content-length", b"1000001")], receive)
    with pytest.raises(BodyTooLarge, match="limit of 1000000 bytes"):
        asyncio.run(read_body(request, max_bytes=1_000_000))


def test_lying_content_length_stops_at_the_cap_without_reading_the_rest():
    """The client says 5 bytes and streams without end: refused after about cap bytes."""
    received = []

    async def receive():
        received.append(1)
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

    request = _request([(b"content-length", b"5")], receive)
    with pytest.raises(BodyTooLarge):
        asyncio.run(read_body(request, max_bytes=10_000))
    assert len(received) == 11


def test_unusable_content_length_falls_back_to_the_streaming_cap():
    async def receive():
        return {"type": "http.request", "body": b"abc", "more_body": False}

    request = _request([(b"content-length", "\u00b2".encode("latin-1"))], receive)
    assert asyncio.run(read_body(request, max_bytes=10)) == b"abc"


# --- decode_image -----------------------------------------------------------------------


def _image_bytes(fmt: str, size=(40, 30), **options) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise(size, 50).convert("RGB").save(buffer, fmt, **options)
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR (correct CRC) claiming width x height, a tiny IDAT."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "blue", "green")]
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize("prefix", ["", "data:image/{lower};base64,", "DATA:IMAGE/{fmt};BASE64,"])
def test_valid_images_decode(fmt, prefix):
    data = _image_bytes(fmt)
    decoded = decode_image(prefix.format(lower=fmt.lower(), fmt=fmt) + _b64(data), FIELD, MAX_PIXELS)
    assert decoded == DecodedImage(data=data, format=fmt, width=40, height=30)
    assert open_stored_image(decoded.data).size == (40, 30)


def test_declared_type_is_not_trusted():
    decoded = decode_image("data:image/jpeg;base64," + _b64(_image_bytes("PNG")), FIELD, MAX_PIXELS)
    assert decoded.format == "PNG"


VALID_PNG = _b64(_image_bytes("PNG"))

BAD_IMAGES = {
    "not a string": (None, "must be a base64 string"),
    "empty": ("", "is empty"),
    "empty after prefix": ("data:image/png;base64,", "is empty"),
    "non-ascii": ("iVBORw0KGgo\u00e9", "non-ASCII"),
    "fullwidth letters": ("\uff21\uff21\uff21\uff21", "non-ASCII"),
    "urlsafe alphabet": ("-_-_", "not valid base64"),
    "invalid character": ("QUJD*A==", "not valid base64"),
    "missing padding": ("QQ", "not valid base64"),
    "short padding": ("QQ=", "not valid base64"),
    "excess padding": ("QQ===", "not valid base64"),
    "non-canonical bits": ("QR==", "not canonical base64"),
    "embedded newline": (VALID_PNG[:76] + "\n" + VALID_PNG[76:], "not valid base64"),
    "trailing newline": (VALID_PNG + "\n", "not valid base64"),
    "leading space": (" " + VALID_PNG, "not valid base64"),
    "prefix without base64": ("data:image/png," + VALID_PNG, "not valid base64"),
    "non-image bytes": (_b64(b"hello, this is not an image at all"), "not a PNG, JPEG or WEBP image"),
    "animated gif": (_b64(_animated("GIF")), "not a PNG, JPEG or WEBP image"),
    "single-frame gif": (_b64(_image_bytes("GIF")), "not a PNG, JPEG or WEBP image"),
    "tiff as png": ("data:image/png;base64," + _b64(_image_bytes("TIFF")), "not a PNG, JPEG or WEBP"),
    "eps": (
        _b64(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n"),
        "not a PNG, JPEG or WEBP image",
    ),
    "bmp": (_b64(_image_bytes("BMP")), "not a PNG, JPEG or WEBP image"),
    "animated png": (_b64(_animated("PNG")), "animated image with 3 frames"),
    "animated webp": (_b64(_animated("WEBP")), "animated image with 3 frames"),
    "truncated png": (_b64(_image_bytes("PNG")[:400]), "truncated or corrupt image"),
    "truncated jpeg": (_b64(_image_bytes("JPEG")[:300]), "truncated or corrupt image"),
    "png header only": (_b64(_png_header_only(64, 64)), "truncated or corrupt image"),
    "over our cap": (_b64(_png_header_only(5000, 5000)), "5000x5000 is 25000000 pixels, more than"),
    "over pillow's warning": (_b64(_png_header_only(10_000, 10_000)), "too many pixels"),
    "100000x100000 header": (_b64(_png_header_only(100_000, 100_000)), "too many pixels"),
}


@pytest.mark.parametrize("value, rule", BAD_IMAGES.values(), ids=BAD_IMAGES.keys())
def test_bad_images_are_refused_naming_the_field(value, rule):
    started = time.perf_counter()
    with pytest.raises(InvalidParameter) as caught:
        decode_image(value, FIELD, MAX_PIXELS)
    assert caught.value.message.startswith(f"{FIELD}: ")
    assert rule in caught.value.message
    assert (caught.value.retcode, caught.value.http_status) == (230, 200)
    assert time.perf_counter() - started < 2, "a header alone must be refused without decoding"


@pytest.mark.parametrize("size", [(40, 30), (32, 32)])
def test_pixel_cap_is_ours_not_pillows(size):
    """40x30 = 1200 and 32x32 = 1024 pixels: over a cap of 1000, within 2x of it (where
    Pillow's own check would only warn), far under Pillow's global limit."""
    pillow_limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(InvalidParameter, match=rf"^{re.escape(FIELD)}: .* more than 1000$"):
        decode_image(_b64(_image_bytes("PNG", size=size)), FIELD, max_pixels=1000)
    assert decode_image(_b64(_image_bytes("PNG", size=size)), FIELD, max_pixels=1200).width == size[0]
    assert pillow_limit == Image.MAX_IMAGE_PIXELS
