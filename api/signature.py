"""Verifying request signatures (spec section 2): the gateway's side of openpik.signing.

The signing rules themselves live in openpik.signing, shared with openpik.client. What
this module adds is what a liberal verifier accepts on top (spec section 0): the hex in
either case (rule 5), and the strings PICPIK's own SDKs sign when they spell a fractional
float their way instead of rule 4's way (rule 6).
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from functools import partial
from typing import Any

from api.errors import (
    MalformedBody,
    MissingPublicKey,
    MissingSignature,
    SignatureMismatch,
    TimestampOutOfWindow,
    UnknownPublicKey,
)
from openpik.signing import SIGNATURE_FIELD, format_float, sign

PUBLIC_KEY_FIELD = "PublicKey"
TIMESTAMP_FIELD = "Timestamp"

# Each candidate costs one SHA1 over the whole body, base64 images included.
MAX_CANDIDATES = 3

FloatRendering = Callable[[float], str]


def _sdk_float(value: float, positional: range, exponent_digits: int) -> str:
    """Shortest round-trip digits, positional when the decimal exponent is in ``positional``.

    Outside it, ``d.ddde±XX`` with the exponent zero-padded to ``exponent_digits``: the one
    shape behind Python's repr, Go's %g and ECMAScript's Number::toString, which differ only
    in where they switch and how they pad.
    """
    number = Decimal(repr(value))
    if number.adjusted() in positional:
        return format_float(value)
    mantissa, exponent = format(number, "e").split("e")
    return f"{mantissa}e{int(exponent):+0{exponent_digits + 1}d}"


# How PICPIK's SDKs spell a fractional float in the string to sign (spec rule 6). Integral
# floats stay integer digits in every rendering (_respelled leaves them to rule 4): the
# Python SDK writes str(int(v)) for them, and Go's and JavaScript's own JSON encoders send
# most of them as integer text, which the gateway cannot tell from an int anyway.
# When the body needs more than MAX_CANDIDATES strings, the first renderings here win.
SDK_FLOAT_RENDERINGS: Mapping[str, FloatRendering] = {
    # Python SDK, str(v) (repr): 5e-05, 1e-07; exponent below 1e-4 (and from 1e16, where
    # no float is fractional).
    "python": partial(_sdk_float, positional=range(-4, 16), exponent_digits=2),
    # JavaScript, String(v): 1e-7, 1.5e-10; exponent below 1e-6 (and from 1e21).
    "javascript": partial(_sdk_float, positional=range(-6, 21), exponent_digits=1),
    # Go, fmt's %v = strconv.FormatFloat(v, 'g', -1, 64): like Python below 1e-4, but also
    # from 1e6 (1234567.5 -> 1.2345675e+06), since shortest %g switches at exponent 6.
    "go": partial(_sdk_float, positional=range(-4, 6), exponent_digits=2),
}


def candidate_bodies(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The body as rule 4 signs it, then as each SDK rendering spells it, if differently.

    A respelled body carries each fractional float as the text that SDK signs for it; a
    string serialises as itself, so openpik.signing.sign gives that SDK's signature. Two
    renderings that spell every fractional float of the body alike are one candidate, so a
    body without fractional floats has only the canonical one; never more than
    MAX_CANDIDATES. ValueError for a number that rule 4 cannot sign (NaN, infinity).
    """
    # Two respelled bodies differ exactly where their spellings of the fractional floats do, so
    # the spellings are compared, and a body is respelled only when it is a new candidate.
    fractions = list(_fractional_floats(body))
    spellings = [[format_float(value) for value in fractions]]
    candidates = [body]
    for render in SDK_FLOAT_RENDERINGS.values():
        spelled = [render(value) for value in fractions]
        if spelled in spellings:
            continue
        if len(candidates) == MAX_CANDIDATES:
            break
        spellings.append(spelled)
        candidates.append(_respelled(body, render))
    return candidates


