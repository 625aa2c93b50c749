from __future__ import annotations

import pytest

from gateway.cache.config import Guard
from gateway.cache.decision import Candidate, decide, failed_guard, names, numbers, tokens

ALL: list[Guard] = ["negation", "numbers", "entities", "contrast"]


@pytest.mark.parametrize(
    ("stored", "asked", "guard"),
    [
        ("Can I get a refund?", "Can I not get a refund?", "negation"),
        ("Why does my card work?", "Why doesn't my card work?", "negation"),
        ("Why does my card work?", "Why doesn’t my card work?", "negation"),  # noqa: RUF001
        ("Tea with sugar", "Tea without sugar", "negation"),
        ("Where is order 12345?", "Where is order 12346?", "numbers"),
        ("A table for two", "A table for 4", "numbers"),
        ("From 3 to 5", "From 5 to 3", "numbers"),
        ("What is the capital of France?", "What is the capital of Germany?", "entities"),
        ("Flights from Paris to London", "Flights from London to Paris", "entities"),
        ("Who runs IBM?", "Who runs the company?", "entities"),
        ("Should I buy Tesla stock?", "Should I sell Tesla stock?", "contrast"),
        ("Eat before a run", "Eat after a run", "contrast"),
    ],
)
def test_near_misses_fail_a_guard(stored: str, asked: str, guard: Guard) -> None:
    assert failed_guard(asked, stored, ALL) == guard


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("How do I reset my password?", "How can I reset my password?"),
        ("What is the capital of France?", "Tell me France's capital."),
        ("Paris weather today?", "What's the weather in Paris today?"),  # sentence-initial name
        ("Order 12,345 is late", "order 12345 is late"),
        ("Why doesn't my card work?", "Why is my card not working?"),
        ("I need two tickets", "I need 2 tickets"),
    ],
)
def test_paraphrases_pass_every_guard(stored: str, asked: str) -> None:
    assert failed_guard(asked, stored, ALL) is None


def test_guards_can_be_switched_off() -> None:
    assert failed_guard("Can I not get a refund?", "Can I get a refund?", []) is None
    assert failed_guard("Where is order 2?", "Where is order 3?", ["negation"]) is None


def test_token_features() -> None:
    toks = tokens("Is NASA in Texas? Yes. Two rockets, 3.5 tons")
    assert names(toks) == {"nasa", "texas"}  # "Is", "Yes", "Two" start sentences
    assert numbers(toks) == [2.0, 3.5]


def test_decide_serves_the_most_similar_candidate_that_passes() -> None:
    candidates = [
        Candidate(1, 0.95, "Can I not get a refund?"),  # closest, but a near miss
        Candidate(2, 0.91, "Can I get my refund?"),
        Candidate(3, 0.97, "Can I never get a refund?"),
    ]
    decision = decide("Can I get a refund?", candidates, 0.9, ALL)
    assert decision.chosen is not None and decision.chosen.entry_id == 2
    assert decision.best_similarity == 0.97
    assert decision.rejected_by == ["negation", "negation"]


def test_decide_respects_the_threshold() -> None:
    decision = decide("Hi", [Candidate(1, 0.89, "Hi")], 0.9, ALL)
    assert decision.chosen is None and decision.best_similarity == 0.89
    assert decide("Hi", [], 0.9, ALL).best_similarity is None
