"""The API's OpenAPI document, with the request bodies the handlers read.

The handlers read and validate their bodies themselves (bounded, strict JSON: see
`gateway/body.py`), so FastAPI sees no body parameter and would document none. Each
route names its body's wire model in its table instead, and this module writes that
model's JSON schema into the operation's `requestBody`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

REF_TEMPLATE = "#/components/schemas/{model}"


def openapi_document(
    api: FastAPI, bodies: Mapping[tuple[str, str], type[BaseModel]]
) -> dict[str, Any]:
    """`api`'s OpenAPI document where each `(method, path)` of `bodies` takes a required
    JSON body of that model; the models (and those they use) are in its components."""
    refs, defs = models_json_schema(
        [(model, "validation") for model in bodies.values()], ref_template=REF_TEMPLATE
    )
    doc = get_openapi(title=api.title, version=api.version, routes=api.routes)
    for (method, path), model in bodies.items():
        doc["paths"][path][method.lower()]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(model, "validation")]}},
        }
    components = doc.setdefault("components", {})
    components["schemas"] = {**components.get("schemas", {}), **defs.get("$defs", {})}
    return doc
