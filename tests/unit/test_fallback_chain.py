"""ChainBackend: fallback before the first token, never after; breakers; deadlines."""

from __future__ import annotations

import asyncio

import pytest
from ray.serve.exceptions import BackPressureError

from gateway.routing.breaker import Breakers, State
from gateway.routing.config import BreakerConfig, RoutingConfig
from gateway.routing.fallback import ChainBackend, Link, RouterEvents
from schemas.errors import (
    APIError,
    ContextLengthExceeded,
    GatewayTimeout,
    InvalidRequest,
    Overloaded,
    ServiceUnavailable,
)
from schemas.generation import GenerationChunk, GenerationRequest, SamplingOptions
from tests.unit.routing_fakes import ScriptedModel

REQUEST = GenerationRequest("r1", SamplingOptions(max_tokens=8), prompt_token_ids=[1, 2, 3])


async def same(request: GenerationRequest) -> GenerationRequest:
    return request


class Recorder:
    def __init__(self) -> None:
        self.failed: list[tuple[str, str]] = []
        self.fallbacks: list[tuple[str, str]] = []
        self.waits: list[float] = []

    def events(self) -> RouterEvents:
        return RouterEvents(
            failed=lambda m, r: self.failed.append((m, r)),
            fallback=lambda a, b: self.fallbacks.append((a, b)),
        )

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


def chain(
    models: dict[str, ScriptedModel],
    recorder: Recorder,
    breakers: Breakers | None = None,
    **config: float,
) -> ChainBackend:
    settings = RoutingConfig.model_validate({"backoff_s": 0.1, "backoff_max_s": 0.15, **config})
    return ChainBackend(
        [Link(name, model, same) for name, model in models.items()],
        settings,
        breakers or Breakers(settings.breaker),
        recorder.events(),
        sleep=recorder.sleep,
        jitter=lambda: 1.0,  # the full bound, to check it
    )


async def drain(backend: ChainBackend) -> list[GenerationChunk]:
    return [chunk async for chunk in backend.stream(REQUEST)]


async def test_an_error_before_the_first_token_moves_to_the_next_model() -> None:
    rec = Recorder()
    broken = ScriptedModel(fail_before=ServiceUnavailable("down"))
    spare = ScriptedModel(("x", "y"), replica="spare-1")
    backend = chain({"main": broken, "spare": spare}, rec)
    chunks = await drain(backend)
    assert [c.text for c in chunks] == ["x", "y"]
    assert backend.served.model_id == "spare" and backend.served.replica == "spare-1"
    assert backend.served.calls == 2 and backend.served.passed_over == ["main"]
    assert rec.failed == [("main", "error")] and rec.fallbacks == [("main", "spare")]
    assert rec.waits == [0.1]  # backoff before the second call
    assert spare.calls == [REQUEST]


async def test_no_retry_after_the_first_token() -> None:
    rec = Recorder()
    flaky = ScriptedModel(("a", "b", "c"), fail_after=2)
    spare = ScriptedModel()
    backend = chain({"main": flaky, "spare": spare}, rec)
    got: list[str] = []
    with pytest.raises(RuntimeError, match="mid-stream"):
        async for chunk in backend.stream(REQUEST):
            got.append(chunk.text)
    assert got == ["a", "b"] and spare.calls == []
    assert backend.served.model_id == "main"


async def test_first_token_timeout_cancels_the_call_and_falls_back() -> None:
    rec = Recorder()
    stalled = ScriptedModel(stall=True)
    spare = ScriptedModel(("ok",))
    backend = chain({"main": stalled, "spare": spare}, rec, first_token_timeout_s=0.05)
    assert [c.text for c in await drain(backend)] == ["ok"]
    assert stalled.closed == 1  # the stalled call was closed (Serve cancels it)
    assert rec.failed == [("main", "first_token_timeout")]


async def test_a_model_can_have_its_own_first_token_timeout() -> None:
    rec = Recorder()
    settings = RoutingConfig(first_token_timeout_s=0.05, first_token_timeouts={"slow": 5.0})
    slow, spare = ScriptedModel(("late",), delay_s=0.2), ScriptedModel(("spare",))
    backend = ChainBackend(
        [Link("slow", slow, same), Link("spare", spare, same)],
        settings,
        Breakers(settings.breaker),
        rec.events(),
    )
    assert [c.text for c in await drain(backend)] == ["late"]  # 0.2 s > 0.05 s default
    assert rec.failed == [] and spare.calls == []
    assert settings.first_token_timeout("spare") == 0.05


async def test_client_errors_are_not_retried() -> None:
    rec = Recorder()
    refusing = ScriptedModel(fail_before=InvalidRequest("bad stop sequence"))
    spare = ScriptedModel()
    backend = chain({"main": refusing, "spare": spare}, rec)
    with pytest.raises(InvalidRequest):
        await drain(backend)
    assert spare.calls == [] and rec.failed == []


