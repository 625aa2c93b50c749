"""GenerationService against a fake LLM backend that follows the streaming contract."""

import json
from collections.abc import AsyncGenerator

import pytest

from gateway.generation import GenerationService, Prepared
from gateway.routing.config import RoutingConfig
from gateway.routing.planner import RoutePlanner
from gateway.targets import LLMTarget
from schemas.errors import ContextLengthExceeded, ModelNotFound, ServiceUnavailable
from schemas.generation import FinishReason, GenerationChunk, GenerationRequest
from schemas.openai import ChatCompletion, ChatCompletionRequest, Completion, CompletionRequest
from tests.openai_spec import validate, validate_completion_chunk


class FakeBackend:
    """Streams fixed pieces; can fail before the first chunk or after some chunks."""

    def __init__(
        self,
        pieces: list[str],
        finish: FinishReason = "stop",
        fail_before: Exception | None = None,
        fail_after: int | None = None,
    ):
        self.pieces, self.finish = pieces, finish
        self.fail_before, self.fail_after = fail_before, fail_after
        self.requests: list[GenerationRequest] = []
        self.closed = False
        self.context = 2048

    async def max_model_len(self) -> int:
        return self.context

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        self.requests.append(request)
        try:
            if self.fail_before:
                raise self.fail_before
            for i, piece in enumerate(self.pieces):
                if self.fail_after is not None and i == self.fail_after:
                    raise ServiceUnavailable("engine died")
                last = i == len(self.pieces) - 1
                yield GenerationChunk(piece, 7, i + 1, self.finish if last else None)
        finally:
            self.closed = True


class WordEncoder:
    """Stands in for the model's tokenizer: one token per word, 2 per chat message."""

    def encode(self, request: GenerationRequest) -> list[int]:
        if request.prompt_token_ids is not None:
            return list(request.prompt_token_ids)
        if request.messages is not None:
            return [7] * sum(2 + len(text.split()) for _, text in request.messages)
        assert request.prompt is not None
        return [7] * len(request.prompt.split())


def service(backend: FakeBackend) -> GenerationService:
    target = LLMTarget(backend, WordEncoder())
    router = RoutePlanner({"m1": target}, {"default": "m1"}, RoutingConfig(max_attempts=1))
    return GenerationService(router, clock=lambda: 1_700_000_000.0)


async def chat(svc: GenerationService, req: ChatCompletionRequest) -> tuple[object, Prepared]:
    prepared = await svc.prepare(req)
    return await svc.chat(req, prepared), prepared


async def complete(svc: GenerationService, req: CompletionRequest) -> tuple[object, Prepared]:
    prepared = await svc.prepare(req)
    return await svc.complete(req, prepared), prepared


def chat_request(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {
            "model": "default",
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
            **fields,
        }
    )


def as_stream(result: object) -> AsyncGenerator[str, None]:
    assert not isinstance(result, ChatCompletion | Completion), "expected a stream"
    return result  # type: ignore[return-value]


async def events(result: object) -> list[str]:
    return [e async for e in as_stream(result)]


def payloads(raw: list[str]) -> list[dict]:
    assert raw[-1] == "data: [DONE]\n\n"
    assert all(e.startswith("data: ") and e.endswith("\n\n") for e in raw)
    return [json.loads(e[len("data: ") :]) for e in raw[:-1]]


