"""Review 3: a message sent in several encrypted copies (one per blind recipient, one per
destination group) is checked and signed once, and each copy is encrypted only to its own
recipients (``agent.protect_copies``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from email.parser import BytesParser
from email.policy import SMTP
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from agent import AgentError, Code, Identity, Protected, protect, protect_copies
from tests.agent.conftest import World, build_world
from tests.agent.openssl import cms, cms_fails
from tests.agent.pki import NOW, KeyPool, make_ca, write_key, write_pem

SENDER = "alice@hisp.test"
TO = "bob@partner.test"
BCC = ("carol@partner.test", "erin@partner.test", "frank@partner.test")
MESSAGE = (
    b"From: Alice <alice@hisp.test>\r\n"
    b"To: bob@partner.test\r\n"
    b"Subject: Referral\r\n"
    b"Date: Mon, 01 Jun 2026 12:00:00 +0000\r\n"
    b"Message-ID: <copies-1@hisp.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"Patient summary attached.\r\n"
)


@dataclass
class Reader:
    address: str
    cert: Path
    key: Path


@dataclass
class Copies:
    world: World
    readers: dict[str, Reader]  # every recipient with a certificate (and key) of its own
    anchor: Path


@pytest.fixture(scope="module")
def copies_world(pool: KeyPool, tmp_path_factory: pytest.TempPathFactory) -> Copies:
    """The agent tests' PKI, with certificates of their own for erin and frank (carol has the
    partner domain's) in a world of this module's, so the session's world is left alone."""
    world = build_world(pool)
    folder = tmp_path_factory.mktemp("copies")
    pairs = {TO: (world.bob.certificate, world.bob.private_key())}
    pairs[BCC[0]] = (world.partner_domain.certificate, world.partner_domain.private_key())
    for slot, address in enumerate(BCC[1:], start=80):
        cert, key = world.leaf(email=address, slot=slot)
        world.resolver.by_address[address] = [cert]
        pairs[address] = (cert, key)
    readers = {
        address: Reader(
            address,
            write_pem(folder / f"{address}.pem", cert),
            write_key(folder / f"{address}.key", key),
        )
        for address, (cert, key) in pairs.items()
    }
    return Copies(world, readers, write_pem(folder / "anchor.pem", world.root.certificate))


def _counting_signer(world: World) -> tuple[World, list[int]]:
    """``world`` with alice's identity counting each use of her private key (one per
    signature: the agent asks for the key only to sign)."""
    uses: list[int] = []
    real = world.alice.private_key

    def private_key() -> rsa.RSAPrivateKey:
        uses.append(1)
        return real()

    counted: Identity = replace(world.alice, private_key=private_key)
    keys = replace(world.keys, signing={**world.keys.signing, SENDER: [counted]})
    return replace(world, keys=keys), uses


def _blind_copies() -> list[list[str]]:
    return [[TO], *([address] for address in BCC)]


def _signed_entity(copy: Protected, reader: Reader) -> bytes:
    assert copy.message is not None
    return cms("-decrypt", "-recip", reader.cert, "-inkey", reader.key, data=copy.message)


def _signature(signed_entity: bytes) -> bytes:
    entity = BytesParser(policy=SMTP).parsebytes(signed_entity)
    [signature] = [p for p in entity.iter_parts() if p.get_content_type().endswith("signature")]
    payload = signature.get_payload(decode=True)
    assert isinstance(payload, bytes) and payload
    return payload


def test_protect_copies_signs_once_for_every_copy(copies_world: Copies) -> None:
    world, uses = _counting_signer(copies_world.world)
    produced = list(
        protect_copies(MESSAGE, sender=SENDER, copies=_blind_copies(), env=world.env(), at=NOW)
    )
    assert [c.encrypted_to for c in produced] == [(TO,), *((a,) for a in BCC)]
    assert len(uses) == 1


def test_separate_protect_calls_sign_each_time(copies_world: Copies) -> None:
    # The counter counts: what outbound did before protect_copies signs once per copy.
    world, uses = _counting_signer(copies_world.world)
    for copy in _blind_copies():
        protect(MESSAGE, sender=SENDER, recipients=copy, env=world.env(), at=NOW)
    assert len(uses) == len(_blind_copies())


