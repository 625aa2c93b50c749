"""ChainBackend: fallback before the first token, never after; breakers; deadlines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from ray.serve.exceptions import BackPressureError

from gateway.routing.breaker import Breakers, State
from gateway.routing.config import BreakerConfig, RoutingConfig
from gateway.routing.fallback import ChainBackend, ChainEvents, Link, verdict
from gateway.targets import Served
from schemas.errors import (
    APIError,
    ContextLengthExceeded,
    GatewayTimeout,
    InvalidRequest,
    Overloaded,
    ServiceUnavailable,
)
from schemas.generation import GenerationChunk, GenerationRequest, SamplingOptions
from tests.fakes import ScriptedModel

REQUEST = GenerationRequest("r1", SamplingOptions(max_tokens=8), prompt_token_ids=[1, 2, 3])


async def same(request: GenerationRequest) -> GenerationRequest:
    return request


class Recorder:
    def __init__(self) -> None:
        self.failed: list[tuple[str, str]] = []
        self.fallbacks: list[tuple[str, str]] = []
        self.waits: list[float] = []

    def events(self) -> ChainEvents:
        return ChainEvents(
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


@dataclass(frozen=True)
class Drained:
    chunks: list[GenerationChunk]
    served: Served

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.chunks]


async def drain(backend: ChainBackend) -> Drained:
    started = await backend.start(REQUEST)
    return Drained([chunk async for chunk in started.chunks()], started.served)


async def chunks_of(backend: ChainBackend) -> AsyncIterator[GenerationChunk]:
    started = await backend.start(REQUEST)
    async for chunk in started.chunks():
        yield chunk


async def test_an_error_before_the_first_token_moves_to_the_next_model() -> None:
    rec = Recorder()
    broken = ScriptedModel(fail_before=ServiceUnavailable("down"))
    spare = ScriptedModel(("x", "y"), replica="spare-1")
    backend = chain({"main": broken, "spare": spare}, rec)
    run = await drain(backend)
    assert run.texts == ["x", "y"]
    assert run.served.model_id == "spare" and run.served.replica == "spare-1"
    assert run.served.calls == 2 and run.served.passed_over == ("main",)
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
        async for chunk in chunks_of(backend):
            got.append(chunk.text)
    assert got == ["a", "b"] and spare.calls == []


async def test_first_token_timeout_cancels_the_call_and_falls_back() -> None:
    rec = Recorder()
    stalled = ScriptedModel(stall=True)
    spare = ScriptedModel(("ok",))
    backend = chain({"main": stalled, "spare": spare}, rec, first_token_timeout_s=0.05)
    assert (await drain(backend)).texts == ["ok"]
    assert stalled.closed == 1  # the stalled call was closed (Serve cancels it)
    assert rec.failed == [("main", "first_token_timeout")]


async def test_a_first_token_timeout_of_a_silent_model_trips_its_breaker() -> None:
    rec, breakers = Recorder(), Breakers(BreakerConfig(failure_threshold=1))
    stalled = ScriptedModel(stall=True)
    backend = chain(
        {"main": stalled, "spare": ScriptedModel()}, rec, breakers, first_token_timeout_s=0.05
    )
    await drain(backend)
    assert rec.failed == [("main", "first_token_timeout")]
    assert breakers["main"].state is State.OPEN


async def test_a_first_token_timeout_behind_other_calls_is_load_not_a_failure() -> None:
    """One tenant's burst queues behind itself: the model kept streaming to other calls
    while this one waited, so its timeout is `busy` and no circuit opens for anyone."""
    rec, breakers = Recorder(), Breakers(BreakerConfig(failure_threshold=1))
    stalled = ScriptedModel(stall=True)
    queued = chain(
        {"main": stalled, "spare": ScriptedModel(("spare",))},
        rec,
        breakers,
        first_token_timeout_s=0.5,
    )
    answering = chain({"main": ScriptedModel(("a", "b", "c"))}, Recorder(), breakers)
    streaming = await answering.start(REQUEST)  # its first chunk is in before the wait
    waiting = asyncio.create_task(drain(queued))
    await stalled.called.wait()  # the queued call is waiting for its first token
    assert [c.text async for c in streaming.chunks()] == ["a", "b", "c"]  # heard meanwhile
    assert (await waiting).texts == ["spare"]
    assert rec.failed == [("main", "busy")]
    assert breakers["main"].state is State.CLOSED


async def test_a_half_open_probe_that_times_out_reopens_even_while_others_stream() -> None:
    clock, rec = Clock(), Recorder()
    breakers = Breakers(BreakerConfig(failure_threshold=1, open_s=10), clock)
    breakers["main"].failure()  # open
    clock.now += 10  # the next call is the probe
    stalled = ScriptedModel(stall=True)
    probing = chain(
        {"main": stalled, "spare": ScriptedModel(("spare",))},
        rec,
        breakers,
        first_token_timeout_s=0.5,
    )
    waiting = asyncio.create_task(drain(probing))
    await stalled.called.wait()
    breakers["main"].alive()  # a stream begun before the circuit opened still sends chunks
    await waiting
    assert rec.failed == [("main", "first_token_timeout")]
    assert breakers["main"].state is State.OPEN and breakers["main"].retry_in_s() == 10


async def test_a_wait_the_deadline_cut_short_is_not_the_models_failure() -> None:
    """The first model's failure and the backoff took most of the request's time: the
    fallback's wait for its first token ends at the deadline, before its own timeout, so
    its breaker stays closed and the client gets the request's timeout."""
    clock, rec = Clock(), Recorder()
    breakers = Breakers(BreakerConfig(failure_threshold=1))

    async def slow_backoff(seconds: float) -> None:
        clock.now += 0.95  # of the request's 1 s

    stalled = ScriptedModel(stall=True)
    settings = RoutingConfig(timeout_s=1.0, first_token_timeout_s=1.0)
    backend = ChainBackend(
        [
            Link("main", ScriptedModel(fail_before=ServiceUnavailable("down")), same),
            Link("spare", stalled, same),
        ],
        settings,
        breakers,
        rec.events(),
        clock=clock,
        sleep=slow_backoff,
        jitter=lambda: 1.0,
    )
    with pytest.raises(GatewayTimeout, match="time limit"):
        await drain(backend)
    assert stalled.closed == 1
    assert rec.failed == [("main", "error"), ("spare", "deadline")]
    assert breakers["spare"].state is State.CLOSED
    assert breakers["main"].state is State.OPEN


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
    assert (await drain(backend)).texts == ["late"]  # 0.2 s > 0.05 s default
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
    run = await drain(chain({"main": broken, "spare": spare}, rec, breakers))
    assert len(broken.calls) == 2  # not called while open
    assert run.served.calls == 1 and rec.failed[-1] == ("main", "circuit_open")


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
    run = await drain(backend)
    assert run.texts == ["ok"] and run.served.passed_over == ("main", "small")
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
        async for chunk in chunks_of(backend):
            got.append(chunk.text)
    assert got == ["first"]


