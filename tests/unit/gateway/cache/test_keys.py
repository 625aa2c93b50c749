from __future__ import annotations

from typing import Any

from gateway.cache.keys import cache_key, deterministic, normalise
from schemas.openai import ChatCompletionRequest, CompletionRequest


def chat(*messages: tuple[str, str], **fields: Any) -> ChatCompletionRequest:
    body = {"model": "m", "temperature": 0, **fields}
    body["messages"] = [{"role": r, "content": c} for r, c in messages]
    return ChatCompletionRequest.model_validate(body)


def test_normalise_collapses_whitespace_and_keeps_case() -> None:
    assert normalise("  What  is\n the  US?  ") == "What is the US?"
    assert normalise("\uff46\uff55\uff4c\uff4c width") == "full width"  # NFKC: fullwidth


def test_same_question_same_keys_whatever_the_spacing() -> None:
    a = cache_key("t", "m", chat(("user", "Hi there")), 16)
    b = cache_key("t", "m", chat(("user", " Hi   there ")), 16)
    assert (a.partition, a.exact, a.query) == (b.partition, b.exact, "Hi there")


def test_tenant_and_model_are_separate_partitions() -> None:
    req = chat(("user", "Hi"))
    keys = {cache_key(t, m, req, 16).partition for t in ("a", "b") for m in ("m1", "m2")}
    assert len(keys) == 4


def test_everything_but_the_last_user_message_shapes_the_partition() -> None:
    base = cache_key("t", "m", chat(("system", "Be brief."), ("user", "Hi")), 16)
    other_system = cache_key("t", "m", chat(("system", "Be verbose."), ("user", "Hi")), 16)
    earlier = cache_key("t", "m", chat(("user", "A"), ("assistant", "B"), ("user", "Hi")), 16)
    sampled = cache_key("t", "m", chat(("system", "Be brief."), ("user", "Hi"), top_p=0.5), 16)
    stop = cache_key("t", "m", chat(("system", "Be brief."), ("user", "Hi"), stop=["."]), 16)
    partitions = {k.partition for k in (base, other_system, earlier, sampled, stop)}
    assert len(partitions) == 5
    # The last user message is the query, not part of the partition.
    other_query = cache_key("t", "m", chat(("system", "Be brief."), ("user", "Hello")), 16)
    assert other_query.partition == base.partition and other_query.exact != base.exact


def test_max_tokens_and_stream_do_not_split_entries() -> None:
    a = cache_key("t", "m", chat(("user", "Hi"), max_tokens=10), 10)
    b = cache_key("t", "m", chat(("user", "Hi"), stream=True), 64)
    assert a.exact == b.exact and (a.max_tokens, b.max_tokens) == (10, 64)


def test_chat_and_completions_never_share_entries() -> None:
    completion = CompletionRequest.model_validate({"model": "m", "prompt": "Hi", "temperature": 0})
    assert cache_key("t", "m", completion, 16).query == "Hi"
    assert (
        cache_key("t", "m", completion, 16).partition
        != cache_key("t", "m", chat(("user", "Hi")), 16).partition
    )


def test_no_semantic_query_without_a_trailing_user_text() -> None:
    prefix = cache_key("t", "m", chat(("user", "Hi"), ("assistant", "Hel")), 16)
    ids = CompletionRequest.model_validate({"model": "m", "prompt": [1, 2, 3], "temperature": 0})
    assert prefix.query is None and cache_key("t", "m", ids, 16).query is None


def test_deterministic_means_greedy_or_seeded() -> None:
    assert deterministic(chat(("user", "x")))
    assert deterministic(chat(("user", "x"), temperature=0.7, seed=3))
    assert not deterministic(chat(("user", "x"), temperature=0.7))
    assert not deterministic(chat(("user", "x"), temperature=None))
