"""Issuing from a CA that has expired: a clear refusal, never a builder's ValueError (a 500 in
the console) and never a certificate that ends before it begins."""

from __future__ import annotations

from datetime import timedelta

import pytest

from hisp.ca import authority
from hisp.certificates import load
from hisp.models import Address, Certificate, Domain
from hisp.services import pki


def test_renewing_under_an_expired_ca_is_refused_with_the_reason(
    alice: Address, provider: Domain
) -> None:
    row = Certificate.objects.get(address=alice)
    expired = load(provider.issuing_ca).not_valid_after_utc
    count = Certificate.objects.count()
    with pytest.raises(pki.PkiError, match=(
            f"the issuing CA expired on {expired:%Y-%m-%d %H:%M} UTC: replace it first")):
        pki.renew(row, at=expired + timedelta(days=1))
    row.refresh_from_db()
    assert row.superseded_by_id is None and Certificate.objects.count() == count


def test_issuing_at_the_moment_the_ca_expires_is_refused(provider: Domain) -> None:
    ca = provider.issuing_ca
    with pytest.raises(authority.CAError, match="the issuing CA expired"):
        authority.issue(ca, binding=Certificate.Binding.DOMAIN, name=provider.name,
                        domain=provider, at=load(ca).not_valid_after_utc)


def test_issuing_a_minute_before_the_ca_expires_is_refused_with_the_cure(provider: Domain) -> None:
    # A certificate that would live a minute is no certificate (tests/hisp/pki/test_ca_near_end.py).
    ca = provider.issuing_ca
    end = load(ca).not_valid_after_utc
    with pytest.raises(authority.CAError, match="roll the CA over first"):
        authority.issue(ca, binding=Certificate.Binding.DOMAIN, name=provider.name,
                        domain=provider, at=end - timedelta(minutes=1))
