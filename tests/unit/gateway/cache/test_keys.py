from __future__ import annotations

from typing import Any

from gateway.cache.keys import cache_key, deterministic
from schemas.openai import ChatCompletionRequest, CompletionRequest


def chat(*messages: tuple[str, Any], **fields: Any) -> ChatCompletionRequest:
    body = {"model": "m", "temperature": 0, **fields}
    body["messages"] = [{"role": r, "content": c} for r, c in messages]
    return ChatCompletionRequest.model_validate(body)


def exact(req: ChatCompletionRequest | CompletionRequest) -> str:
    return cache_key("t", "m", req, 16).exact


def test_texts_that_differ_in_any_character_have_different_exact_keys() -> None:
    # each pair tokenizes apart, so the model may answer each differently
    pairs = [
        ("Simplify x\u00b2 + x\u00b2", "Simplify x2 + x2"),  # NFKC would merge these
        ("Rename the \ufb01le", "Rename the file"),  # the ligature fi
        ("Sum \uff11\uff12", "Sum 12"),  # full-width digits
        ("Caf\u00e9?", "Cafe\u0301?"),  # precomposed and combining accent (NFC)
        ("Hi there", "Hi there "),  # a trailing space
        ("a  b", "a b"),
        ("What is the US?", "What is the us?"),
    ]
    for a, b in pairs:
        assert exact(chat(("user", a))) != exact(chat(("user", b))), (a, b)
        completion_a = CompletionRequest.model_validate({"model": "m", "prompt": a})
        completion_b = CompletionRequest.model_validate({"model": "m", "prompt": b})
        assert exact(completion_a) != exact(completion_b), (a, b)


def test_code_differing_only_in_indentation_is_other_code() -> None:
    nested = "Is this right?\nfor x in xs:\n    if x:\n        f(x)\n    g(x)"
    flat = "Is this right?\nfor x in xs:\n    if x:\n        f(x)\n        g(x)"
    assert exact(chat(("user", nested))) != exact(chat(("user", flat)))
    # and as an earlier turn, where it shapes the partition
    context = [("user", nested), ("assistant", "Yes."), ("user", "Why?")]
    other = [("user", flat), ("assistant", "Yes."), ("user", "Why?")]
    assert cache_key("t", "m", chat(*context), 16).partition != (
        cache_key("t", "m", chat(*other), 16).partition
    )


def test_the_same_text_shares_one_entry() -> None:
    text = "  How do I\treset my password?\n"
    a = cache_key("t", "m", chat(("user", text)), 16)
    b = cache_key("t", "m", chat(("user", text)), 16)
    assert (a.partition, a.exact, a.query) == (b.partition, b.exact, text)
    # content parts are joined into the one text the template reads
    halves = [
        {"type": "text", "text": "  How do I"},
        {"type": "text", "text": "\treset my password?\n"},
    ]
    assert cache_key("t", "m", chat(("user", halves)), 16).exact == a.exact


def test_blank_queries_are_exact_only() -> None:
    key = cache_key("t", "m", chat(("user", "  \n")), 16)
    assert key.query is None and key.exact != exact(chat(("user", " ")))


def test_earlier_tool_calls_and_object_order_shape_the_partition() -> None:
    def called(arguments: str) -> ChatCompletionRequest:
        call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
        messages = [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "user", "content": "And tomorrow?"},
        ]
        return ChatCompletionRequest.model_validate(
            {"model": "m", "temperature": 0, "messages": messages}
        )

    paris, rome = called('{"city": "Paris"}'), called('{"city": "Rome"}')
    assert cache_key("t", "m", paris, 16).partition != cache_key("t", "m", rome, 16).partition
    # the template renders parsed arguments: spacing inside the JSON is the same call
    assert cache_key("t", "m", called('{"city":"Paris"}'), 16) == cache_key("t", "m", paris, 16)
    ab = called('{"a": 1, "b": 2}')
    assert cache_key("t", "m", ab, 16) != cache_key("t", "m", called('{"b": 2, "a": 1}'), 16)

    def schema(properties: dict[str, Any]) -> ChatCompletionRequest:
        fmt = {
            "type": "json_schema",
            "json_schema": {"name": "s", "schema": {"type": "object", "properties": properties}},
        }
        return chat(("user", "Describe Paris."), response_format=fmt)

    city, pop = {"type": "string"}, {"type": "integer"}
    assert cache_key("t", "m", schema({"city": city, "pop": pop}), 16).partition != (
        cache_key("t", "m", schema({"pop": pop, "city": city}), 16).partition
    )


def test_tenant_and_model_are_separate_partitions() -> None:
    req = chat(("user", "Hi"))
    keys = {cache_key(t, m, req, 16).partition for t in ("a", "b") for m in ("m1", "m2")}
    assert len(keys) == 4


def test_a_key_name_gives_the_key_its_own_partition() -> None:
    req = chat(("user", "Hi"))
    shared = cache_key("t", "m", req, 16)
    a, b = (cache_key("t", "m", req, 16, key_name=k) for k in ("a", "b"))
    assert len({shared.partition, a.partition, b.partition}) == 3
    assert len({shared.exact, a.exact, b.exact}) == 3
    assert cache_key("t", "m", req, 16, key_name="a") == a


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
