"""Hostile bytes where the trust code reads them: certificates in a message, CRLs and OCSP answers
from the network. Only typed outcomes: AgentError or a RevocationStatus, never another exception.
"""

from __future__ import annotations

import itertools
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.errors import AgentError
from agent.trust import HttpRevocationChecker, validate_signer
from agent.trust.algorithms import PARSE_ERRORS
from agent.types import RevocationStatus
from tests.agent.trust.pki import NOW, Responder, crl, issue

SENDER = "alice@sender.example"
_paths = itertools.count()


def flip(data: bytes, positions: list[int]) -> bytes:
    out = bytearray(data)
    for p in positions:
        out[p % len(out)] ^= 1 << (p % 8)
    return bytes(out)


mutations = st.lists(st.integers(min_value=0, max_value=1 << 20), min_size=1, max_size=4)
fuzz = settings(
    # TRUST_FUZZ_EXAMPLES raises the count for a longer local run; CI keeps the suite fast.
    max_examples=int(os.environ.get("TRUST_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@fuzz
@given(positions=mutations, cut=st.integers(min_value=0, max_value=2000))
def test_mutated_signer_certificate_gives_only_typed_errors(keys, root, make_env, positions, cut):
    der = issue("Alice", key=keys.leaf, issuer=root, emails=[SENDER]).public_bytes(
        serialization.Encoding.DER
    )
    mutated = flip(der, positions)
    if cut % 3 == 0:  # a third of the cases are truncated as well
        mutated = mutated[: cut % len(mutated)]
    try:
        certificate = x509.load_der_x509_certificate(mutated)
    except PARSE_ERRORS:  # InvalidVersion is not a ValueError
        return  # the message layer reports undecodable certificates itself
    env = make_env(incoming={"receiver.example": [root.certificate]})
    try:
        validate_signer(
            certificate, [], sender=SENDER, recipient_domain="receiver.example", env=env, at=NOW
        )
    except AgentError:
        pass


@fuzz
@given(positions=mutations)
def test_mutated_crl_never_crashes_or_revokes(keys, root, server, positions):
    path = f"/fuzz/{next(_paths)}.crl"
    cert = issue("Leaf", key=keys.leaf, issuer=root, crl_url=server.url(path))
    server.serve(path, flip(crl(root), positions))
    status = HttpRevocationChecker(allow_private_networks=True).status(cert, root.certificate, NOW)
    assert status in (RevocationStatus.GOOD, RevocationStatus.UNAVAILABLE)


@fuzz
@given(positions=mutations)
def test_mutated_ocsp_answer_never_crashes_or_revokes(keys, root, server, positions):
    path = f"/fuzz/ocsp-{next(_paths)}"
    cert = issue("Leaf", key=keys.leaf, issuer=root, ocsp_url=server.url(path))
    server.routes[path] = lambda body: (200, flip(Responder(root).answer(body), positions))
    status = HttpRevocationChecker(allow_private_networks=True).status(cert, root.certificate, NOW)
    assert status in (RevocationStatus.GOOD, RevocationStatus.UNAVAILABLE)
