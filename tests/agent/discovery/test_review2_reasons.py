"""When discovery ends in a transient error, the error still names the certificates the earlier
levels returned and the agent passed over, so staff can see why mail waits (an expired
address-bound certificate, then a directory that cannot be reached) rather than only the part
that failed.
"""

from __future__ import annotations

import pytest

from agent.errors import Code
from tests.agent.discovery.conftest import Pki
from tests.agent.discovery.test_dcdt import der, ldap_records, refuse
from tests.agent.trust.pki import authority, closed_port_url
from tests.support.bind import BindServer, cert_record

pytestmark = pytest.mark.services


def test_a_transient_failure_keeps_the_certificates_earlier_levels_passed_over(
    named: BindServer, pki: Pki
) -> None:
    expired = pki.leaf(address="bob@passedover.test", expired=True)
    dead = int(closed_port_url("/").rsplit(":", 1)[1].split("/")[0])
    named.serve_zone(
        "passedover.test",
        [cert_record("bob", der(expired)), *ldap_records(("dead", dead, 0, 0))],
    )
    error, resolver = refuse(named, pki, "bob@passedover.test")
    assert error.code is Code.NO_RECIPIENT_CERTIFICATE
    assert error.permanent is False
    assert "LDAP unreachable" in error.detail
    assert resolver.levels[0].certificates == (expired,)
    assert f"dns address: serial {expired.serial_number:x}" in error.detail
    # And the agent's own verdict on it, not only the resolver's list of what it passed over.
    verdict = f"certificate serial {expired.serial_number:x}: "
    assert verdict in error.detail
    assert "expired" in error.detail.split(verdict)[1]


def test_a_transient_failure_after_an_untrusted_certificate_says_untrusted(
    named: BindServer, pki: Pki
) -> None:
    """A certificate found but chaining to no anchor of ours, then a directory that cannot be
    reached: the sender is told the certificate is not trusted (a hold says 4.7.11, and trusting
    its CA is what releases it), not that none was found; the search still counts as
    unfinished."""
    stranger = authority("Stranger CA", key=pki.key)
    untrusted = pki.leaf(address="ann@untrusted-then-down.test", issuer=stranger)
    dead = int(closed_port_url("/").rsplit(":", 1)[1].split("/")[0])
    named.serve_zone(
        "untrusted-then-down.test",
        [cert_record("ann", der(untrusted)), *ldap_records(("dead", dead, 0, 0))],
    )
    error, _ = refuse(named, pki, "ann@untrusted-then-down.test")
    assert error.code is Code.UNTRUSTED_RECIPIENT
    assert error.permanent is False
    assert "LDAP unreachable" in error.detail
    assert f"certificate serial {untrusted.serial_number:x}: " in error.detail
