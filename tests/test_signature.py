"""The signature contract of spec section 2: test vectors, number formatting, verify() order."""

from __future__ import annotations

import math
import random
import struct

import pytest

from api.errors import (
    MalformedBody,
    MissingPublicKey,
    MissingSignature,
    SignatureMismatch,
    TimestampOutOfWindow,
    UnknownPublicKey,
)
from api.signature import verify
from openpik.signing import format_float, serialize, sign, string_to_sign

VECTORS = [
    (
        {"Action": "ListModels", "PublicKey": "abcdefg"},
        "123456",
        "ActionListModelsPublicKeyabcdefg123456",
        "4a20bc1141494035f6aaaad13224c94c5a8bc3a5",
    ),
    (
        {"Action": "StartPicpikApp", "PublicKey": "abcdefg", "AppId": "your_app_id"},
        "123456",
        "ActionStartPicpikAppAppIdyour_app_idPublicKeyabcdefg123456",
        "c5e65ad1936ff695436917bf807d2281db33e7a3",
    ),
    (
        {
            "Action": "ListTasksDetails",
            "PublicKey": "abcdefg",
            "TaskUIDList": ["ckti5nf2h4keq8mr9n00"],
            "request_uuid": "ebe3bd1a-2fb6-4a85-a1bd-a5d556bf0f50",
        },
        "123456",
        "ActionListTasksDetailsPublicKeyabcdefgTaskUIDListckti5nf2h4keq8mr9n00"
        "request_uuidebe3bd1a-2fb6-4a85-a1bd-a5d556bf0f50123456",
        "3e4b285590e95738563c7172ad6bc258d202eb10",
    ),
    (
        {
            "Action": "Test",
            "PublicKey": "abcdefg",
            "EmptyList": [],
            "EmptyStr": "",
            "Null": None,
            "Map": {"b": 1, "a": True},
            "Half": 1.5,
            "FortyTwo": 42.0,
            "Neg": -1,
            "request_uuid": "u",
        },
        "123456",
        "ActionTestEmptyListEmptyStrFortyTwo42Half1.5Mapatrueb1Neg-1NullPublicKeyabcdefgrequest_uuidu123456",
        "8ba36ad2aa1620dad0b29dfcd2769986b32f8fe4",
    ),
    (
        {
            "Action": "DescribeUHostInstance",
            "Region": "cn-bj2",
            "Limit": 10,
            "PublicKey": "someone@example.com1296235120854146120",
        },
        "46f09bb9fab4f12dfc160dae12273d5332b5debe",
        "ActionDescribeUHostInstanceLimit10PublicKeysomeone@example.com1296235120854146120"
        "Regioncn-bj246f09bb9fab4f12dfc160dae12273d5332b5debe",
        "4201919d267504385deb93af19e0197870fed36b",
    ),
]


@pytest.mark.parametrize(("body", "private_key", "expected_string", "expected_signature"), VECTORS)
def test_vectors(body, private_key, expected_string, expected_signature):
    assert string_to_sign(body, private_key) == expected_string
    assert sign(body, private_key) == expected_signature


@pytest.mark.parametrize(("body", "private_key", "expected_string", "expected_signature"), VECTORS)
def test_signature_field_is_left_out(body, private_key, expected_string, expected_signature):
    assert sign({**body, "Signature": "anything"}, private_key) == expected_signature


def test_signature_is_excluded_at_top_level_only():
    assert string_to_sign({"Map": {"Signature": "x"}}, "k") == "MapSignaturexk"


def test_keys_sort_by_code_point_case_sensitive():
    assert string_to_sign({"b": "1", "B": "2", "a": "3", "_": "4", "Z": "5"}, "") == "B2Z5_4a3b1"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (42.0, "42"),
        (-0.0, "0"),
        (1.5e20, "150000000000000000000"),
        (1e16, "10000000000000000"),
        (0.5, "0.5"),
        (7.5, "7.5"),
        (-2.25, "-2.25"),
        (0.1, "0.1"),
        (0.00001, "0.00001"),
        (1e-7, "0.0000001"),
        (1.5e-10, "0.00000000015"),
        (123456.789, "123456.789"),
        (1 / 3, "0.3333333333333333"),
    ],
)
def test_float_formatting(value, expected):
    assert format_float(value) == expected


