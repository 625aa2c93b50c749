"""Tools, logprobs and several choices through the generation path (fakes of the same
interfaces): the bodies and streams in OpenAI's shapes, the quota charge, the cache."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator

import pytest

from gateway.cache.keys import cache_key, cacheable
from schemas.errors import InvalidRequest
from schemas.generation import (
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    TokenLogprob,
    ToolCallPart,
)
from schemas.openai import ChatCompletion, Completion, CompletionRequest, StreamOptions
from tests.fakes import ScriptedModel
from tests.openai_spec import validate, validate_completion_chunk
from tests.unit.gateway.generation.test_service import TENANT, Rig, chat_request, events

TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
CALLED = (  # one call in three pieces, after some text
    GenerationChunk("Sure.", 5, 1, replica="r1"),
    GenerationChunk("", 5, 2, tool_calls=(ToolCallPart(0, "call_1", "f", '{"x": '),)),
    GenerationChunk("", 5, 3, tool_calls=(ToolCallPart(0, arguments="1}"),)),
    GenerationChunk("", 5, 4, finish_reason="tool_calls"),
)


async def test_tool_calls_are_assembled_into_the_message() -> None:
    rig = Rig(ScriptedModel(chunks=CALLED))
    reply = await rig.run(chat_request(tools=[TOOL], tool_choice="required", max_tokens=9))
    assert isinstance(reply.body, ChatCompletion)
    body = reply.body.model_dump(mode="json")
    validate(body, "CreateChatCompletionResponse")
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Sure."
    assert choice["message"]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    ]
    sent = rig.model.calls[0]
    assert sent.tools is not None and sent.tools.choice == "required" and sent.tools.forced


async def test_tool_calls_stream_as_openai_deltas() -> None:
    rig = Rig(ScriptedModel(chunks=CALLED))
    reply = await rig.run(chat_request(tools=[TOOL], stream=True, max_tokens=9))
    chunks = await events(reply)
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    deltas = [d for c in chunks for d in c["choices"][0]["delta"].get("tool_calls", [])]
    assert deltas[0] == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "f", "arguments": '{"x": '},
    }
    assert deltas[1] == {"index": 0, "function": {"arguments": "1}"}}  # no id, no name
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def interleaved(n: int) -> tuple[GenerationChunk, ...]:
    """`n` choices of two tokens each, their chunks interleaved as an engine sends them."""
    out, total = [], 0
    for step in range(2):
        for i in range(n):
            total += 1
            finish: FinishReason | None = "length" if step == 1 else None
            out.append(GenerationChunk(f"{i}{step}", 5, total, finish, index=i))
    return tuple(out)


async def test_several_choices_render_by_index_with_usage_summed() -> None:
    rig = Rig(ScriptedModel(chunks=interleaved(3)))
    reply = await rig.run(chat_request(n=3, max_tokens=2))
    assert isinstance(reply.body, ChatCompletion)
    body = reply.body.model_dump(mode="json")
    validate(body, "CreateChatCompletionResponse")
    assert [(c["index"], c["message"]["content"]) for c in body["choices"]] == [
        (0, "0001"),
        (1, "1011"),
        (2, "2021"),
    ]
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}


async def test_several_streamed_choices_each_begin_and_finish_then_one_usage() -> None:
    rig = Rig(ScriptedModel(chunks=interleaved(2)))
    reply = await rig.run(
        chat_request(n=2, max_tokens=2, stream=True, stream_options={"include_usage": True})
    )
    chunks = await events(reply)
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    roles = [
        c["choices"][0]["index"]
        for c in chunks
        if c["choices"] and c["choices"][0]["delta"].get("role")
    ]
    finished = [
        c["choices"][0]["index"]
        for c in chunks
        if c["choices"] and c["choices"][0]["finish_reason"]
    ]
    assert roles == [0, 1] and finished == [0, 1]
    assert [c["usage"]["completion_tokens"] for c in chunks if c.get("usage")] == [4]


async def test_the_quota_reserves_max_tokens_for_every_choice() -> None:
    one, three = (
        Rig(ScriptedModel(chunks=interleaved(1))),
        Rig(ScriptedModel(chunks=interleaved(3))),
    )
    before = one.tokens_left()
    plan_one = await one.service.plan(chat_request(max_tokens=50), TENANT, None)
    plan_three = await three.service.plan(chat_request(n=3, max_tokens=50), TENANT, None)
    assert plan_three.reserved_tokens - plan_one.reserved_tokens == 2 * 50
    assert before == one.tokens_left()  # planning charges nothing


LOGPROBS = (
    GenerationChunk("Hi", 5, 1, logprobs=(TokenLogprob("Hi", -0.5, (("Hi", -0.5), ("Yo", -1.5))),)),
    GenerationChunk(
        " there",
        5,
        2,
        "stop",
        logprobs=(TokenLogprob(" there", -0.25, ((" there", -0.25), ("!", -2.0))),),
    ),
)


async def test_chat_logprobs_in_openais_shape() -> None:
    rig = Rig(ScriptedModel(chunks=LOGPROBS))
    reply = await rig.run(chat_request(logprobs=True, top_logprobs=2, max_tokens=2))
    assert isinstance(reply.body, ChatCompletion)
    body = reply.body.model_dump(mode="json")
    validate(body, "CreateChatCompletionResponse")
    first = body["choices"][0]["logprobs"]["content"][0]
    assert first["token"] == "Hi" and first["bytes"] == [72, 105]
    assert [t["token"] for t in first["top_logprobs"]] == ["Hi", "Yo"]
    assert rig.model.calls[0].sampling.logprobs == 2


async def test_completion_logprobs_offsets_count_the_text_before() -> None:
    rig = Rig(ScriptedModel(chunks=LOGPROBS))
    body = CompletionRequest(model="default", prompt="p", logprobs=1, max_tokens=2, stream=True)
    chunks = await events(await rig.run(body))
    for chunk in chunks:
        validate_completion_chunk(chunk)
    offsets = [c["choices"][0]["logprobs"]["text_offset"] for c in chunks]
    assert offsets == [[0], [2]]
    whole = await Rig(ScriptedModel(chunks=LOGPROBS)).run(
        CompletionRequest(model="default", prompt="p", logprobs=1, max_tokens=2)
    )
    assert isinstance(whole.body, Completion) and whole.body.choices[0].logprobs is not None
    assert whole.body.choices[0].logprobs.text_offset == [0, 2]


def test_the_cache_partition_includes_tools_formats_and_choices() -> None:
    base = chat_request(temperature=0)
    variants = [
        chat_request(temperature=0, tools=[TOOL]),
        chat_request(temperature=0, tools=[TOOL], tool_choice="required"),
        chat_request(temperature=0, response_format={"type": "json_object"}),
        chat_request(temperature=0, logit_bias={"5": 1}),
        chat_request(temperature=0, n=2),
    ]
    partitions = {cache_key("t", "m", r, 10).partition for r in [base, *variants]}
    assert len(partitions) == 1 + len(variants)
    assert not cacheable(chat_request(n=2)) and not cacheable(chat_request(logprobs=True))
    assert cacheable(chat_request(tools=[TOOL]))


async def test_a_replayed_tool_call_answer_is_the_same_calls() -> None:
    rig = Rig(ScriptedModel(chunks=CALLED), cache=True)
    request = chat_request(tools=[TOOL], tool_choice="required", max_tokens=9, temperature=0)
    first = await rig.run(request)
    await rig.run(request)  # let the recording land
    replay = await rig.run(request)
    assert isinstance(first.body, ChatCompletion) and isinstance(replay.body, ChatCompletion)
    assert replay.headers.get("x-raygate-model") == "m1" and len(rig.model.calls) == 1
    assert replay.body.choices[0].message == first.body.choices[0].message
    assert replay.body.choices[0].finish_reason == "tool_calls"
    streamed = await events(await rig.run(request.model_copy(update={"stream": True})))
    pieces = [d for c in streamed for d in c["choices"][0]["delta"].get("tool_calls", [])]
    assert pieces == [
        {
            "index": 0,
            "id": "call_1",
            "type": "function",
            "function": {"name": "f", "arguments": '{"x": 1}'},
        }
    ]
    assert json.loads(pieces[0]["function"]["arguments"]) == {"x": 1}


async def test_tools_for_a_model_without_a_tool_parser_are_a_400() -> None:
    rig = Rig(ScriptedModel(chunks=CALLED), tools=False)
    with pytest.raises(InvalidRequest) as err:
        await rig.run(chat_request(tools=[TOOL], max_tokens=9))
    assert err.value.param == "tools" and rig.model.calls == []
    reply = await rig.run(chat_request(tools=[TOOL], tool_choice="none", max_tokens=9))
    assert isinstance(reply.body, ChatCompletion)  # "none": the tools are only shown


async def test_n_over_the_gateways_maximum_is_a_400() -> None:
    rig = Rig(ScriptedModel())
    with pytest.raises(InvalidRequest) as err:
        await rig.run(chat_request(n=9, max_tokens=2))
    assert err.value.param == "n" and rig.model.calls == []


# ------------------------------------------------------------- several prompts


async def test_several_prompts_are_one_engine_request_each_merged_in_openais_order() -> None:
    rig = Rig(ScriptedModel(chunks=interleaved(2)))
    body = CompletionRequest(model="default", prompt=["one two", "three"], n=2, max_tokens=2)
    plan = await rig.service.plan(body, TENANT, None)
    assert [r.request.request_id for r in plan.routes] == [
        f"{plan.request_id}-0",
        f"{plan.request_id}-1",
    ]
    assert plan.reserved_tokens == sum(r.prompt_tokens + 2 * 2 for r in plan.routes)
    reply = await rig.run(body)
    assert isinstance(reply.body, Completion)
    whole = reply.body.model_dump(mode="json")
    validate(whole, "CreateCompletionResponse")
    # prompt i's choice j is i * n + j
    assert [(c["index"], c["text"]) for c in whole["choices"]] == [
        (0, "0001"),
        (1, "1011"),
        (2, "0001"),
        (3, "1011"),
    ]
    assert [c.prompt for c in rig.model.calls] == [None, None]  # sent as token ids
    assert len(rig.model.calls) == 2
    assert whole["usage"]["completion_tokens"] == 8  # both prompts' choices
    assert whole["usage"]["prompt_tokens"] == 2 * 5  # each prompt once (5 per call here)


async def test_several_prompts_stream_as_one_with_the_total_usage_last() -> None:
    rig = Rig(ScriptedModel(("a", "b", "c")))
    body = CompletionRequest(
        model="default",
        prompt=[[1, 2], [3]],
        max_tokens=3,
        stream=True,
        stream_options=StreamOptions(include_usage=True),
    )
    chunks = await events(await rig.run(body))
    for chunk in chunks:
        validate_completion_chunk(chunk)
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    assert texts == {0: "abc", 1: "abc"}
    assert chunks[-1]["usage"]["completion_tokens"] == 6


async def test_one_failing_prompt_fails_the_request_and_closes_the_others() -> None:
    class HalfBroken(ScriptedModel):
        def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
            if request.request_id.endswith("-1"):
                return self._refused()
            return super().stream(request)

        async def _refused(self) -> AsyncGenerator[GenerationChunk, None]:
            raise InvalidRequest("bad prompt", param="prompt")
            yield  # an async generator that fails before its first chunk

    rig = Rig(HalfBroken(("a", "b")))
    with pytest.raises(InvalidRequest):
        await rig.run(CompletionRequest(model="default", prompt=["x", "y"], max_tokens=2))
    assert rig.model.closed == 1 and rig.log[-1] == "settle"


async def test_prompts_times_n_over_the_maximum_is_a_400() -> None:
    rig = Rig(ScriptedModel())
    body = CompletionRequest(model="default", prompt=["a"] * 5, n=2, max_tokens=2)
    with pytest.raises(InvalidRequest) as err:
        await rig.run(body)
    assert err.value.param == "prompt" and rig.model.calls == []


async def test_response_formats_reach_the_engine_on_both_endpoints() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    rig = Rig(ScriptedModel(("{}",)))
    await rig.run(chat_request(response_format=fmt, max_tokens=5))
    await rig.run(
        CompletionRequest.model_validate(
            {"model": "default", "prompt": "p", "response_format": {"type": "json_object"}}
        )
    )
    chat, completion = (call.sampling for call in rig.model.calls)
    assert chat.json_schema == schema and not chat.json_object
    assert completion.json_object and completion.json_schema is None
    assert rig.model.calls[0].constrained and not rig.model.calls[0].resumable
