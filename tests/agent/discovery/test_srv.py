"""RFC 2782 ordering of SRV targets, with the random source injected."""

from __future__ import annotations

import random
from collections import Counter

from agent.discovery.srv import SrvTarget, order_targets


def target(host: str, priority: int, weight: int) -> SrvTarget:
    return SrvTarget(host=host, port=389, priority=priority, weight=weight)


class Lowest(random.Random):
    """Always draws the smallest number allowed: the draw most likely to pick weight 0."""

    def randint(self, a: int, b: int) -> int:
        return a


def test_lower_priority_number_comes_first_whatever_the_weights() -> None:
    records = [target("b", 10, 100), target("a", 0, 0), target("c", 20, 1)]
    for seed in range(20):
        assert [t.host for t in order_targets(records, rng=random.Random(seed))] == ["a", "b", "c"]


def test_weight_zero_never_beats_a_weighted_record_of_the_same_priority() -> None:
    records = [target("zero", 0, 0), target("hundred", 0, 100)]
    assert [t.host for t in order_targets(records, rng=Lowest())] == ["hundred", "zero"]
    for seed in range(200):
        assert order_targets(records, rng=random.Random(seed))[0].host == "hundred"


def test_weights_share_the_first_place_in_proportion() -> None:
    records = [target("light", 0, 10), target("heavy", 0, 90)]
    rng = random.Random(1234)
    firsts = Counter(order_targets(records, rng=rng)[0].host for _ in range(2000))
    assert 1650 < firsts["heavy"] < 1950
    assert firsts["light"] > 50


def test_every_record_is_kept_once() -> None:
    records = [target(f"h{i}", i % 3, i * 7 % 5) for i in range(12)]
    ordered = order_targets(records, rng=random.Random(7))
    assert sorted(t.host for t in ordered) == sorted(t.host for t in records)
    assert [t.priority for t in ordered] == sorted(t.priority for t in records)


def test_all_zero_weights_are_all_tried() -> None:
    records = [target("a", 0, 0), target("b", 0, 0), target("c", 0, 0)]
    assert {t.host for t in order_targets(records, rng=random.Random(3))} == {"a", "b", "c"}
