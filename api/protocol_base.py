"""What every PICPIK request and response shares: the envelope, and how requests are read.

Requests are read liberally (spec section 0), once, here, for every wire model: clients
written in typed languages send every field of their structs, with null or a zero value
for what they did not set, and fields our documentation never mentions. So ``null`` is
absent; a zero value a field declares with ``DefaultWhen`` is its default; an integral
float is an integer where an integer is expected; a documented field the action does not
read (``unread``) is dropped unvalidated; any other unknown field is kept aside as the
model's extra, and the gateway ignores it (``unknown_fields``: counted, logged, or 230 with
OPENPIK_STRICT_FIELDS). Ranges of values a client really sent are still checked.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, ClassVar, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema


@dataclass(frozen=True)
class DefaultWhen:
    """Annotation marker: these values, as typed clients send them for "not set", mean the default."""

    values: tuple[object, ...]

    def matches(self, value: object) -> bool:
        """0.0 matches 0 too; False never matches 0 (a bool where a number belongs is an error)."""
        return type(value) is not bool and value in self.values


ZERO_IS_DEFAULT = DefaultWhen((0,))
EMPTY_IS_DEFAULT = DefaultWhen(("",))

MODEL_OBJECT_FIELDS = frozenset({"Name", "IsOfficial", "TriggerWordList", "Id", "BaseModel", "Width", "Height"})
"""What ListModels and ListControlNets add to a Model object besides ModelCode and InferenceParams."""

INFERENCE_PARAM_KEYS = frozenset(
    {
        "Steps",
        "Sampler",
        "CFGScale",
        "ClipSkip",
        "LoraWeight",
        "ControlWeight",
        "StartingStep",
        "EndingStep",
        "ControlMode",
        "ResizeMode",
        "Resolution",
    }
)
"""Every InferenceParams key of every parent type: a client reusing one struct for all of them
sends the others' keys too."""


class WireModel(BaseModel):
    """PICPIK field names as they are, read liberally (module docstring); types are not coerced
    beyond that: a string where a number is documented is still refused."""

    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=False)

    unread: ClassVar[frozenset[str]] = frozenset()
    """Documented fields this model does not read: dropped before validation, not counted as unknown."""

    extras_are_values: ClassVar[bool] = False
    """The model's extra keys are data (a preprocessor's own parameters), not unknown fields."""

    @classmethod
    def unread_in(cls, data: dict[str, Any]) -> frozenset[str]:
        """The fields not read in this request; a model whose reading depends on a value overrides it."""
        return cls.unread

    @model_validator(mode="before")
    @classmethod
    def _read_liberally(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        unread = cls.unread_in(data)
        markers, integers = _field_rules(cls)
        return {
            name: _as_integers(value) if name in integers else value
            for name, value in data.items()
            if value is not None and name not in unread and not (name in markers and markers[name].matches(value))
        }


def unknown_fields(model: BaseModel, path: str = "") -> list[str]:
    """Every field the client sent that no wire model declares, as 'Path[i].Field'."""
    found = [] if getattr(model, "extras_are_values", False) else [f"{path}{name}" for name in model.model_extra or {}]
    for name in _nested_model_fields(type(model)):
        value = getattr(model, name)
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            if isinstance(item, BaseModel):
                where = name if index is None else f"{name}[{index}]"
                found += unknown_fields(item, f"{path}{where}.")
    return found


@cache
def _nested_model_fields(cls: type[BaseModel]) -> tuple[str, ...]:
    """Per model class: the fields that can hold wire models (alone or in a list), the only ones
    unknown_fields looks into."""
    return tuple(
        name
        for name, field in cls.model_fields.items()
        if any(isinstance(kind, type) and issubclass(kind, BaseModel) for kind in _kinds(field.annotation))
    )


@cache
def _field_rules(cls: type[BaseModel]) -> tuple[dict[str, DefaultWhen], frozenset[str]]:
    """Per model class: each field's DefaultWhen marker, and the fields that take integers."""
    markers = {
        name: marker
        for name, field in cls.model_fields.items()
        for marker in field.metadata
        if isinstance(marker, DefaultWhen)
    }
    integers = frozenset(name for name, field in cls.model_fields.items() if _takes_integers(field.annotation))
    return markers, integers


def _takes_integers(annotation: Any) -> bool:
    """int (or a list of int), possibly optional or annotated, and never a float."""
    kinds = _kinds(annotation)
    return int in kinds and float not in kinds


def _kinds(annotation: Any) -> set[Any]:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _kinds(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType, list):
        return set().union(*(_kinds(arg) for arg in typing.get_args(annotation)))
    return {annotation}


def _as_integers(value: Any) -> Any:
    """Integral floats (20.0) as the integers they are, alone or in a list."""
    if isinstance(value, list):
        return [_as_integers(item) for item in value]
    return int(value) if isinstance(value, float) and value.is_integer() else value


class SignedRequest(WireModel):
    Action: str
    PublicKey: str
    Signature: str
    request_uuid: str | None = Field(default=None, max_length=128)
    # Absent, not null: the signature check refuses a null Timestamp (TimestampOutOfWindow),
    # so the document must not offer it.
    Timestamp: int | str | SkipJsonSchema[None] = Field(default=None, description="Optional signed unix time (ours)")


class Envelope(BaseModel):
    """Every response: RetCode 0 = success; Message names the problem otherwise."""

    RetCode: int = 0
    Action: str = ""
    Message: str = ""
    request_uuid: str | None = Field(default=None, description="The request's, echoed only when it sent one")

    def wire(self) -> dict[str, Any]:
        """The JSON body: request_uuid only when the request had one (never null)."""
        return self.model_dump(exclude={"request_uuid"} if self.request_uuid is None else None)


def wire_param_name(preprocessor_code: str, name: str) -> str:
    """A preprocessor parameter as ListControlNets lists it and GenerateImages takes it:
    canny's low_threshold -> CannyLowThreshold."""
    return _camel(preprocessor_code) + _camel(name)


def param_label(preprocessor_code: str, name: str) -> str:
    """The words ListControlNetProcessor shows as ParamName: "Canny Low Threshold"."""
    return " ".join(part.capitalize() for part in f"{preprocessor_code}_{name}".split("_") if part)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))