# ------------------------------------------------- client errors are never the model's


def from_replica(err: Exception) -> Exception:
    """`err` as Ray raises it in the gateway when a replica raised it."""
    from ray.exceptions import RayTaskError

    wrapped: Exception = RayTaskError("generate", "traceback", err).as_instanceof_cause()
    return wrapped


@pytest.mark.parametrize(
    ("exc", "model_failed", "try_next"),
    [
        (InvalidRequest("stop cannot contain an empty string"), False, False),
        (from_replica(InvalidRequest("bad seed", param="seed")), False, False),
        (from_replica(ContextLengthExceeded("too long")), False, False),
        (ServiceUnavailable("restarting"), True, True),
        (from_replica(ServiceUnavailable("engine failed")), True, True),
        (from_replica(ValueError("engine bug")), True, True),
        (RuntimeError("actor died"), True, True),
        (TimeoutError(), True, True),
        (StopAsyncIteration(), True, True),
        (BackPressureError(num_queued_requests=1, max_queued_requests=1), False, True),
    ],
)
def test_the_verdict_table(exc: Exception, model_failed: bool, try_next: bool) -> None:
    judged = verdict(exc)
    assert (judged.model_failed, judged.try_next) == (model_failed, try_next)


async def test_fifty_client_errors_leave_the_circuit_closed() -> None:
    rec, clock = Recorder(), Clock()
    breakers = Breakers(BreakerConfig(failure_threshold=2, open_s=10), clock)
    refusing = ScriptedModel(fail_before=from_replica(InvalidRequest("bad", param="stop")))
    for _ in range(50):
        with pytest.raises(InvalidRequest):
            await drain(chain({"main": refusing, "spare": ScriptedModel()}, rec, breakers))
    assert breakers["main"].state is State.CLOSED
    backend = chain({"main": ScriptedModel(("ok",)), "spare": ScriptedModel()}, rec, breakers)
    run = await drain(backend)
    assert run.texts == ["ok"] and run.served.model_id == "main" and run.served.passed_over == ()


