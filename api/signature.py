"""Verifying request signatures (spec section 2): the gateway's side of openpik.signing.

The signing rules themselves live in openpik.signing, shared with openpik.client.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Callable, Mapping
from typing import Any

from api.errors import (
    MalformedBody,
    MissingPublicKey,
    MissingSignature,
    SignatureMismatch,
    TimestampOutOfWindow,
    UnknownPublicKey,
)
from openpik.signing import SIGNATURE_FIELD, sign

PUBLIC_KEY_FIELD = "PublicKey"
TIMESTAMP_FIELD = "Timestamp"


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
    if not hmac.compare_digest(_expected_signature(body, private_key), signature.encode("utf-8")):
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


def _expected_signature(body: Mapping[str, Any], private_key: str) -> bytes:
    """As bytes: compare_digest refuses str with non-ASCII characters, which a client may send."""
    try:
        return sign(body, private_key).encode("ascii")
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
