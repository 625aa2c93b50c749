"""Prefix-affinity bookkeeping: chained block hashes and the longest known prefix."""

from deployments.prefix_affinity import PrefixIndex, block_hashes, rendezvous


def test_block_hashes_are_equal_exactly_for_equal_prefixes() -> None:
    turn1 = list(range(40))
    turn2 = turn1 + [99] * 30
    other = [7, *turn1[1:]]
    h1, h2, h3 = (block_hashes(ids, 16, 100) for ids in (turn1, turn2, other))
    assert len(h1) == 2 and len(h2) == 4  # only full blocks
    assert h2[:2] == h1  # the next turn extends the conversation's chain
    assert not set(h3) & set(h1)  # one token differs in the first block: nothing shared


def test_block_hashes_stop_at_the_prefix_bound() -> None:
    assert len(block_hashes(list(range(1000)), 16, 4)) == 4


def test_the_longest_known_prefix_wins_among_live_replicas() -> None:
    index = PrefixIndex(capacity=100)
    system = block_hashes(list(range(32)), 16, 100)
    conversation = block_hashes(list(range(64)), 16, 100)
    index.record(system, "r1")
    index.record(conversation, "r2")  # also takes over the shared system blocks
    assert index.longest_match(conversation, {"r1", "r2"}) == ("r2", 4)
    assert index.longest_match(block_hashes(list(range(48)), 16, 100), {"r1"}) == (None, 0)
    index.forget("r2")
    assert index.longest_match(conversation, {"r1", "r2"}) == (None, 0)


def test_capacity_evicts_the_least_recently_used_blocks() -> None:
    index = PrefixIndex(capacity=3)
    a, b = block_hashes(list(range(32)), 16, 100), block_hashes(list(range(100, 132)), 16, 100)
    index.record(a, "r1")
    index.record(b, "r2")  # 4 blocks > 3: a's first block goes
    assert index.longest_match(a, {"r1", "r2"}) == ("r1", 2)
    assert index.longest_match(a[:1], {"r1", "r2"}) == (None, 0)


def test_rendezvous_is_stable_and_moves_only_the_keys_of_a_leaving_replica() -> None:
    replicas = ["a", "b", "c"]
    owners = {k: rendezvous(f"conv-{k}", replicas) for k in range(300)}
    assert owners == {k: rendezvous(f"conv-{k}", list(reversed(replicas))) for k in range(300)}
    assert set(owners.values()) == set(replicas)  # spread over all of them
    after = {k: rendezvous(f"conv-{k}", ["a", "c"]) for k in range(300)}
    assert all(after[k] == owners[k] for k in owners if owners[k] != "b")
