"""The learned threshold of verified semantic hits: bins, the bound, the choice."""

from __future__ import annotations

import pytest

from gateway.cache.verified import Evidence, bin_of, choose, error_bound, learned_threshold


def evidence(*outcomes: tuple[float, int, int]) -> Evidence:
    """(similarity, agreements, disagreements) triples."""
    e = Evidence()
    for similarity, agree, disagree in outcomes:
        for _ in range(agree):
            e.add(similarity, True)
        for _ in range(disagree):
            e.add(similarity, False)
    return e


def test_the_bound_is_clopper_pearson() -> None:
    assert error_bound(0, 299, 0.95) < 0.01 < error_bound(0, 298, 0.95)  # 1 - 0.05 ** (1/n)
    assert error_bound(0, 0, 0.95) == 1.0 and error_bound(5, 5, 0.95) == 1.0
    assert error_bound(10, 1000, 0.95) > 0.01  # ten in a thousand is not "at most 1%"


def test_no_threshold_until_enough_agreements() -> None:
    assert learned_threshold(Evidence(), 0.01, 0.95) is None
    assert learned_threshold(evidence((0.99, 298, 0)), 0.01, 0.95) is None
    assert learned_threshold(evidence((0.99, 299, 0)), 0.01, 0.95) == 0.99


def test_the_threshold_is_the_lowest_edge_that_keeps_the_bound() -> None:
    seen = evidence((0.99, 400, 0), (0.95, 100, 0), (0.93, 5, 3), (0.90, 0, 50))
    assert learned_threshold(seen, 0.01, 0.95) == 0.95  # 0.93's disagreements break it
    assert learned_threshold(seen, 0.05, 0.95) == 0.93  # a looser bound reaches lower
    assert learned_threshold(evidence((0.99, 400, 10)), 0.01, 0.95) is None


def test_counts_round_trip_through_redis_fields() -> None:
    fields: dict[str, int] = {}
    for similarity, agreed in ((0.971, True), (0.972, True), (0.93, False)):
        name = Evidence.field(similarity, agreed)
        fields[name] = fields.get(name, 0) + 1
    assert Evidence.from_counts({k: str(v) for k, v in fields.items()}).bins == {
        bin_of(0.971): (2, 0),
        bin_of(0.93): (0, 1),
    }


@pytest.mark.parametrize(
    ("similarity", "threshold", "draw", "expected"),
    [
        (0.97, None, 0.9, "verify"),  # nothing learned yet
        (0.94, 0.95, 0.9, "verify"),  # below the learned threshold
        (0.95, 0.95, 0.9, "serve"),
        (0.99, 0.95, 0.01, "verify"),  # the share still verified above it
    ],
)
def test_choose(similarity: float, threshold: float | None, draw: float, expected: str) -> None:
    assert choose(similarity, threshold, verify_share=0.05, draw=draw) == expected


def test_bins_clip() -> None:
    assert bin_of(1.0) == bin_of(0.999) and bin_of(-0.2) == 0
