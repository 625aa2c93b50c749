"""The synthetic engine's stream: schedule, usage, refusals, cancellation (real tokenizer)."""

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest
from pydantic import ValidationError

from deployments import synthetic
from deployments.config import LLMModelConfig, SyntheticEngine
from deployments.synthetic import SyntheticLLMDeployment, chunk_sizes
from schemas.errors import ContextLengthExceeded, InvalidRequest
from schemas.generation import GenerationChunk, GenerationRequest, SamplingOptions, Tools
from tests.paths import MODELS

MODEL = MODELS / "SmolLM2-135M-Instruct"
MESSAGES = [{"role": "user", "content": "Hi"}]


def config(**engine: float) -> LLMModelConfig:
    return LLMModelConfig(
        id="synth",
        model=str(MODEL),
        synthetic=SyntheticEngine(**engine),  # type: ignore[arg-type]
        deployment={"max_ongoing_requests": 8},  # type: ignore[arg-type]
    )


def deployment(monkeypatch: pytest.MonkeyPatch, **engine: float) -> SyntheticLLMDeployment:
    context = SimpleNamespace(replica_id=SimpleNamespace(unique_id="r1"))
    monkeypatch.setattr(synthetic.serve, "get_replica_context", lambda: context)
    cls = cast(Any, SyntheticLLMDeployment).func_or_class  # the class under Serve's decorator
    return cast(SyntheticLLMDeployment, cls(config(**engine), str(MODEL)))


async def collect(d: SyntheticLLMDeployment, request: GenerationRequest) -> list[GenerationChunk]:
    return [chunk async for chunk in d.generate(request)]


def test_chunk_sizes_first_token_alone_then_stream_interval() -> None:
    assert chunk_sizes(10, 4) == [1, 4, 4, 1]
    assert chunk_sizes(1, 4) == [1]
    assert chunk_sizes(5, 1) == [1] * 5


def test_stream_groups_tokens_and_reports_exact_usage(monkeypatch: pytest.MonkeyPatch) -> None:
    d = deployment(monkeypatch, first_token_s=0, tokens_per_s=1e6, stream_interval=4)
    request = GenerationRequest("a", SamplingOptions(max_tokens=10), messages=MESSAGES)
    chunks = asyncio.run(collect(d, request))
    assert [len(c.token_ids) for c in chunks] == [1, 4, 4, 1]
    assert [c.completion_tokens for c in chunks] == [1, 5, 9, 10]
    assert [c.finish_reason for c in chunks] == [None, None, None, "length"]
    assert chunks[0].replica == "r1" and all(c.replica is None for c in chunks[1:])
    assert all(c.text == d._text * len(c.token_ids) for c in chunks)
    prompt = d._encoder.encode(request)  # the model's template, as the gateway counts
    assert {c.prompt_tokens for c in chunks} == {len(prompt)}
    assert d.stats() == {"started": 1, "finished": 1, "aborted": 0, "failed": 0, "running": 0}


def test_unset_max_tokens_answers_output_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    d = deployment(monkeypatch, first_token_s=0, tokens_per_s=1e6, output_tokens=7)
    chunks = asyncio.run(collect(d, GenerationRequest("a", SamplingOptions(), prompt="Hi")))
    assert chunks[-1].completion_tokens == 7 and len(chunks) == 7


def test_schedule_is_timed_from_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    d = deployment(monkeypatch, first_token_s=0.05, tokens_per_s=100, stream_interval=2)
    request = GenerationRequest("a", SamplingOptions(max_tokens=9), prompt="Hi")

    async def timed() -> list[float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        return [loop.time() - start async for _ in d.generate(request)]

    times = asyncio.run(timed())
    due = [0.05 + (n - 1) / 100 for n in (1, 3, 5, 7, 9)]  # each chunk's last token
    assert all(t >= d_ - 1e-3 for t, d_ in zip(times, due, strict=True))
    assert times[-1] < due[-1] + 0.03  # absolute schedule: lateness does not add up


@pytest.mark.parametrize(
    ("sampling", "tools", "param"),
    [
        (SamplingOptions(n=2), None, "n"),
        (SamplingOptions(logprobs=1), None, "logprobs"),
        (SamplingOptions(json_object=True), None, "response_format"),
        (SamplingOptions(), Tools([{"type": "function", "function": {"name": "f"}}]), "tools"),
    ],
)
def test_refuses_what_it_cannot_imitate_before_the_first_chunk(
    monkeypatch: pytest.MonkeyPatch, sampling: SamplingOptions, tools: Tools | None, param: str
) -> None:
    d = deployment(monkeypatch)
    request = GenerationRequest("a", sampling, messages=MESSAGES, tools=tools)
    with pytest.raises(InvalidRequest) as err:
        asyncio.run(collect(d, request))
    assert err.value.param == param and err.value.status == 400
    assert d.stats()["started"] == 0


def test_prompt_over_the_context_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    d = deployment(monkeypatch, max_model_len=16)
    request = GenerationRequest("a", SamplingOptions(max_tokens=8), prompt="word " * 20)
    with pytest.raises(ContextLengthExceeded):
        asyncio.run(collect(d, request))


def test_cancellation_stops_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    d = deployment(monkeypatch, first_token_s=0, tokens_per_s=10)
    request = GenerationRequest("a", SamplingOptions(max_tokens=100), prompt="Hi")

    async def cancel_after_first() -> None:
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in d.generate(request):
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_after_first())
    assert d.stats() == {"started": 1, "finished": 0, "aborted": 1, "failed": 0, "running": 0}


def test_synthetic_model_refuses_engine_kwargs() -> None:
    with pytest.raises(ValidationError, match="engine_kwargs \\(max_model_len\\) have no effect"):
        LLMModelConfig(
            id="synth",
            model=str(MODEL),
            engine_kwargs={"max_model_len": 512},
            synthetic=SyntheticEngine(),
            deployment={"max_ongoing_requests": 8},  # type: ignore[arg-type]
        )
