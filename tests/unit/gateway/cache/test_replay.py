"""The cache's layers of the backend stack (replay, record) through the real service."""

from __future__ import annotations

import json

import pytest

from gateway.cache.redis_store import CachedAnswer
from schemas.generation import FinishReason
from schemas.openai import ChatCompletion
from tests.fakes import ScriptedModel
from tests.openai_spec import validate
from tests.unit.gateway.generation.test_service import Rig, chat_request, events


def hit_rig(answer: CachedAnswer) -> Rig:
    rig = Rig(ScriptedModel(("never", "called")), cache=True)
    assert rig.cache is not None
    rig.cache.answers["q"] = answer
    return rig


async def test_a_replayed_answer_is_a_complete_chat_completion() -> None:
    rig = hit_rig(CachedAnswer("Paris.", completion_tokens=3))
    reply = await rig.run(chat_request())
    body = reply.body
    assert isinstance(body, ChatCompletion)
    validate(body.model_dump(mode="json"), "CreateChatCompletionResponse")
    assert body.choices[0].message.content == "Paris."
    assert body.choices[0].finish_reason == "stop"
    assert body.usage.completion_tokens == 3 and body.usage.prompt_tokens == 4
    assert rig.model.calls == []


async def test_a_replayed_stream_is_well_formed_sse() -> None:
    rig = hit_rig(CachedAnswer("Paris is the capital.", completion_tokens=5))
    req = chat_request(stream=True, stream_options={"include_usage": True})
    chunks = await events(await rig.run(req))
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Paris is the capital."
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    assert json.dumps(chunks).count('"finish_reason": "stop"') == 1


@pytest.mark.parametrize(
    ("finish", "fail_after", "stored"),
    [("stop", None, True), ("length", None, False), ("stop", 1, False)],
)
async def test_only_answers_that_stopped_by_themselves_are_recorded(
    finish: FinishReason, fail_after: int | None, stored: bool
) -> None:
    rig = Rig(ScriptedModel(("Hel", "lo", "!"), finish=finish, fail_after=fail_after), cache=True)
    await events(await rig.run(chat_request(stream=True)))
    assert rig.cache is not None
    assert rig.cache.answers == ({"q": CachedAnswer("Hello!", 3)} if stored else {})


async def test_a_one_chunk_answer_is_recorded_too() -> None:
    rig = Rig(ScriptedModel(("Hi!",)), cache=True)
    await rig.run(chat_request())
    assert rig.cache is not None and rig.cache.answers == {"q": CachedAnswer("Hi!", 1)}
