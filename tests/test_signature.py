"""The signature contract of spec section 2: test vectors, number formatting, verify() order,
upper-case hex (rule 5) and the floats PICPIK's SDKs spell their own way (rule 6)."""

from __future__ import annotations

import hashlib
import math
import random
import struct

import numpy as np
import pytest

from api.errors import (
    MalformedBody,
    MissingPublicKey,
    MissingSignature,
    SignatureMismatch,
    TimestampOutOfWindow,
    UnknownPublicKey,
)
from api.signature import MAX_CANDIDATES, SDK_FLOAT_RENDERINGS, candidate_bodies, verify
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


def _alternate_case(signature: str) -> str:
    return "".join(char.upper() if index % 2 else char for index, char in enumerate(signature))


@pytest.mark.parametrize("recase", [str.upper, _alternate_case], ids=["upper", "mixed"])
def test_upper_and_mixed_case_hex_match(recase):
    body = _signed()
    recased = recase(body["Signature"])
    assert recased != body["Signature"]
    assert _verify({**body, "Signature": recased}) == PUBLIC


FULLWIDTH_DIGITS = {ord("0") + digit: 0xFF10 + digit for digit in range(10)}  # U+FF10..U+FF19


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s[:-1],
        lambda s: s + "0",
        lambda s: s[:-1] + "g",
        lambda s: s[:-1] + "é",
        lambda s: "É" * 40,
        lambda s: s.upper().translate(FULLWIDTH_DIGITS),
        lambda s: s[:-1] + "\x00",
        lambda s: " " + s[1:],
    ],
    ids=["short", "long", "non-hex", "non-ascii-tail", "non-ascii", "fullwidth-digits", "nul", "space"],
)
def test_a_changed_or_non_hex_signature_mismatches(change):
    body = _signed()
    with pytest.raises(SignatureMismatch, match="Signature"):
        _verify({**body, "Signature": change(body["Signature"])})


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


# Rule 6. Reference renderings written from each language's documentation, independently of
# api.signature: numpy's Dragon4 gives the shortest round-trip digits; each SDK's own rule
# picks between positional and exponent notation and pads the exponent.


def _exponent_of(value: float) -> int:
    return int(np.format_float_scientific(value, unique=True, trim="-").split("e")[1])


def _positional_or_exponent(value: float, positional_from: int, exponent_from: int, exponent_digits: int) -> str:
    if positional_from <= _exponent_of(value) < exponent_from:
        return np.format_float_positional(value, unique=True, trim="-")
    return np.format_float_scientific(value, unique=True, trim="-", exp_digits=exponent_digits)


def python_sdk(value: float) -> str:
    """ucloud-sdk-python3's encode_value for a fractional float: str(v)."""
    return str(value)


def go_sdk(value: float) -> str:
    """fmt's %v: strconv 'g' with the shortest digits, exponent below 1e-4 and from 1e6."""
    return _positional_or_exponent(value, -4, 6, exponent_digits=2)


def javascript_sdk(value: float) -> str:
    """ECMAScript Number::toString (String(v)): exponent below 1e-6 and from 1e21, unpadded."""
    return _positional_or_exponent(value, -6, 21, exponent_digits=1)


SDKS = {"python": python_sdk, "go": go_sdk, "javascript": javascript_sdk}


def sdk_string_to_sign(body, private_key, render_fraction):
    """The UCloud scheme as an SDK computes it, fractional floats spelled by ``render_fraction``."""

    def spelled(value):
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return str(int(value)) if value.is_integer() else render_fraction(value)
        if isinstance(value, (int, str)):
            return str(value)
        if isinstance(value, list):
            return "".join(spelled(item) for item in value)
        return "".join(key + spelled(value[key]) for key in sorted(value))

    return spelled({key: value for key, value in body.items() if key != "Signature"}) + private_key


def sdk_signed(body, render_fraction):
    string = sdk_string_to_sign(body, PRIVATE, render_fraction)
    return {**body, "Signature": hashlib.sha1(string.encode("utf-8")).hexdigest()}


