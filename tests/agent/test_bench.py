"""The benchmark's own parts: its test world round-trips and it reads `openssl speed`."""

from __future__ import annotations

import platform

import pytest

from agent import bench, protect, unprotect


def test_bench_world_round_trips_a_10k_message() -> None:
    world = bench._World()
    message = bench.message_of(10 * 1024)
    assert 10_000 <= len(message) <= 10 * 1024
    protected = protect(
        message, sender=bench.SENDER, recipients=[bench.RECIPIENT], env=world.env, at=bench.AT
    )
    assert protected.message is not None
    result = unprotect(protected.message, recipients=[bench.RECIPIENT], env=world.env, at=bench.AT)
    assert result.message == message and result.delivered


def test_bench_reads_the_rsa_bound_from_openssl_speed() -> None:
    assert bench.rsa_bound(1) > 100


@pytest.mark.skipif(platform.machine() != "x86_64", reason="OPENSSL_ia32cap is x86 only")
def test_bench_finds_the_system_cpu_capability_mask() -> None:
    caps = bench.system_ia32cap()
    assert caps is not None and caps.startswith("0x")
