"""Request signatures: PICPIK's (UCloud's) scheme applied to the JSON body (spec section 2).

Clients written against PICPIK compute the signature themselves, so the string to sign
must match theirs byte for byte; the formatting rules below are the contract, not taste.
They live in the light package so the gateway (which verifies) and openpik.client (which
signs) share one implementation; the playground's JavaScript port is tested against it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

SIGNATURE_FIELD = "Signature"


def string_to_sign(body: Mapping[str, Any], private_key: str) -> str:
    """Every top-level field but Signature, sorted and concatenated, then the PrivateKey."""
    fields = {key: value for key, value in body.items() if key != SIGNATURE_FIELD}
    return _serialize_mapping(fields) + private_key


def sign(body: Mapping[str, Any], private_key: str) -> str:
    """The signature a client must send: SHA1 of the string to sign, lowercase hex."""
    return hashlib.sha1(string_to_sign(body, private_key).encode("utf-8")).hexdigest()


def serialize(value: Any) -> str:
    """One JSON value as it appears in the string to sign."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # before int: bool is a subclass of int
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, (list, tuple)):
        return "".join(serialize(item) for item in value)
    if isinstance(value, Mapping):
        return _serialize_mapping(value)
    raise TypeError(f"cannot sign a value of type {type(value).__name__}")


def format_float(value: float) -> str:
    """Integral values as integer digits, others as the shortest round-trip decimal.

    repr() gives the shortest digits that read back to the same float, but switches to
    scientific notation (1e-07); Decimal re-renders those exact digits positionally.
    """
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a JSON number")
    if value.is_integer():
        return str(int(value))
    shortest = repr(value)
    return shortest if "e" not in shortest else format(Decimal(shortest), "f")


def _serialize_mapping(mapping: Mapping[str, Any]) -> str:
    """Keys in code-point order (Python's str ordering), each followed by its value."""
    return "".join(key + serialize(mapping[key]) for key in sorted(mapping))
