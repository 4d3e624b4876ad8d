"""SignedData as written by ``agent.cms.sign``: canonical DER, and per-signer pieces that are
encoded once and reused never leak from one signer (or chain, or digest) into another."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from asn1crypto import cms as asn1_cms

from agent.cms import sign, verify
from agent.types import DEFAULT_POLICY, Digest
from tests.agent.conftest import World

CONTENT = [b"Content-Type: message/rfc822\r\n\r\n", b"From: alice@hisp.test\r\n\r\nhello\r\n"]


@pytest.mark.parametrize("digest", list(Digest))
@pytest.mark.parametrize(
    "at",
    [datetime(2026, 6, 1, 12, 0, 5, tzinfo=UTC), datetime(2050, 1, 1, tzinfo=UTC)],
    ids=["utc-time", "generalized-time"],
)
@pytest.mark.parametrize("detached", [True, False], ids=["detached", "encapsulated"])
def test_sign_writes_canonical_der_that_asn1crypto_reencodes_identically(
    world: World, digest: Digest, at: datetime, detached: bool
) -> None:
    out = sign(
        CONTENT,
        certificate=world.alice.certificate,
        key=world.alice.private_key(),
        chain=world.alice.chain,
        digest=digest,
        at=at,
        detached=detached,
    )
    parsed = asn1_cms.ContentInfo.load(out)
    signed_data = parsed["content"]
    # Certificates are carried byte for byte as issued, so only what sign() writes is re-encoded.
    for field in ("version", "digest_algorithms", "encap_content_info", "signer_infos"):
        written = bytes(signed_data[field].dump())
        assert signed_data[field].dump(force=True) == written, field
    info = signed_data["signer_infos"][0]
    assert info["digest_algorithm"]["algorithm"].native == digest.value
    times = [
        a["values"][0].native for a in info["signed_attrs"] if a["type"].native == "signing_time"
    ]
    assert times == [at]


def test_signing_in_turn_as_different_signers_embeds_each_ones_own_certificates(
    world: World,
) -> None:
    at = datetime(2026, 6, 1, tzinfo=UTC)
    cases = [
        (world.alice, world.alice.chain, Digest.SHA256),
        (world.hisp_domain, world.hisp_domain.chain, Digest.SHA384),
        (world.alice, (), Digest.SHA512),
        (world.alice, world.alice.chain, Digest.SHA256),
    ]
    for ident, chain, digest in cases:
        out = sign(
            CONTENT,
            certificate=ident.certificate,
            key=ident.private_key(),
            chain=chain,
            digest=digest,
            at=at,
        )
        result = verify(out, detached=b"".join(CONTENT), policy=DEFAULT_POLICY)
        assert result.signer == ident.certificate
        assert result.certificates == tuple(chain)
        assert result.digest == digest.value
