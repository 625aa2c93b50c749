"""vLLM's own tool parser on the local model's tokenizer: calls read out of streamed
text, forced choices turned into JSON-schema constraints."""

import json
from typing import Any

import pytest

from deployments.tool_calls import ToolParsing
from gateway.answers import Answer
from schemas.generation import GenerationChunk, SamplingOptions, Tools

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'


@pytest.fixture(scope="module")
def parsing() -> ToolParsing:
    from transformers import AutoTokenizer

    return ToolParsing("hermes", AutoTokenizer.from_pretrained("models/SmolLM2-135M-Instruct"), "m")


def stream(parsing: ToolParsing, tools: Tools, pieces: list[str]) -> tuple[Answer, str]:
    reader = parsing.request(tools).reader([1, 2, 3])
    answer = Answer(0)
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        text, calls = reader.read(piece, [], finished=last)
        answer.add(GenerationChunk(text, 3, i + 1, tool_calls=calls))
    return answer, reader.finish_reason("stop")


def test_auto_reads_hermes_calls_out_of_streamed_text(parsing: ToolParsing) -> None:
    text = "Let me check." + CALL.replace("Oslo", "Paris")
    pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
    answer, reason = stream(parsing, Tools([WEATHER], "auto"), pieces)
    (call,) = answer.tool_calls
    assert call.name == "get_weather" and call.id
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert answer.text == "Let me check." and reason == "tool_calls"


def test_auto_without_a_call_is_plain_content(parsing: ToolParsing) -> None:
    answer, reason = stream(parsing, Tools([WEATHER], "auto"), ["It is ", "sunny."])
    assert answer.text == "It is sunny." and not answer.tool_calls and reason == "stop"


def constraint(parsing: ToolParsing, tools: Tools) -> dict:
    """The grammar the engine decodes under: vLLM's structural tag for Hermes calls."""
    structured = parsing.request(tools).structured
    assert structured is not None and structured.structural_tag is not None
    return json.loads(structured.structural_tag)["format"]


def test_named_choice_forces_a_call_of_that_function(parsing: ToolParsing) -> None:
    named = Tools([WEATHER], {"type": "function", "function": {"name": "get_weather"}})
    grammar = constraint(parsing, named)
    assert grammar["at_least_one"] is True  # a call must come
    for tag in grammar["tags"]:  # the call's name, then arguments of its schema
        assert '"name": "get_weather"' in tag["begin"]
        assert tag["content"]["json_schema"] == WEATHER["function"]["parameters"]
    answer, reason = stream(parsing, named, [CALL[:20], CALL[20:]])
    (call,) = answer.tool_calls
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Oslo"}
    assert reason == "stop"  # OpenAI ends a named function's call with "stop"


def test_required_forces_a_call_and_auto_only_shapes_one(parsing: ToolParsing) -> None:
    assert constraint(parsing, Tools([WEATHER], "required"))["at_least_one"] is True
    assert constraint(parsing, Tools([WEATHER], "auto"))["at_least_one"] is False  # may call
    answer, reason = stream(parsing, Tools([WEATHER], "required"), [CALL])
    assert [c.name for c in answer.tool_calls] == ["get_weather"] and reason == "tool_calls"


def test_none_is_not_parsed() -> None:
    assert not Tools([WEATHER], "none").parsed and Tools([WEATHER], "required").forced


def test_auto_keeps_the_response_format_for_an_answer_without_calls(
    parsing: ToolParsing,
) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    grammar = json.dumps(constraint_of(parsing, Tools([WEATHER], "auto"), schema))
    assert '"answer"' in grammar  # merged into the tool-call grammar, as vLLM merges it
    assert '"answer"' not in json.dumps(constraint_of(parsing, Tools([WEATHER], "auto"), None))


def constraint_of(parsing: ToolParsing, tools: Tools, schema: dict | None) -> dict:
    structured = parsing.request(tools, SamplingOptions(json_schema=schema)).structured
    assert structured is not None and structured.structural_tag is not None
    return dict(json.loads(structured.structural_tag))