async def test_full_queues_fall_back_without_tripping_the_breaker() -> None:
    rec = Recorder()
    config = BreakerConfig(failure_threshold=1)
    breakers = Breakers(config)
    full = BackPressureError(num_queued_requests=4, max_queued_requests=4)
    busy = ScriptedModel(fail_before=full)
    backend = chain({"main": busy, "spare": ScriptedModel()}, rec, breakers)
    await drain(backend)
    assert rec.failed == [("main", "overloaded")]
    assert breakers["main"].state is State.CLOSED


async def test_everything_overloaded_is_a_503_with_retry_after() -> None:
    rec = Recorder()
    full = BackPressureError(num_queued_requests=4, max_queued_requests=4)
    backend = chain(
        {"main": ScriptedModel(fail_before=full), "spare": ScriptedModel(fail_before=full)},
        rec,
        retry_after_s=3,
    )
    with pytest.raises(Overloaded) as err:
        await drain(backend)
    assert err.value.status == 503 and err.value.headers == {"Retry-After": "3"}


async def test_all_failing_is_a_503_with_retry_after_naming_the_last_error() -> None:
    rec = Recorder()
    backend = chain(
        {
            "main": ScriptedModel(fail_before=RuntimeError("actor died")),
            "spare": ScriptedModel(fail_before=RuntimeError("actor died")),
        },
        rec,
    )
    with pytest.raises(APIError) as err:
        await drain(backend)
    assert err.value.status == 503 and err.value.headers is not None
    assert "'main', 'spare'" in err.value.message


async def test_open_circuit_skips_the_model_without_calling_it() -> None:
    rec = Recorder()
    settings = BreakerConfig(failure_threshold=2, open_s=60)
    breakers = Breakers(settings)
    broken = ScriptedModel(fail_before=ServiceUnavailable("down"))
    spare = ScriptedModel()
    for _ in range(2):
        await drain(chain({"main": broken, "spare": spare}, rec, breakers))
    assert breakers["main"].state is State.OPEN and len(broken.calls) == 2
    backend = chain({"main": broken, "spare": spare}, rec, breakers)
    await drain(backend)
    assert len(broken.calls) == 2  # not called while open
    assert backend.served.calls == 1 and rec.failed[-1] == ("main", "circuit_open")


async def test_attempts_are_bounded() -> None:
    rec = Recorder()
    models = {f"m{i}": ScriptedModel(fail_before=ServiceUnavailable("down")) for i in range(4)}
    backend = chain(models, rec, max_attempts=2)
    with pytest.raises(ServiceUnavailable):
        await drain(backend)
    assert [len(m.calls) for m in models.values()] == [1, 1, 0, 0]


async def test_backoff_doubles_up_to_its_bound() -> None:
    rec = Recorder()
    models = {f"m{i}": ScriptedModel(fail_before=ServiceUnavailable("down")) for i in range(3)}
    models["m3"] = ScriptedModel()
    await drain(chain(models, rec, max_attempts=4))
    assert rec.waits == [0.1, 0.15, 0.15]


async def test_a_fallback_whose_context_is_too_small_is_passed_over() -> None:
    rec = Recorder()

    async def too_long(request: GenerationRequest) -> GenerationRequest:
        raise ContextLengthExceeded("does not fit")

    settings = RoutingConfig()
    backend = ChainBackend(
        [
            Link("main", ScriptedModel(fail_before=ServiceUnavailable("down")), same),
            Link("small", ScriptedModel(), too_long),
            Link("big", ScriptedModel(("ok",)), same),
        ],
        settings,
        Breakers(settings.breaker),
        rec.events(),
        sleep=rec.sleep,
    )
    assert [c.text for c in await drain(backend)] == ["ok"]
    assert backend.served.passed_over == ["main", "small"]
    assert ("small", "does_not_fit") in rec.failed


async def test_the_overall_deadline_ends_a_slow_stream_with_a_timeout() -> None:
    class Slow(ScriptedModel):
        async def stream(self, request: GenerationRequest):  # type: ignore[no-untyped-def]
            yield GenerationChunk("first", 5, 1, None)
            await asyncio.Event().wait()  # the second chunk never comes
            yield GenerationChunk("never", 5, 2, "stop")

    rec = Recorder()
    backend = chain({"main": Slow()}, rec, timeout_s=0.1, first_token_timeout_s=0.1)
    got: list[str] = []
    with pytest.raises(GatewayTimeout):
        async for chunk in backend.stream(REQUEST):
            got.append(chunk.text)
    assert got == ["first"]
