"""The discovery benchmark runs end to end against its own named and slapd."""

from __future__ import annotations

import pytest

from hisp.bench import discovery
from tests.support.services import require_binary

pytestmark = pytest.mark.services


def test_benchmark_reports_cached_rate_and_cold_latencies() -> None:
    require_binary("named", discovery.NAMED)
    require_binary("slapd", discovery.SLAPD)
    result = discovery.run(seconds=0.2, samples=3)
    assert "error" not in result
    assert isinstance(result["cached_lookups_per_s"], int) and result["cached_lookups_per_s"] > 0
    through_redis = result["cached_lookups_redis"]
    assert isinstance(through_redis, dict)
    if "skipped" not in through_redis:  # the production cache: near cache in front of Redis
        for figures in through_redis.values():
            assert figures["per_s"] > 0 and figures["ratio_to_target"] > 0
    for key in ("cold_dns_cert_lookup", "cold_ldap_lookup_including_dns_misses"):
        latency = result[key]
        assert isinstance(latency, dict) and latency["samples"] == 3 and latency["max_ms"] > 0