@pytest.mark.parametrize(
    ("value", "python", "go", "javascript"),
    [
        (0.00005, "5e-05", "5e-05", "0.00005"),
        (1e-7, "1e-07", "1e-07", "1e-7"),
        (-2.5e-8, "-2.5e-08", "-2.5e-08", "-2.5e-8"),
        (1.5e-10, "1.5e-10", "1.5e-10", "1.5e-10"),
        (0.0001, "0.0001", "0.0001", "0.0001"),
        (0.000012, "1.2e-05", "1.2e-05", "0.000012"),
        (1234567.5, "1234567.5", "1.2345675e+06", "1234567.5"),
        (999999.5, "999999.5", "999999.5", "999999.5"),
        (1700000000.5, "1700000000.5", "1.7000000005e+09", "1700000000.5"),
        (1e-100, "1e-100", "1e-100", "1e-100"),
    ],
)
def test_sdk_renderings_of_known_values(value, python, go, javascript):
    """The references agree with what each runtime prints (JS checked against node, Go against strconv's source)."""
    assert (python_sdk(value), go_sdk(value), javascript_sdk(value)) == (python, go, javascript)
    assert {name: render(value) for name, render in SDK_FLOAT_RENDERINGS.items()} == {
        "python": python,
        "go": go,
        "javascript": javascript,
    }


def _fractional_floats(rng: random.Random, count: int) -> list[float]:
    """Fractional floats across the whole exponent range, tiny and large alike."""
    values = [struct.unpack("<d", rng.randbytes(8))[0] for _ in range(count)]
    values += [rng.uniform(1, 10) * 10.0 ** rng.randint(-330, 15) for _ in range(count)]
    return [value for value in values if math.isfinite(value) and not value.is_integer() and value != 0]


def test_the_table_spells_every_fractional_float_as_the_references_do():
    for value in _fractional_floats(random.Random(6), 3000):
        for name, render in SDKS.items():
            assert SDK_FLOAT_RENDERINGS[name](value) == render(value), (name, value)


FLOAT_BODIES = {
    "tiny ReferenceScale": {"Action": "GenerateImg2Img", "PublicKey": PUBLIC, "ReferenceScale": 0.00005},
    "ReferenceScale 1e-7": {"Action": "GenerateImg2Img", "PublicKey": PUBLIC, "ReferenceScale": 1e-7},
    "nested in ControlNetParams": {
        "Action": "GenerateImg2Img",
        "PublicKey": PUBLIC,
        "CfgScale": 7.5,
        "Steps": 20.0,
        "ControlNetParams": [
            {"ControlPreSetId": "0", "ControlWeight": 1e-7, "ControlNetImg": "aGk="},
            {"ControlPreSetId": 2, "ControlWeight": -2.5e-8, "Extra": {"Scale": 0.000012}},
        ],
        "SubModelParams": [{"SubModelId": 3, "ControlWeight": 0.00005}],
        "request_uuid": "u",
    },
    "fractional Timestamp": {"Action": "ListModels", "PublicKey": PUBLIC, "Timestamp": NOW + 0.5},
}


@pytest.mark.parametrize("sdk", SDKS)
@pytest.mark.parametrize("body", FLOAT_BODIES.values(), ids=FLOAT_BODIES)
def test_a_body_signed_as_each_sdk_does_is_accepted(body, sdk):
    assert _verify(sdk_signed(body, SDKS[sdk])) == PUBLIC


def test_the_sdk_strings_really_differ_from_the_canonical_one():
    """Otherwise the test above would prove nothing about rule 6."""
    body = FLOAT_BODIES["nested in ControlNetParams"]
    strings = {name: sdk_string_to_sign(body, PRIVATE, render) for name, render in SDKS.items()}
    assert len({string_to_sign(body, PRIVATE), *strings.values()}) == 3
    assert strings["python"] == strings["go"]
    assert "ControlWeight1e-07" in strings["python"] and "ControlWeight1e-7" in strings["javascript"]
    timestamp = FLOAT_BODIES["fractional Timestamp"]
    assert sdk_string_to_sign(timestamp, PRIVATE, go_sdk) != string_to_sign(timestamp, PRIVATE)


def test_an_sdk_signature_in_upper_case_is_accepted():
    body = sdk_signed(FLOAT_BODIES["ReferenceScale 1e-7"], javascript_sdk)
    assert _verify({**body, "Signature": body["Signature"].upper()}) == PUBLIC


