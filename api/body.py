"""Reading and parsing the request body, strictly, before anything else looks at it.

The size cap is enforced while the bytes arrive (a client can lie in Content-Length or
send chunked), and the JSON parser refuses everything RFC 8259 does not define or that
Python would silently accept with a surprising meaning: NaN/Infinity, numbers that
overflow to infinity, duplicate keys (which one wins?), lone surrogate escapes (they
break UTF-8 encoding later, in Redis or the tokenizer), nesting that would exhaust the
recursion limit. Every refusal is a MalformedBody or BodyTooLarge, never a 5xx.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

from starlette.requests import Request

from api.errors import BodyTooLarge, MalformedBody

# Valid UTF-8 holds no surrogates, so a lone one can only come from a \uD800-\uDFFF escape: a body
# without such an escape needs no walk over its strings (a "\\u" text is a harmless false alarm).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, refused with BodyTooLarge as soon as it is known to exceed max_bytes.

    A Content-Length over the cap is refused before reading a byte; the running total is
    checked on every chunk because the header may be absent (chunked) or wrong.
    """
    declared = _declared_length(request)
    if declared is not None and declared > max_bytes:
        raise _too_large(max_bytes)
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _declared_length(request: Request) -> int | None:
    """Content-Length as an int, or None when absent or not a plain decimal number.

    An unusable header is not an error here: the streaming check still bounds the body.
    """
    value = request.headers.get("content-length", "")
    return int(value) if value.isascii() and value.isdigit() else None


def _too_large(max_bytes: int) -> BodyTooLarge:
    return BodyTooLarge(f"request body: larger than the limit of {max_bytes} bytes")


def parse_json_object(raw: bytes, max_depth: int = 32) -> dict[str, Any]:
    """The body as a dict, or MalformedBody naming the rule it breaks."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"request body: not valid UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as exc:
        raise MalformedBody(f"request body: not valid JSON ({exc})") from None
    except ValueError:
        limit = sys.get_int_max_str_digits()
        raise MalformedBody(f"request body: an integer has more than {limit} digits") from None
    except RecursionError:
        raise _too_deep(max_depth) from None
    _check_depth(value, max_depth)
    if not isinstance(value, dict):
        raise MalformedBody(f"request body: must be a JSON object, not {_json_type(value)}")
    if _SURROGATE_ESCAPE.search(raw):
        _check_strings(value, "")
    return value


def _check_depth(value: Any, max_depth: int) -> None:
    """Refuse parsed JSON nested deeper than max_depth (the top level is level 1).

    json.loads itself stops, with RecursionError, at the interpreter's recursion limit (about a
    thousand levels), so any depth it returns is walked here level by level, without recursion:
    a typical body has a handful of containers, so this costs a few microseconds, less than a scan
    of the raw bytes would.
    """
    level = [value] if isinstance(value, (dict, list)) else []
    for _ in range(max_depth):
        level = [
            child
            for container in level
            for child in (container.values() if isinstance(container, dict) else container)
            if isinstance(child, (dict, list))
        ]
        if not level:
            return
    raise _too_deep(max_depth)


def _too_deep(max_depth: int) -> MalformedBody:
    return MalformedBody(f"request body: JSON nested deeper than {max_depth} levels")


def _reject_constant(name: str) -> None:
    """json.loads calls this for NaN, Infinity and -Infinity, which JSON does not define."""
    raise MalformedBody(f"request body: {name} is not a JSON number")


def _finite_float(literal: str) -> float:
    """A float, refusing literals such as 1e309 that Python would turn into infinity."""
    value = float(literal)
    if not math.isfinite(value):
        raise MalformedBody(f"request body: number {literal[:40]} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A dict from an object's pairs, refusing a key that appears twice."""
    value: dict[str, Any] = {}
    for key, item in pairs:
        if key in value:
            raise MalformedBody(f"request body: duplicate key {key!r} in a JSON object")
        value[key] = item
    return value


def _check_strings(value: Any, path: str) -> None:
    """Refuse lone surrogate escapes ("\\ud800") in keys and strings, naming the field.

    json.loads accepts them, but the resulting str cannot be encoded as UTF-8, which
    would fail later (Redis, the tokenizer) as a server error instead of an InvalidParameter.
    """
    if isinstance(value, str):
        _check_text(value, path)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, f"{path or 'request body'}: key {key!a}")
            _check_strings(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_strings(item, f"{path}[{index}]")


def _check_text(text: str, where: str) -> None:
    """`where` is ASCII-safe: the offending text itself must not reach the response."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedBody(f"{where}: contains a lone UTF-16 surrogate escape") from None


_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), "null")