async def test_a_client_error_mid_stream_is_not_a_failure_but_a_model_error_is() -> None:
    class FailsAfterFirst(ScriptedModel):
        async def stream(self, request: GenerationRequest):  # type: ignore[no-untyped-def]
            yield GenerationChunk("a", 5, 1, None)
            assert self.fail_before is not None
            raise self.fail_before

    rec = Recorder()
    breakers = Breakers(BreakerConfig(failure_threshold=1, open_s=10), Clock())
    client_side = FailsAfterFirst(fail_before=from_replica(InvalidRequest("refused")))
    with pytest.raises(InvalidRequest):
        await drain(chain({"main": client_side}, rec, breakers))
    assert breakers["main"].state is State.CLOSED
    model_side = FailsAfterFirst(fail_before=from_replica(ServiceUnavailable("died")))
    with pytest.raises(ServiceUnavailable):
        await drain(chain({"main": model_side}, rec, breakers))
    assert breakers["main"].state is State.OPEN


# ---------------------------------- the half-open probe slot is freed on every way out


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def half_open_spare(clock: Clock) -> Breakers:
    """Breakers where `spare` has been open for its whole period: its next call probes."""
    breakers = Breakers(BreakerConfig(failure_threshold=1, open_s=10), clock)
    breakers["spare"].failure()
    clock.now += 10
    return breakers


def probe_chain(
    clock: Clock,
    breakers: Breakers,
    spare: ScriptedModel,
    adapt: Any = same,
    sleep: Any = None,
    **config: float,
) -> ChainBackend:
    settings = RoutingConfig.model_validate({"backoff_s": 0.1, **config})
    return ChainBackend(
        [
            Link("main", ScriptedModel(fail_before=ServiceUnavailable("down")), same),
            Link("spare", spare, adapt),
        ],
        settings,
        breakers,
        clock=clock,
        sleep=sleep or Recorder().sleep,
        jitter=lambda: 1.0,
    )


def assert_probe_free(breakers: Breakers) -> None:
    spare = breakers["spare"]
    assert spare.state is State.HALF_OPEN
    assert spare.allow()  # the slot is free: a later request may probe


@pytest.mark.parametrize("stuck_in", ["backoff", "adapt", "first_token"])
async def test_probe_freed_when_the_client_leaves(stuck_in: str) -> None:
    """The client leaves during the fallback's backoff, while the request is being
    re-tokenized for it, or while its first token is awaited: the probe slot was taken,
    the call never settled."""
    clock = Clock()
    breakers, entered = half_open_spare(clock), asyncio.Event()

    async def stuck(arg: Any) -> Any:
        entered.set()
        await asyncio.Event().wait()  # never set: only cancellation ends it
        return arg

    spare = ScriptedModel(stall=stuck_in == "first_token")
    if stuck_in == "backoff":
        backend = probe_chain(clock, breakers, spare, sleep=stuck)
    elif stuck_in == "adapt":
        backend = probe_chain(clock, breakers, spare, adapt=stuck)
    else:
        backend, entered = probe_chain(clock, breakers, spare), spare.called
    task = asyncio.create_task(drain(backend))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_probe_free(breakers)


async def test_probe_freed_when_the_probe_meets_a_client_error() -> None:
    clock = Clock()
    breakers = half_open_spare(clock)
    refusing = ScriptedModel(fail_before=from_replica(InvalidRequest("bad")))
    with pytest.raises(InvalidRequest):
        await drain(probe_chain(clock, breakers, refusing))
    assert_probe_free(breakers)


@pytest.mark.parametrize(
    "refusal", [ContextLengthExceeded("does not fit"), RuntimeError("tokenizer crashed")]
)
async def test_probe_freed_when_adapting_for_the_fallback_fails(refusal: Exception) -> None:
    clock = Clock()
    breakers = half_open_spare(clock)

    async def refuse(request: GenerationRequest) -> GenerationRequest:
        raise refusal

    with pytest.raises(type(refusal)):
        await drain(probe_chain(clock, breakers, ScriptedModel(), refuse))
    assert_probe_free(breakers)


async def test_probe_freed_when_the_deadline_passes_during_the_backoff() -> None:
    clock = Clock()
    breakers = half_open_spare(clock)

    async def slow_sleep(seconds: float) -> None:
        clock.now += 60  # past the request's deadline

    backend = probe_chain(
        clock, breakers, ScriptedModel(), sleep=slow_sleep, timeout_s=5, first_token_timeout_s=5
    )
    with pytest.raises(GatewayTimeout):
        await drain(backend)
    assert_probe_free(breakers)


async def test_probe_outcomes_close_or_reopen_the_circuit() -> None:
    clock = Clock()
    breakers = half_open_spare(clock)
    await drain(probe_chain(clock, breakers, ScriptedModel(("ok",))))
    assert breakers["spare"].state is State.CLOSED
    breakers = half_open_spare(clock)
    failing = ScriptedModel(fail_before=ServiceUnavailable("still down"))
    with pytest.raises(ServiceUnavailable):
        await drain(probe_chain(clock, breakers, failing))
    assert breakers["spare"].state is State.OPEN and not breakers["spare"].allow()
