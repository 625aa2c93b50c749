"""OpenAI's function tools and structured outputs on the wire: what a chat request may
declare (tools, tool_choice, response_format) and the tool calls an answer carries.

A tool's `parameters` and a response format's `schema` are JSON Schemas; they are
checked here to be valid schemas (Draft 2020-12, the dialect OpenAI documents), so a bad
one is a 400 naming its field before any model is asked. Whether the engine's grammar
backend can compile a valid schema is the LLM deployment's to say (also a 400).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

# OpenAI: "a-z, A-Z, 0-9, or contain underscores and dashes, with a maximum length of 64".
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` if it is a valid JSON Schema; raises ValueError saying why not."""
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "the root"
        raise ValueError(f"is not a valid JSON Schema (at {where}): {exc.message}") from None
    return schema


def _named(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError("must be 1-64 characters of a-z, A-Z, 0-9, '_' or '-'")
    return name


Name = Annotated[str, AfterValidator(_named)]
Schema = Annotated[dict[str, Any], AfterValidator(check_schema)]


class FunctionDefinition(_Strict):
    name: Name
    description: str | None = None
    parameters: Schema | None = None
    strict: bool | None = None


class FunctionTool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class JSONSchemaFormat(_Strict):
    name: Name
    description: str | None = None
    schema_: Schema | None = Field(default=None, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TextFormat(_Strict):
    type: Literal["text"]


class JSONObjectFormat(_Strict):
    type: Literal["json_object"]


class JSONSchemaResponseFormat(_Strict):
    type: Literal["json_schema"]
    json_schema: JSONSchemaFormat


ResponseFormat = TextFormat | JSONObjectFormat | JSONSchemaResponseFormat


# ------------------------------------------------------------------- in messages/answers


class CalledFunction(_Strict):
    name: str
    arguments: str  # JSON text, as the model wrote it


class ToolCall(_Strict):
    """A tool call: in an assistant message of the history, and in an answer."""

    id: str
    type: Literal["function"] = "function"
    function: CalledFunction


class Sparse(_Strict):
    """Streamed pieces: fields not sent in this piece are left out, as OpenAI does."""

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class FunctionCallDelta(Sparse):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(Sparse):
    """A streamed piece of a tool call: the first one of a call has its id and name."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta | None = None