def _fractional_floats(value: Any) -> Iterator[float]:
    """Every fractional float in ``value``, at any depth, in the order _respelled meets them."""
    if isinstance(value, float) and not value.is_integer():
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _fractional_floats(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _fractional_floats(item)


def _respelled(value: Any, render: FloatRendering) -> Any:
    """``value`` with every fractional float, at any depth, replaced by ``render``'s text."""
    if isinstance(value, float) and not value.is_integer():
        return render(value)
    if isinstance(value, Mapping):
        return {key: _respelled(item, render) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_respelled(item, render) for item in value]
    return value


def verify(
    body: Mapping[str, Any],
    lookup_private_key: Callable[[str], str | None],
    now: float,
    require_timestamp: bool,
    window_s: int,
) -> str:
    """Authenticate a request body and return its PublicKey.

    The checks run in a fixed order so a client always gets the RetCode of its first
    problem; the Timestamp is checked only once the signature proves it was not altered.
    """
    public_key = _public_key(body)
    signature = _signature(body)
    private_key = lookup_private_key(public_key)
    if private_key is None:
        raise UnknownPublicKey(f"{PUBLIC_KEY_FIELD} is unknown or disabled")
    given = _normalised(signature)
    if not any(hmac.compare_digest(expected, given) for expected in _expected(body, private_key)):
        raise SignatureMismatch(f"{SIGNATURE_FIELD} does not match the request body")
    _check_timestamp(body, now, require_timestamp, window_s)
    return public_key


def _public_key(body: Mapping[str, Any]) -> str:
    public_key = body.get(PUBLIC_KEY_FIELD)
    if not isinstance(public_key, str) or not public_key:
        raise MissingPublicKey(f"{PUBLIC_KEY_FIELD} is required and must be a non-empty string")
    return public_key


def _signature(body: Mapping[str, Any]) -> str:
    signature = body.get(SIGNATURE_FIELD)
    if not isinstance(signature, str) or not signature:
        raise MissingSignature(f"{SIGNATURE_FIELD} is required and must be a non-empty string")
    return signature


def _normalised(signature: str) -> bytes:
    """Lower-case ASCII bytes: rule 5 accepts upper-case hex.

    compare_digest refuses str with non-ASCII characters, which a client may send; those
    become an empty digest, which no 40-character candidate equals.
    """
    return signature.lower().encode("ascii") if signature.isascii() else b""


def _expected(body: Mapping[str, Any], private_key: str) -> Iterator[bytes]:
    """Each candidate's signature, lazily: the canonical one, which most clients send, first; the
    SDK respellings are worked out only when it does not match."""
    try:
        yield sign(body, private_key).encode("ascii")
        for candidate in candidate_bodies(body)[1:]:
            yield sign(candidate, private_key).encode("ascii")
    except ValueError as exc:
        raise MalformedBody(f"the body cannot be signed: {exc}") from exc


def _check_timestamp(body: Mapping[str, Any], now: float, required: bool, window_s: int) -> None:
    """An optional signed Timestamp bounds how long a captured request can be replayed."""
    if TIMESTAMP_FIELD not in body:
        if required:
            raise TimestampOutOfWindow(f"{TIMESTAMP_FIELD} (unix seconds) is required")
        return
    timestamp = _parse_timestamp(body[TIMESTAMP_FIELD])
    if abs(now - timestamp) > window_s:
        raise TimestampOutOfWindow(f"{TIMESTAMP_FIELD} must be within {window_s} s of the server time ({int(now)})")


def _parse_timestamp(value: Any) -> float:
    """Unix seconds as a JSON number or a numeric string; anything else is out of any window."""
    invalid = TimestampOutOfWindow(f"{TIMESTAMP_FIELD} must be unix seconds, a number or a numeric string")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise invalid
    try:
        timestamp = float(value)
    except (ValueError, OverflowError):
        raise invalid from None
    if not math.isfinite(timestamp):
        raise invalid
    return timestamp
