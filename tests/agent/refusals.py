"""Refusals of hostile input whose cost the agent bounds: the reason shows which limit caught
the input (a stopwatch would be a timed test, and flaky on a busy machine); a generous time
bound still catches a limit that stopped working as a hang."""

from __future__ import annotations

import time

import pytest

from agent import AgentError, Code, unprotect
from tests.agent.conftest import World
from tests.agent.pki import NOW

BOB = "bob@partner.test"
HANG = 10.0  # seconds: before the limits these inputs cost from 2 s to minutes of CPU


def refused_as_malformed(raw: bytes, world: World, *, because: str) -> None:
    started = time.perf_counter()
    with pytest.raises(AgentError) as caught:
        unprotect(raw, recipients=[BOB], env=world.env(), at=NOW)
    assert caught.value.code is Code.MALFORMED
    assert because in caught.value.detail
    assert time.perf_counter() - started < HANG
