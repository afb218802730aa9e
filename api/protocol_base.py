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


def wire_param_name(name: str) -> str:
    """A catalog parameter name as PICPIK's current actions spell it: low_threshold -> LowThreshold."""
    return "".join(part.capitalize() for part in name.split("_"))