def test_every_copy_opens_for_its_own_recipient_only_and_carries_one_signature(
    copies_world: Copies,
) -> None:
    world = copies_world.world
    produced = list(
        protect_copies(MESSAGE, sender=SENDER, copies=_blind_copies(), env=world.env(), at=NOW)
    )
    readers = [copies_world.readers[address] for address in (TO, *BCC)]
    entities = []
    for copy, reader in zip(produced, readers, strict=True):
        entity = _signed_entity(copy, reader)
        content = cms(
            "-verify", "-purpose", "smimesign", "-CAfile", copies_world.anchor, data=entity
        )
        assert content.replace(b"\r\n", b"\n").endswith(MESSAGE.replace(b"\r\n", b"\n"))
        for other in readers:
            if other is not reader:
                assert cms_fails(
                    "-decrypt", "-recip", other.cert, "-inkey", other.key, data=copy.message
                ), (other.address, reader.address)
        entities.append(entity)
    # The same signature in every copy; PKCS#1 v1.5 signs deterministically, so only the
    # whole entity (its random boundary included) being the same shows it was built once.
    assert len({_signature(e) for e in entities}) == 1
    assert len(set(entities)) == 1
    # And the copies themselves differ: each has its own content-encryption key.
    assert len({c.message for c in produced}) == len(produced)


def test_each_copy_reports_its_refused_recipients_as_protect_does(
    copies_world: Copies, pool: KeyPool
) -> None:
    world = copies_world.world
    stranger_ca = make_ca("Stranger Root", pool.get(2048, 82))
    untrusted, _key = world.leaf(email="gus@elsewhere.test", slot=83, issuer=stranger_ca)
    world.resolver.by_address["gus@elsewhere.test"] = [untrusted]
    env = world.env()
    copies = [[TO, "nobody@nowhere.test"], ["gus@elsewhere.test"], [BCC[0]]]
    produced = list(protect_copies(MESSAGE, sender=SENDER, copies=copies, env=env, at=NOW))
    for copy, recipients in zip(produced, copies, strict=True):
        alone = protect(MESSAGE, sender=SENDER, recipients=recipients, env=env, at=NOW)
        assert copy.encrypted_to == alone.encrypted_to
        assert {r: (e.code, e.detail, e.permanent) for r, e in copy.rejected.items()} == {
            r: (e.code, e.detail, e.permanent) for r, e in alone.rejected.items()
        }
        assert copy.recipient_certificates == alone.recipient_certificates
        assert copy.recipient_anchors == alone.recipient_anchors
        assert copy.signer == alone.signer
    assert produced[0].rejected["nobody@nowhere.test"].code == Code.NO_RECIPIENT_CERTIFICATE
    assert produced[1].message is None
    assert produced[1].rejected["gus@elsewhere.test"].code == Code.UNTRUSTED_RECIPIENT


def test_a_message_no_copy_can_reach_is_never_signed(copies_world: Copies) -> None:
    world, uses = _counting_signer(copies_world.world)
    produced = list(
        protect_copies(
            MESSAGE,
            sender=SENDER,
            copies=[["nobody@nowhere.test"], ["noone@nowhere.test"]],
            env=world.env(),
            at=NOW,
        )
    )
    assert [c.message for c in produced] == [None, None]
    assert uses == []


def test_a_forged_from_is_refused_before_any_copy(copies_world: Copies) -> None:
    forged = MESSAGE.replace(b"From: Alice <alice@hisp.test>", b"From: mallory@hisp.test")
    with pytest.raises(AgentError) as caught:
        protect_copies(
            forged, sender=SENDER, copies=_blind_copies(), env=copies_world.world.env(), at=NOW
        )
    assert caught.value.code == Code.SENDER_MISMATCH


def test_a_copy_given_as_one_address_is_a_type_error(copies_world: Copies) -> None:
    with pytest.raises(TypeError, match="sequence of recipient addresses"):
        protect_copies(MESSAGE, sender=SENDER, copies=[TO], env=copies_world.world.env(), at=NOW)  # type: ignore[list-item]


def test_a_failure_of_one_copy_as_a_whole_rejects_its_recipients_and_the_rest_go_on(
    copies_world: Copies,
) -> None:
    # The key store cannot unwrap the sender's key this time (a real adapter may raise so):
    # every copy that needs the signature reports it, as separate protect calls would.
    world = copies_world.world

    def locked() -> rsa.RSAPrivateKey:
        raise AgentError(Code.NO_SENDER_KEY, "the sender's key could not be unwrapped")

    keys = replace(
        world.keys,
        signing={**world.keys.signing, SENDER: [replace(world.alice, private_key=locked)]},
    )
    copies = [[TO], ["nobody@nowhere.test"], [BCC[0]]]
    produced = list(
        protect_copies(
            MESSAGE, sender=SENDER, copies=copies, env=replace(world, keys=keys).env(), at=NOW
        )
    )
    assert [c.message for c in produced] == [None, None, None]
    assert [{r: e.code for r, e in c.rejected.items()} for c in produced] == [
        {TO: Code.NO_SENDER_KEY},
        {"nobody@nowhere.test": Code.NO_RECIPIENT_CERTIFICATE},
        {BCC[0]: Code.NO_SENDER_KEY},
    ]
