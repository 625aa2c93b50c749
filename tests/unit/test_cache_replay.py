"""Replaying and recording answers through the real GenerationService rendering."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from gateway.cache.redis_store import CachedAnswer
from gateway.cache.replay import RecordingBackend, ReplayBackend
from gateway.generation import GenerationService
from gateway.targets import GenerationBackend
from schemas.generation import FinishReason
from schemas.openai import ChatCompletion, ChatCompletionRequest
from tests.openai_spec import validate
from tests.unit.test_generation_service import FakeBackend, chat_request, service

Wrap = Callable[[GenerationBackend, int], GenerationBackend]


async def run_chat(
    svc: GenerationService, req: ChatCompletionRequest, wrap: Wrap
) -> tuple[object, int]:
    """Run a chat request with the model backend wrapped (given it and the prompt size)."""
    prepared = await svc.prepare(req)
    prepared.backend = wrap(prepared.backend, prepared.prompt_tokens)
    result = await svc.chat(req, prepared)
    if isinstance(result, ChatCompletion):
        return result, prepared.used_tokens
    return [event async for event in result], prepared.used_tokens


async def test_a_replayed_answer_is_a_complete_chat_completion() -> None:
    svc = service(FakeBackend(["never", "called"]))
    answer = CachedAnswer("Paris.", completion_tokens=3)
    body, used = await run_chat(
        svc, chat_request(), lambda model, n: ReplayBackend(answer, n, model)
    )
    assert isinstance(body, ChatCompletion)
    validate(body.model_dump(mode="json"), "CreateChatCompletionResponse")
    assert body.choices[0].message.content == "Paris."
    assert body.choices[0].finish_reason == "stop"
    assert body.usage is not None and body.usage.completion_tokens == 3
    assert used == body.usage.total_tokens


async def test_a_replayed_stream_is_well_formed_sse() -> None:
    svc = service(FakeBackend(["never"]))
    req = chat_request(stream=True, stream_options={"include_usage": True})
    answer = CachedAnswer("Paris is the capital.", completion_tokens=5)
    events, _ = await run_chat(svc, req, lambda model, n: ReplayBackend(answer, n, model))
    assert isinstance(events, list) and events[-1] == "data: [DONE]\n\n"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Paris is the capital."
    assert chunks[-1]["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize(
    ("finish", "fail_after", "stored"),
    [("stop", None, True), ("length", None, False), ("stop", 1, False)],
)
async def test_only_answers_that_stopped_by_themselves_are_recorded(
    finish: FinishReason, fail_after: int | None, stored: bool
) -> None:
    recorded: list[CachedAnswer] = []
    svc = service(FakeBackend(["Hel", "lo", "!"], finish=finish, fail_after=fail_after))
    await run_chat(
        svc,
        chat_request(stream=True),
        lambda model, _: RecordingBackend(model, recorded.append),
    )
    assert recorded == ([CachedAnswer("Hello!", 3)] if stored else [])


async def test_a_cancelled_stream_is_not_recorded_and_closes_the_model_call() -> None:
    recorded: list[CachedAnswer] = []
    backend = FakeBackend(["a", "b", "c"])
    recording = RecordingBackend(backend, recorded.append)
    stream = recording.stream((await service(backend).prepare(chat_request())).request)
    await anext(stream)
    await stream.aclose()
    assert recorded == [] and backend.closed