WRONG_RENDERINGS = {
    "unpadded exponent where no SDK writes one": lambda v: str(v).replace("e-05", "e-5"),
    "six-digit %e": lambda v: f"{v:e}",
    "upper-case E": lambda v: str(v).upper(),
    "seventeen digits": lambda v: f"{v:.17g}",
    "trailing zero": lambda v: np.format_float_positional(v, unique=True, trim="-") + "0",
}


@pytest.mark.parametrize("render", WRONG_RENDERINGS.values(), ids=WRONG_RENDERINGS)
def test_a_signature_over_a_wrong_rendering_mismatches(render):
    body = FLOAT_BODIES["tiny ReferenceScale"]
    assert render(0.00005) not in {sdk(0.00005) for sdk in SDKS.values()} | {"0.00005"}
    with pytest.raises(SignatureMismatch, match="Signature"):
        _verify(sdk_signed(body, render))


def test_renderings_of_two_sdks_mixed_in_one_body_mismatch():
    """Each SDK spells all its floats one way; candidates are whole bodies, not per-float choices."""
    body = {"Action": "ListModels", "PublicKey": PUBLIC, "A": 1e-7, "B": 2e-7}

    def mixed(value):
        return python_sdk(value) if value == 1e-7 else javascript_sdk(value)

    with pytest.raises(SignatureMismatch):
        _verify(sdk_signed(body, mixed))


@pytest.mark.parametrize("body", [vector[0] for vector in VECTORS] + [{"A": [1, {"B": 2.0, "C": 0.5}], "D": 1e21}])
def test_a_body_without_differently_spelled_floats_has_only_the_canonical_candidate(body):
    assert candidate_bodies(body) == [body]


@pytest.mark.parametrize(
    "spelling",
    [str, go_sdk, javascript_sdk],
    ids=["plain-python-str", "go-%v", "js-String"],
)
def test_integral_floats_are_integer_digits_in_every_rendering(spelling):
    """42.0, 1e6 and 1e21 sign as 42, 1000000 and 1000000000000000000000 only (README).

    ucloud-sdk-python3 writes str(int(v)) for them, as rule 4 does; plain str(v) gives
    42.0, Go's %v 1e+06 and 1e+21, JavaScript's String 1e+21: those are refused.
    """
    body = {"Action": "ListModels", "PublicKey": PUBLIC, "CfgScale": 42.0, "Big": 1e6, "Huge": 1e21}
    assert _verify({**body, "Signature": sign(body, PRIVATE)}) == PUBLIC
    written = "".join(key + spelling(body[key]) for key in ("Big", "CfgScale", "Huge"))
    string = "ActionListModels" + written + "PublicKey" + PUBLIC + PRIVATE
    assert string != string_to_sign(body, PRIVATE)
    with pytest.raises(SignatureMismatch):
        _verify({**body, "Signature": hashlib.sha1(string.encode("utf-8")).hexdigest()})


def test_candidates_never_exceed_three_and_are_distinct():
    rng = random.Random(66)
    pool = [*_fractional_floats(rng, 200), 42.0, 1e21, 0.5, 7, True, None, "x"]
    for _ in range(500):
        body = {f"F{index}": rng.choice(pool) for index in range(rng.randint(0, 6))}
        body["Nested"] = [{"W": rng.choice(pool)} for _ in range(rng.randint(0, 3))]
        candidates = candidate_bodies(body)
        strings = [string_to_sign(candidate, PRIVATE) for candidate in candidates]
        assert candidates[0] is body and 1 <= len(candidates) <= MAX_CANDIDATES == 3
        assert len(set(strings)) == len(strings)


def test_when_four_spellings_differ_the_first_renderings_of_the_table_win():
    """Tiny (JS differs from Python) and large (Go differs from Python) fractions in one body."""
    body = {"Action": "ListModels", "PublicKey": PUBLIC, "ControlWeight": 1e-7, "Timestamp": NOW + 0.5}
    spellings = {sdk_string_to_sign(body, PRIVATE, render) for render in SDKS.values()}
    assert len(spellings | {string_to_sign(body, PRIVATE)}) == 4
    assert list(SDK_FLOAT_RENDERINGS)[:2] == ["python", "javascript"]
    assert len(candidate_bodies(body)) == 3
    for accepted in (python_sdk, javascript_sdk):
        assert _verify(sdk_signed(body, accepted)) == PUBLIC
    with pytest.raises(SignatureMismatch):
        _verify(sdk_signed(body, go_sdk))
