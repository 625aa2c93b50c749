"""What agents and structured-output clients use, against a real raygate: tools,
structured outputs, logprobs and n, through the openai SDK and LangChain, unchanged.

The local model (SmolLM2-135M) is too small to choose tools well, so the tool tests force
a call (`required` or a named function): vLLM's structured outputs then hold the answer
to the tools' schemas, and what is asserted is the contract (the calls parse and match
the schema, the shapes are OpenAI's), not the model's judgement.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import pytest
from pydantic import BaseModel, Field

from tests.integration.conftest import CACHE_A_KEY, MAIN_KEY, Cluster
from tests.openai_spec import validate

pytestmark = pytest.mark.integration

WEATHER_PARAMS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": WEATHER_PARAMS,
    },
}
TIME_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}},
    "required": ["city"],
    "additionalProperties": False,
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a city.",
        "parameters": TIME_PARAMS,
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def post(cluster: Cluster, body: dict[str, Any], key: str = MAIN_KEY) -> httpx.Response:
    return httpx.post(
        f"{cluster.base_url}/v1/chat/completions",
        json={"model": cluster.llm_id, "max_tokens": 60, **body},
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )


def sse(text: str) -> list[dict[str, Any]]:
    events = [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def check_call(call: Any, schema: dict[str, Any]) -> dict[str, Any]:
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, schema)
    return dict(arguments)


# ------------------------------------------------------------------ the openai SDK


class City(BaseModel):
    name: str = Field(max_length=20)
    country: str = Field(max_length=20)
    population_millions: int = Field(ge=0, le=100)


def test_parse_returns_the_pydantic_model(client: Any, cluster: Cluster) -> None:
    completion = client.chat.completions.parse(
        model=cluster.llm_id,
        messages=[{"role": "user", "content": "Describe Paris as JSON."}],
        response_format=City,
        max_tokens=150,
        temperature=0,
    )
    # (the SDK's parsed object adds fields of its own: the raw bodies are checked above)
    assert isinstance(completion.choices[0].message.parsed, City)


def test_json_object_answers_parse(cluster: Cluster) -> None:
    reply = post(
        cluster,
        {
            "messages": [{"role": "user", "content": "Give me a JSON object about cats."}],
            "response_format": {"type": "json_object"},
            "max_tokens": 40,
            "temperature": 0,
        },
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    validate(body, "CreateChatCompletionResponse")
    if body["choices"][0]["finish_reason"] == "stop":  # a cut-short object cannot parse
        assert isinstance(json.loads(body["choices"][0]["message"]["content"]), dict)


def test_named_tool_choice_calls_that_function_with_valid_arguments(
    client: Any, cluster: Cluster
) -> None:
    completion = client.chat.completions.create(
        model=cluster.llm_id,
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=60,
    )
    validate(completion.model_dump(mode="json", exclude_unset=True), "CreateChatCompletionResponse")
    choice = completion.choices[0]
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.id and call.type == "function"
    check_call(call, WEATHER_PARAMS)
    assert choice.finish_reason == "stop"  # OpenAI's for a named function


def test_required_tool_calls_stream_in_openais_chunk_shape(client: Any, cluster: Cluster) -> None:
    with client.chat.completions.stream(
        model=cluster.llm_id,
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=60,
        stream_options={"include_usage": True},
    ) as stream:
        for event in stream:
            if event.type == "chunk":
                validate(
                    event.chunk.model_dump(mode="json", exclude_unset=True),
                    "CreateChatCompletionStreamResponse",
                )
        final = stream.get_final_completion()
    choice = final.choices[0]
    (call,) = choice.message.tool_calls  # parallel_tool_calls false: one call
    params = {"get_weather": WEATHER_PARAMS, "get_time": TIME_PARAMS}
    check_call(call, params[call.function.name])
    assert choice.finish_reason == "tool_calls"
    assert final.usage is not None and final.usage.completion_tokens > 0


def test_n_choices_each_answer_and_usage_sums_them(client: Any, cluster: Cluster) -> None:
    completion = client.chat.completions.create(
        model=cluster.llm_id,
        messages=ASK,
        n=3,
        max_tokens=6,
        extra_body={"ignore_eos": True},
        seed=7,
    )
    validate(completion.model_dump(mode="json", exclude_unset=True), "CreateChatCompletionResponse")
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert all(c.finish_reason == "length" for c in completion.choices)
    assert completion.usage.completion_tokens == 3 * 6  # each choice's tokens, summed


def test_streamed_n_choices_carry_their_index(cluster: Cluster) -> None:
    reply = post(cluster, {"messages": ASK, "n": 2, "max_tokens": 5, "stream": True})
    chunks = sse(reply.text)
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    finished = {c["choices"][0]["index"] for c in chunks if c["choices"][0]["finish_reason"]}
    assert finished == {0, 1}


def test_chat_logprobs_in_openais_shape_streamed_too(client: Any, cluster: Cluster) -> None:
    completion = client.chat.completions.create(
        model=cluster.llm_id, messages=ASK, logprobs=True, top_logprobs=3, max_tokens=8
    )
    validate(completion.model_dump(mode="json", exclude_unset=True), "CreateChatCompletionResponse")
    tokens = completion.choices[0].logprobs.content
    assert len(tokens) == completion.usage.completion_tokens
    for token in tokens:
        assert token.logprob <= 0 and len(token.top_logprobs) == 3
        assert token.top_logprobs[0].logprob >= token.top_logprobs[-1].logprob
    stream = client.chat.completions.create(
        model=cluster.llm_id, messages=ASK, logprobs=True, max_tokens=8, stream=True
    )
    streamed = [
        t for chunk in stream for c in chunk.choices if c.logprobs for t in c.logprobs.content
    ]
    assert len(streamed) == 8 or streamed  # every token's logprob, 8 unless it stopped sooner


def test_completion_logprobs_follow_the_legacy_shape(client: Any, cluster: Cluster) -> None:
    completion = client.completions.create(
        model=cluster.llm_id, prompt="The capital of France is", logprobs=2, max_tokens=5
    )
    validate(completion.model_dump(mode="json", exclude_unset=True), "CreateCompletionResponse")
    logprobs = completion.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.text_offset)
    assert "".join(logprobs.tokens) == completion.choices[0].text
    assert all(len(top) <= 2 for top in logprobs.top_logprobs)


# ---------------------------------------------------------------------- LangChain


def chat_model(cluster: Cluster, **kwargs: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=cluster.llm_id,
        base_url=f"{cluster.base_url}/v1",
        api_key=MAIN_KEY,  # type: ignore[arg-type]
        max_retries=0,
        timeout=120,
        **kwargs,
    )


class Weather(BaseModel):
    """The weather asked about."""

    city: str
    unit: str


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_langchain_structured_output(cluster: Cluster, method: str) -> None:
    model = chat_model(cluster, max_tokens=60, temperature=0)
    prompt = "Weather in Paris in celsius, as JSON with keys city and unit."
    structured = model.with_structured_output(Weather, method=method, include_raw=True)
    result = structured.invoke(prompt)
    assert result["parsing_error"] is None, result["raw"]
    assert isinstance(result["parsed"], Weather)


def test_langchain_tool_loop_call_then_answer(cluster: Cluster) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str, unit: str) -> str:
        """The current weather in a city."""
        return f"22 degrees {unit} and sunny in {city}"

    model = chat_model(cluster, max_tokens=60, temperature=0)
    history: list[Any] = [HumanMessage("What is the weather in Paris?")]
    forced = model.bind_tools([get_weather], tool_choice="get_weather")
    called = forced.invoke(history)
    (call,) = called.tool_calls
    assert call["name"] == "get_weather" and set(call["args"]) == {"city", "unit"}
    history += [called, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    final = model.bind_tools([get_weather]).invoke(history)  # tool_choice auto
    assert final.content or final.tool_calls  # an answer from the tool's result


# -------------------------------------------------------------- the cache, bad input


def test_a_cached_tool_call_replays_as_the_same_calls(cluster: Cluster) -> None:
    body = {
        "messages": [{"role": "user", "content": "Weather in Oslo, please (cache test)."}],
        "tools": [WEATHER],
        "tool_choice": "required",
        "temperature": 0,
    }
    first = post(cluster, body, key=CACHE_A_KEY)
    assert first.status_code == 200 and first.headers["x-raygate-cache"] == "miss"

    def replayed() -> httpx.Response:
        return post(cluster, body, key=CACHE_A_KEY)

    from tests.integration.conftest import wait_until

    wait_until(lambda: replayed().headers.get("x-raygate-cache") == "hit", 30, "a stored answer")
    again = replayed().json()
    assert (
        again["choices"][0]["message"]["tool_calls"]
        == first.json()["choices"][0]["message"]["tool_calls"]
    )
    assert again["choices"][0]["finish_reason"] == "tool_calls"
    streamed = sse(post(cluster, {**body, "stream": True}, key=CACHE_A_KEY).text)
    for chunk in streamed:
        validate(chunk, "CreateChatCompletionStreamResponse")
    pieces = [d for c in streamed for d in c["choices"][0]["delta"].get("tool_calls", [])]
    assert [p["function"]["name"] for p in pieces if p.get("id")] == ["get_weather"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{**WEATHER, "function": {"name": "f", "parameters": {"type": 5}}}]}, "tools"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"n": 9}, "n"),  # the profile's gateway.max_choices is 8
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    # a valid JSON Schema that the grammar backend cannot compile
                    "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/missing"}},
                }
            },
            "response_format",
        ),
    ],
)
def test_bad_tools_and_options_are_400s_naming_the_param(
    cluster: Cluster, body: dict[str, Any], param: str
) -> None:
    reply = post(cluster, {"messages": ASK, **body})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"].startswith(param)


def test_a_list_of_prompts_gets_a_choice_per_prompt_and_n(client: Any, cluster: Cluster) -> None:
    completion = client.completions.create(
        model=cluster.llm_id,
        prompt=["The capital of France is", "Two plus two is"],
        n=2,
        max_tokens=4,
        extra_body={"ignore_eos": True},
    )
    validate(completion.model_dump(mode="json", exclude_unset=True), "CreateCompletionResponse")
    assert [c.index for c in completion.choices] == [0, 1, 2, 3]
    assert completion.usage.completion_tokens == 2 * 2 * 4


def test_completions_take_a_json_schema_too(client: Any, cluster: Cluster) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "maxLength": 12}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    completion = client.completions.create(
        model=cluster.llm_id,
        prompt="Answer in JSON: what is the capital of France?",
        max_tokens=40,
        extra_body={
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": schema},
            }
        },
    )
    choice = completion.choices[0]
    if choice.finish_reason == "stop":
        jsonschema.validate(json.loads(choice.text), schema)
