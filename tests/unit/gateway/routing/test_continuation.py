"""A stream whose model fails after its first token goes on on a model with the same
weights (ChainBackend._continued, gateway.routing.continuation), or ends as before."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.routing.breaker import Breakers, State
from gateway.routing.config import BreakerConfig, RoutingConfig
from gateway.routing.continuation import Progress
from gateway.routing.fallback import ChainBackend, ChainEvents, Link
from gateway.routing.planner import RoutePlanner
from gateway.targets import LLMTarget
from schemas.errors import ServiceUnavailable
from schemas.generation import GenerationChunk, GenerationRequest, SamplingOptions
from tests.fakes import ScriptedModel, WordCounter

SAMPLING = SamplingOptions(max_tokens=8, temperature=0.0, seed=7, stop=["\n\n"], min_tokens=3)
REQUEST = GenerationRequest("r1", SAMPLING, prompt_token_ids=[1, 2, 3])
A, B = ord("a"), ord("b")  # the ids ScriptedModel gives the pieces "a" and "b"


async def same(request: GenerationRequest) -> GenerationRequest:
    return request


class Events:
    def __init__(self) -> None:
        self.continued: list[tuple[str, str]] = []
        self.fallbacks: list[tuple[str, str]] = []

    def chain(self) -> ChainEvents:
        return ChainEvents(
            fallback=lambda a, b: self.fallbacks.append((a, b)),
            continued=lambda a, b: self.continued.append((a, b)),
        )


def chain(
    links: list[tuple[str, ScriptedModel, str]],
    events: Events,
    breakers: Breakers | None = None,
    **config: object,
) -> ChainBackend:
    """A chain of (model id, model, weights)."""
    settings = RoutingConfig.model_validate({"backoff_s": 0, **config})
    return ChainBackend(
        [Link(name, model, same, weights) for name, model, weights in links],
        settings,
        breakers or Breakers(settings.breaker),
        events.chain(),
    )


async def drain(backend: ChainBackend) -> list[GenerationChunk]:
    started = await backend.start(REQUEST)
    return [chunk async for chunk in started.chunks()]


def dies_after_two() -> ScriptedModel:
    return ScriptedModel(("a", "b", "c", "d"), fail_after=2, prompt_tokens=3, replica="main-1")


async def test_a_stream_goes_on_on_the_next_model_with_the_same_weights() -> None:
    events = Events()
    breakers = Breakers(BreakerConfig(failure_threshold=1))
    heir = ScriptedModel(("c", "d"), prompt_tokens=5, replica="spare-1")
    backend = chain([("main", dies_after_two(), "w"), ("spare", heir, "w")], events, breakers)
    chunks = await drain(backend)
    assert "".join(c.text for c in chunks) == "abcd"  # one stream, nothing lost or repeated
    assert [c.completion_tokens for c in chunks] == [1, 2, 3, 4]  # across both engines
    assert {c.prompt_tokens for c in chunks} == {3}  # the original prompt, counted once
    assert [c.finish_reason for c in chunks] == [None, None, None, "stop"]
    assert [c.replica for c in chunks] == ["main-1", None, None, None]
    # the heir got the prompt and the tokens so far as ids, and the rest of max_tokens
    expected = replace(SAMPLING, max_tokens=6, min_tokens=1)
    assert heir.calls == [replace(REQUEST, prompt_token_ids=[1, 2, 3, A, B], sampling=expected)]
    assert events.continued == [("main", "spare")]
    assert breakers["main"].state is State.OPEN  # the dead model's failure still counts
    assert breakers["spare"].state is State.CLOSED


async def test_no_continuation_on_other_weights() -> None:
    events = Events()
    breakers = Breakers(BreakerConfig(failure_threshold=1))
    other = ScriptedModel(("c", "d"))
    backend = chain([("main", dies_after_two(), "w"), ("other", other, "w2")], events, breakers)
    with pytest.raises(RuntimeError, match="mid-stream"):
        await drain(backend)
    assert other.calls == [] and events.continued == []
    assert breakers["main"].state is State.OPEN


async def test_a_model_with_other_weights_is_skipped_for_a_later_one_with_the_same() -> None:
    events = Events()
    other, heir = ScriptedModel(("x",)), ScriptedModel(("c", "d"))
    links = [("main", dies_after_two(), "w"), ("other", other, "w2"), ("heir", heir, "w")]
    chunks = await drain(chain(links, events))
    assert "".join(c.text for c in chunks) == "abcd"
    assert other.calls == [] and events.continued == [("main", "heir")]


async def test_continue_streams_off_ends_the_stream_as_before() -> None:
    events, heir = Events(), ScriptedModel(("c", "d"))
    backend = chain(
        [("main", dies_after_two(), "w"), ("spare", heir, "w")], events, continue_streams=False
    )
    with pytest.raises(RuntimeError, match="mid-stream"):
        await drain(backend)
    assert heir.calls == []


async def test_an_heir_that_fails_too_ends_the_stream_with_the_first_failure() -> None:
    events = Events()
    breakers = Breakers(BreakerConfig(failure_threshold=1))
    heir = ScriptedModel(fail_before=ServiceUnavailable("also down"))
    backend = chain([("main", dies_after_two(), "w"), ("spare", heir, "w")], events, breakers)
    got: list[str] = []
    with pytest.raises(RuntimeError, match="mid-stream"):
        async for chunk in (await backend.start(REQUEST)).chunks():
            got.append(chunk.text)
    assert got == ["a", "b"] and len(heir.calls) == 1 and events.continued == []
    assert breakers["main"].state is State.OPEN and breakers["spare"].state is State.OPEN


async def test_a_continuation_that_does_not_fit_the_heir_is_not_sent() -> None:
    events = Events()
    heir = ScriptedModel(("c", "d"), context=8)  # 5 ids + 6 tokens left do not fit
    backend = chain([("main", dies_after_two(), "w"), ("spare", heir, "w")], events)
    with pytest.raises(RuntimeError, match="mid-stream"):
        await drain(backend)
    assert heir.calls == []


async def test_the_planner_continues_streams_on_fallbacks_of_the_same_weights() -> None:
    shared = WordCounter()
    main, heir, other = dies_after_two(), ScriptedModel(("c", "d")), ScriptedModel(("x",))
    targets = {
        "main": LLMTarget(main, shared, weights="models/m"),
        "heir": LLMTarget(heir, shared, weights="models/m"),
        "other": LLMTarget(other, shared, weights="models/other"),
    }
    config = RoutingConfig(fallbacks={"main": ["other", "heir"]}, backoff_s=0)
    routed = await RoutePlanner(targets, {}, config).route("main", REQUEST, lambda _: True)
    started = await routed.chain.start(routed.request)
    assert "".join([c.text async for c in started.chunks()]) == "abcd"
    assert other.calls == [] and len(heir.calls) == 1


def test_nothing_to_carry_on_without_token_ids_or_room() -> None:
    no_ids = Progress.of(REQUEST, GenerationChunk("a", 3, 1))  # a chunk without its ids
    assert no_ids.continuation() is None
    full = Progress.of(replace(REQUEST, sampling=SamplingOptions(max_tokens=1)), chunk_of("a"))
    assert full.continuation() is None  # max_tokens reached
    unbounded = Progress.of(replace(REQUEST, sampling=SamplingOptions()), chunk_of("a"))
    continuation = unbounded.continuation()
    assert continuation is not None and continuation.sampling.max_tokens is None


def chunk_of(text: str) -> GenerationChunk:
    return GenerationChunk(text, 3, 1, token_ids=(ord(text),))
