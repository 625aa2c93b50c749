"""Validate bodies against OpenAI's own schemas (schemas/spec/openai-schemas.json, taken
from OpenAI's OpenAPI document by scripts/extract_openai_schemas.py)."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parents[1] / "schemas" / "spec" / "openai-schemas.json"


def _nullable_to_type(node: Any) -> Any:
    """OpenAPI 3.0 `nullable: true` -> JSON Schema `type: [..., "null"]`."""
    if isinstance(node, dict):
        node = {k: _nullable_to_type(v) for k, v in node.items()}
        if node.pop("nullable", False):
            if "type" in node:
                types = node["type"] if isinstance(node["type"], list) else [node["type"]]
                node["type"] = [*types, "null"]
                if "enum" in node:
                    node["enum"] = [*node["enum"], None]
            else:
                node = {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable_to_type(v) for v in node]
    return node


@cache
def _spec() -> dict[str, Any]:
    spec = json.loads(SPEC_PATH.read_text())
    return {
        "components": {"schemas": _nullable_to_type(copy.deepcopy(spec["components"]["schemas"]))}
    }


@cache
def _registry() -> Registry:
    return Registry().with_resource("urn:openai", DRAFT202012.create_resource(_spec()))


def validate(body: Any, schema_name: str) -> None:
    """Raise jsonschema.ValidationError if `body` does not match components/schemas/NAME."""
    schema = {"$ref": f"urn:openai#/components/schemas/{schema_name}"}
    jsonschema.Draft202012Validator(schema, registry=_registry()).validate(body)


def validate_completion_chunk(chunk: dict[str, Any]) -> None:
    """A /v1/completions stream chunk against CreateCompletionResponse.

    The spec reuses the non-streamed shape for chunks, whose `finish_reason` is a
    required string; OpenAI itself streams `finish_reason: null` until the last chunk
    (and so does raygate), so that one field may be null here and nowhere else.
    """
    patched = copy.deepcopy(chunk)
    for choice in patched.get("choices", []):
        if choice.get("finish_reason") is None:
            choice["finish_reason"] = "stop"
    validate(patched, "CreateCompletionResponse")
