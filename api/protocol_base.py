"""What every PICPIK request and response shares: the envelope fields."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema


class WireModel(BaseModel):
    """PICPIK field names as they are; unknown fields are refused; types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False)


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
    request_uuid: str | None = None


def wire_param_name(preprocessor_code: str, name: str) -> str:
    """A preprocessor parameter as ListControlNets lists it and GenerateImages takes it:
    canny's low_threshold -> CannyLowThreshold."""
    return _camel(preprocessor_code) + _camel(name)


def param_label(preprocessor_code: str, name: str) -> str:
    """The words ListControlNetProcessor shows as ParamName: "Canny Low Threshold"."""
    return " ".join(part.capitalize() for part in f"{preprocessor_code}_{name}".split("_") if part)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))
