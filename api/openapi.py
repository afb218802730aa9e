"""The OpenAPI description of POST /: the real request body of every Action.

The route reads the raw body itself (it must verify the signature over the exact JSON), so
FastAPI cannot infer the schema; it is built here from the same wire models, as a oneOf
discriminated by Action, so schema-driven clients and fuzzers see every action's fields.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from api.backgrounds.protocol import BACKGROUND_REQUESTS
from api.catalog.protocol import CATALOG_REQUESTS
from api.generate.protocol import GENERATE_REQUESTS
from api.inpainting.protocol import INPAINTING_REQUESTS
from api.queries.protocol import QUERY_REQUESTS

REF_TEMPLATE = "#/components/schemas/{model}"
ALL_REQUESTS = (*GENERATE_REQUESTS, *BACKGROUND_REQUESTS, *INPAINTING_REQUESTS, *QUERY_REQUESTS, *CATALOG_REQUESTS)


@cache
def _schema() -> dict[str, Any]:
    any_request = Annotated[Union[ALL_REQUESTS], Field(discriminator="Action")]  # type: ignore[valid-type]  # noqa: UP007
    return TypeAdapter(any_request).json_schema(ref_template=REF_TEMPLATE)


def request_body_schema() -> dict[str, Any]:
    schema = {k: v for k, v in _schema().items() if k != "$defs"}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def component_schemas() -> dict[str, Any]:
    definitions: dict[str, Any] = _schema().get("$defs", {})
    return definitions