def test_floats_round_trip_without_scientific_notation():
    rng = random.Random(1234)
    samples = [struct.unpack("<d", rng.randbytes(8))[0] for _ in range(2000)]
    samples += [rng.uniform(-1000, 1000) for _ in range(2000)]
    samples += [5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 2.0**53 + 2, 0.1 + 0.2]
    for value in filter(math.isfinite, samples):
        text = format_float(value)
        assert "e" not in text.lower(), text
        assert float(text) == value, (value, text)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_cannot_be_signed(value):
    with pytest.raises(ValueError):
        format_float(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (None, ""),
        ([1, [2.5, "x"], None], "12.5x"),
        ({"b": [], "a": {}}, "ab"),
    ],
)
def test_serialize_values(value, expected):
    assert serialize(value) == expected


PUBLIC = "abcdefg"
PRIVATE = "123456"
NOW = 1_700_000_000.0
KEYS = {PUBLIC: PRIVATE, "disabled-key": None}


def _signed(**fields):
    body = {"Action": "ListModels", "PublicKey": PUBLIC, **fields}
    return {**body, "Signature": sign(body, PRIVATE)}


def _verify(body, require_timestamp=False, window_s=300):
    return verify(body, KEYS.get, now=NOW, require_timestamp=require_timestamp, window_s=window_s)


def test_verify_returns_public_key():
    assert _verify(_signed()) == PUBLIC


@pytest.mark.parametrize("public_key", [None, "", 42, ["abcdefg"]])
def test_missing_public_key_comes_first(public_key):
    body = {"Action": "ListModels"} if public_key is None else {"Action": "ListModels", "PublicKey": public_key}
    with pytest.raises(MissingPublicKey, match="PublicKey"):
        _verify(body)


@pytest.mark.parametrize("signature", [None, "", 123])
def test_missing_signature(signature):
    body = {"Action": "ListModels", "PublicKey": "nobody"}
    if signature is not None:
        body["Signature"] = signature
    with pytest.raises(MissingSignature, match="Signature"):
        _verify(body)


def test_unknown_public_key_before_mismatch():
    with pytest.raises(UnknownPublicKey, match="PublicKey"):
        _verify({"Action": "ListModels", "PublicKey": "nobody", "Signature": "0" * 40})


def test_disabled_public_key():
    body = {"Action": "ListModels", "PublicKey": "disabled-key"}
    with pytest.raises(UnknownPublicKey):
        _verify({**body, "Signature": sign(body, PRIVATE)})


def test_tampered_body_mismatches():
    body = _signed()
    body["Action"] = "GenerateImages"
    with pytest.raises(SignatureMismatch, match="Signature"):
        _verify(body)


@pytest.mark.parametrize("signature", [lambda s: s.upper(), lambda s: s[:-1], lambda s: s[:-1] + "é"])
def test_only_the_exact_lowercase_signature_matches(signature):
    body = _signed()
    body["Signature"] = signature(body["Signature"])
    with pytest.raises(SignatureMismatch):
        _verify(body)


def test_unsignable_number_is_a_malformed_body():
    body = {"Action": "ListModels", "PublicKey": PUBLIC, "Strength": float("nan"), "Signature": "0" * 40}
    with pytest.raises(MalformedBody, match="nan"):
        _verify(body)


def test_mismatch_comes_before_timestamp():
    body = _signed(Timestamp=0)
    body["Signature"] = "0" * 40
    with pytest.raises(SignatureMismatch):
        _verify(body)


@pytest.mark.parametrize("offset", [-300, 0, 300, 299.5])
def test_timestamp_inside_window(offset):
    assert _verify(_signed(Timestamp=NOW + offset)) == PUBLIC


@pytest.mark.parametrize("offset", [-301, 301, 300.5, -100000])
def test_timestamp_outside_window(offset):
    with pytest.raises(TimestampOutOfWindow, match="Timestamp"):
        _verify(_signed(Timestamp=NOW + offset))


def test_timestamp_as_numeric_string():
    assert _verify(_signed(Timestamp=str(int(NOW) + 10))) == PUBLIC
    with pytest.raises(TimestampOutOfWindow):
        _verify(_signed(Timestamp=str(int(NOW) + 1000)))


@pytest.mark.parametrize("timestamp", ["soon", "", True, None, [1], "nan", 10**400])
def test_timestamp_not_a_number(timestamp):
    with pytest.raises(TimestampOutOfWindow, match="Timestamp"):
        _verify(_signed(Timestamp=timestamp))


def test_timestamp_required_but_missing():
    with pytest.raises(TimestampOutOfWindow, match=r"Timestamp.*required"):
        _verify(_signed(), require_timestamp=True)
    assert _verify(_signed(Timestamp=int(NOW)), require_timestamp=True) == PUBLIC


def test_window_is_configurable():
    with pytest.raises(TimestampOutOfWindow, match="within 10 s"):
        _verify(_signed(Timestamp=NOW + 11), window_s=10)
