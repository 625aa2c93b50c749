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


@cache
def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = json.loads(SPEC_PATH.read_text())["components"]["schemas"]
    return schemas


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = _schemas()[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def request_properties(schema_name: str) -> dict[str, dict[str, Any]]:
    """The properties of components/schemas/NAME, through `$ref` and `allOf` (a later part
    of an allOf redefines what an earlier one defined, as CreateChatCompletionRequest
    does with the properties it takes from CreateModelResponseProperties)."""

    def walk(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
        schema = _resolve(schema)
        found: dict[str, dict[str, Any]] = {}
        for part in schema.get("allOf", []):
            found |= walk(part)
        return found | schema.get("properties", {})

    return walk({"$ref": f"#/components/schemas/{schema_name}"})


def examples(schema: dict[str, Any]) -> list[Any]:
    """Values the schema allows, a few of each shape: null where it is nullable, every
    enum value, every anyOf/oneOf branch; the shortest string, the least number, both
    booleans; arrays of `minItems` (at least one) of each item example; objects with only
    their required properties, and with all of them at their first example but one
    property at each of its examples."""
    schema = _resolve(schema)
    found: list[Any] = [None] if schema.get("nullable") else []
    for branch in [*schema.get("anyOf", []), *schema.get("oneOf", [])]:
        found += examples(branch)
    kind = schema.get("type")
    if "enum" in schema:
        found += schema["enum"]
    elif kind == "null":
        found.append(None)
    elif kind == "string":
        found.append("x" * max(1, schema.get("minLength", 0)))
    elif kind in ("integer", "number"):
        found.append(schema.get("minimum", 0))
    elif kind == "boolean":
        found += [False, True]
    elif kind == "array":
        items = [e for e in examples(schema["items"]) if e is not None]
        found += [[item] * max(1, schema.get("minItems", 1)) for item in items]
    elif kind == "object" or "properties" in schema:
        each = {name: examples(prop) for name, prop in schema.get("properties", {}).items()}
        first = {name: next(e for e in values if e is not None) for name, values in each.items()}
        found.append({name: first[name] for name in schema.get("required", [])})
        found += [first | {name: e} for name, values in each.items() for e in values]
        if isinstance(extra := schema.get("additionalProperties"), dict):
            found.append({"key": examples(extra)[0]})
    unique: dict[str, Any] = {json.dumps(v, sort_keys=True): v for v in found}
    return list(unique.values())
