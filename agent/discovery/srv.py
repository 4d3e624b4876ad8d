"""Ordering SRV targets as RFC 2782 says: by priority, then a weighted random pick."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby


@dataclass(frozen=True)
class SrvTarget:
    host: str  # absolute name without the trailing dot
    port: int
    priority: int
    weight: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def order_targets(records: Sequence[SrvTarget], *, rng: random.Random) -> list[SrvTarget]:
    """The order in which to try ``records``.

    RFC 2782: lower priority first; within one priority, repeatedly pick a record at random with
    probability proportional to its weight. The RFC's running-sum draw over [0, sum] still gives
    a weight-0 record a 1/(sum+1) chance to win over weighted ones; we draw from [1, sum] so
    weight-0 records come only after every weighted record (its own reading: weight 0 is for
    "no server selection", and DCDT case D16 requires the weight-100 server to be used).
    """
    ordered: list[SrvTarget] = []
    by_priority = sorted(records, key=lambda record: record.priority)
    for _, group in groupby(by_priority, key=lambda record: record.priority):
        remaining = list(group)
        while remaining:
            total = sum(record.weight for record in remaining)
            if total == 0:
                rng.shuffle(remaining)
                ordered.extend(remaining)
                break
            draw = rng.randint(1, total)
            running = 0
            for index, record in enumerate(remaining):
                running += record.weight
                if running >= draw:
                    ordered.append(remaining.pop(index))
                    break
    return ordered