async def test_non_streamed_chat_joins_the_text_and_reports_engine_usage() -> None:
    backend = FakeBackend(["Par", "is", "."])
    body, prepared = await chat(
        service(backend), chat_request(max_tokens=9, temperature=0, stop=["\n"])
    )
    assert isinstance(body, ChatCompletion)
    dumped = json.loads(body.model_dump_json())
    validate(dumped, "CreateChatCompletionResponse")
    assert dumped["model"] == "m1"
    assert dumped["choices"][0]["message"]["content"] == "Paris."
    assert dumped["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    sent = backend.requests[0]
    assert sent.prompt_token_ids == [7] * 6  # tokenized by the gateway, sent as ids
    assert sent.sampling.max_tokens == 9 and sent.sampling.stop == ["\n"]
    assert (prepared.prompt_tokens, prepared.max_tokens, prepared.reserved_tokens) == (6, 9, 15)
    assert prepared.used_tokens == 6 + 3


@pytest.mark.parametrize("include_usage", [False, True])
async def test_streamed_chat_chunks_match_openai(include_usage: bool) -> None:
    backend = FakeBackend(["Hel", "lo"], finish="length")
    opts = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream, _ = await chat(service(backend), chat_request(stream=True, **opts))
    assert not isinstance(stream, ChatCompletion)
    chunks = payloads(await events(stream))
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello"
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] == "length"
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2
        assert all(c["usage"] is None for c in chunks[:-1])
    else:
        assert all(c["usage"] is None for c in chunks)
    assert len({c["id"] for c in chunks}) == 1


async def test_error_before_first_chunk_is_raised_not_streamed() -> None:
    backend = FakeBackend([], fail_before=ContextLengthExceeded("too long", param="messages"))
    with pytest.raises(ContextLengthExceeded):
        await chat(service(backend), chat_request(stream=True))


async def test_error_after_first_chunk_ends_stream_with_error_event_then_done() -> None:
    backend = FakeBackend(["a", "b", "c"], fail_after=1)
    stream, _ = await chat(service(backend), chat_request(stream=True))
    chunks = payloads(await events(stream))
    assert chunks[-1]["error"]["type"] == "service_unavailable"
    validate(chunks[-1], "ErrorResponse")
    assert backend.closed


async def test_client_leaving_mid_stream_closes_the_backend_stream() -> None:
    backend = FakeBackend(["a", "b", "c"])
    stream, _ = await chat(service(backend), chat_request(stream=True))
    stream = as_stream(stream)
    first = await anext(stream)
    assert first.startswith("data: ")
    await stream.aclose()
    assert backend.closed


async def test_unknown_model_fails_before_calling_any_backend() -> None:
    backend = FakeBackend(["x"])
    with pytest.raises(ModelNotFound):
        await chat(service(backend), chat_request(model="nope"))
    assert backend.requests == []


async def test_completions_non_stream_and_stream() -> None:
    backend = FakeBackend([" Paris", "."])
    svc = service(backend)
    body, _ = await complete(svc, CompletionRequest(model="m1", prompt="Capital:"))
    assert isinstance(body, Completion)
    validate(json.loads(body.model_dump_json()), "CreateCompletionResponse")
    assert body.choices[0].text == " Paris." and backend.requests[0].prompt_token_ids == [7]
    stream, _ = await complete(
        svc,
        CompletionRequest.model_validate(
            {
                "model": "m1",
                "prompt": [1, 2],
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        ),
    )
    chunks = payloads(await events(stream))
    for chunk in chunks:
        validate_completion_chunk(chunk)
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == " Paris."
    assert chunks[-1]["usage"]["total_tokens"] == 9
    assert backend.requests[1].prompt_token_ids == [1, 2]


async def test_prepare_checks_access_and_context_before_any_model_call() -> None:
    backend = FakeBackend(["x"])
    svc = service(backend)
    with pytest.raises(ModelNotFound):
        await svc.prepare(chat_request(), may_use=lambda model: model != "m1")
    backend.context = 8
    with pytest.raises(ContextLengthExceeded):
        await svc.prepare(chat_request(max_tokens=3))  # 6 prompt + 3 > 8
    fits = await svc.prepare(chat_request())  # no max_tokens: the rest of the context
    assert (fits.prompt_tokens, fits.max_tokens) == (6, 2)
    assert backend.requests == []


async def test_streamed_usage_is_tracked_for_settling() -> None:
    backend = FakeBackend(["a", "b", "c", "d"])
    stream, prepared = await chat(service(backend), chat_request(stream=True, max_tokens=10))
    assert prepared.completion_tokens == 1  # the first chunk arrived before streaming began
    await events(stream)
    assert prepared.completion_tokens == 4 and prepared.used_tokens == 10
