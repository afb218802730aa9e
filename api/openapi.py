"""The OpenAPI description of POST /: the real request body of every Action.

POST / reads the raw body itself (it must verify the signature over the exact JSON) and is not a
FastAPI route (api.api_router.ActionEndpoint), so its operation is written here, its body schema
built from the same wire models as a oneOf discriminated by Action, so schema-driven clients and
fuzzers see every action's fields.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from api.backgrounds.protocol import BACKGROUND_REQUESTS
from api.catalog.protocol import CATALOG_REQUESTS
from api.generate.protocol import GENERATE_REQUESTS
from api.inpainting.protocol import INPAINTING_REQUESTS
from api.protocol_base import Envelope
from api.queries.protocol import QUERY_REQUESTS

REF_TEMPLATE = "#/components/schemas/{model}"
ALL_REQUESTS = (*GENERATE_REQUESTS, *BACKGROUND_REQUESTS, *INPAINTING_REQUESTS, *QUERY_REQUESTS, *CATALOG_REQUESTS)


@cache
def _schema() -> dict[str, Any]:
    any_request = Annotated[Union[ALL_REQUESTS], Field(discriminator="Action")]  # type: ignore[valid-type]  # noqa: UP007
    return TypeAdapter(any_request).json_schema(ref_template=REF_TEMPLATE)


def action_operation() -> dict[str, Any]:
    """POST / (api.api_router.ActionEndpoint, which FastAPI's router does not see)."""
    envelope = {"$ref": REF_TEMPLATE.format(model=Envelope.__name__)}
    return {
        "summary": "Every PICPIK action; the body's Action field chooses which",
        "operationId": "dispatch",
        "requestBody": _request_body_schema(),
        "responses": {
            "200": {
                "description": "PICPIK's envelope: RetCode 0, or the RetCode and Message of the first problem",
                "content": {"application/json": {"schema": envelope}},
            }
        },
    }


def _request_body_schema() -> dict[str, Any]:
    schema = {k: v for k, v in _schema().items() if k != "$defs"}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def component_schemas() -> dict[str, Any]:
    definitions: dict[str, Any] = _schema().get("$defs", {})
    return definitions | {Envelope.__name__: Envelope.model_json_schema(ref_template=REF_TEMPLATE)}
