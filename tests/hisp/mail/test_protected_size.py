"""The size a message will have once signed and encrypted, known before it is accepted.

Partner HISPs take protected mail up to a size limit like our own HISP_MAX_MESSAGE_BYTES, and a
message grows by a third and more when protected (two base64 layers: the attachments, then the
envelope). The estimate is checked against the real agent, and a message that would not fit is
refused at once: ``552 5.3.4`` on the submission port (real SMTP, STARTTLS and AUTH on
loopback), a one-line error from ``manage.py send``; nothing is stored.
"""

from __future__ import annotations

import os
import smtplib
from collections.abc import Iterator

import pytest
from django.core.management import CommandError, call_command

from agent import protect
from hisp import mailtext
from hisp.agent_env import build_environment
from hisp.models import Delivery, MailboxEntry, Message
from hisp.services import compose, identity
from hisp.smtp import server, trace
from hisp.smtp.protocol import HispController
from tests.hisp.mail.conftest import HOSTED
from tests.support.services import free_port
from tests.support.services import unverified_tls as _tls

PASSWORD = "correct horse battery"
LIMIT = 2 * 1024 * 1024  # small enough to keep the SMTP tests fast
KB, MB = 1024, 1024 * 1024


def _attachment_message(sender: str, to: list[str], size: int) -> bytes:
    # Random bytes: what a scanned PDF or image is, and base64 leaves nothing to compress.
    return compose.build_message(
        sender=sender, to=to, subject="Imaging report", body_text="Please see the attached.",
        attachments=[("scan.pdf", "application/pdf", os.urandom(size))],
    )


def _estimate(raw: bytes, recipients: int) -> int:
    return compose.protected_size(
        len(raw), certificates=recipients, headers=len(mailtext.head_of(raw))
    )


def _wire(raw: bytes, sender: str, recipients: list[str]) -> bytes:
    from django.utils import timezone

    protected = protect(
        raw, sender=sender, recipients=recipients, env=build_environment(), at=timezone.now()
    )
    assert protected.message is not None and not protected.rejected
    assert len(protected.encrypted_to) == len(recipients)
    return protected.message


# --- The estimate against the real agent --------------------------------------------------------


@pytest.fixture
def colleagues(world) -> list[str]:
    """Hosted recipients, each with an address-bound certificate of their own from our CA: one
    RecipientInfo each (our signer's certificate and chain are the real ones too)."""
    more = [
        identity.add_address(f"{name}@{HOSTED}", name=name.title(), address_cert=True).address
        for name in ("carol", "dan")
    ]
    return [world.bob.address, *more]


@pytest.mark.parametrize("size", [1 * KB, 100 * KB, 1 * MB, 5 * MB, 20 * MB])
@pytest.mark.parametrize("recipients", [1, 3])
def test_the_estimate_is_never_below_the_real_protected_size(world, colleagues, size, recipients):
    to = colleagues[:recipients]
    raw = _attachment_message(world.alice.address, to, size)
    wire = _wire(raw, world.alice.address, to)
    estimate = _estimate(raw, recipients)
    assert estimate >= len(wire)
    # Conservative, not wasteful: a few KB per recipient and the signature, nothing more.
    assert estimate - len(wire) < 40 * KB + recipients * 2 * KB


def _long_name(role: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    text = "Regional Health Information Exchange of the Northern Counties"  # 62 of 64 allowed
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, text),
        x509.NameAttribute(NameOID.LOCALITY_NAME, text),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, text),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, text),
        x509.NameAttribute(NameOID.COMMON_NAME, f"{role} Certification Authority"),
    ])


def _ca(role: str, key, issuer=None):
    from datetime import timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from tests.agent.pki import CA, NOW

    name = _long_name(role)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.certificate.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=30))
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(issuer.key if issuer else key, hashes.SHA256())
    )
    return CA(cert, key)


def test_the_estimate_holds_for_large_keys_long_names_and_a_deep_chain():
    """The costliest certificates a partner may publish, built with the agent tests' PKI:
    4096-bit keys, long issuer names (~300 bytes), two certificates per recipient (a rollover)
    and a signer whose chain has two intermediates: each RecipientInfo and each certificate in
    the signature is larger than with our own CA."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.agent.pki import (
        NOW,
        MemoryAnchors,
        MemoryIssuers,
        MemoryKeys,
        MemoryResolver,
        environment,
        make_leaf,
    )
    from tests.agent.pki import identity as agent_identity

    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    root = _ca("Root", key)
    middle = _ca("Policy", key, issuer=root)
    issuing = _ca("Issuing", key, issuer=middle)
    sender = "alice@hisp.test"
    keys, resolver = MemoryKeys(), MemoryResolver()
    chain = (issuing.certificate, middle.certificate)
    keys.add(sender, agent_identity(make_leaf(issuing, key, email=sender), key, chain))
    recipients = [f"doc{i}@partner.test" for i in range(3)]
    for rcpt in recipients:
        resolver.by_address[rcpt] = [make_leaf(issuing, key, email=rcpt) for _ in range(2)]
    env = environment(
        keys, resolver, MemoryAnchors(outgoing={"hisp.test": [root.certificate]}),
        issuers=MemoryIssuers([issuing.certificate, middle.certificate]),
    )
    certificates = compose.certificates_for(recipients)
    assert certificates == 2 * len(recipients)
    for size in (1 * KB, 1 * MB):
        raw = _attachment_message(sender, recipients, size)
        protected = protect(raw, sender=sender, recipients=recipients, env=env, at=NOW)
        assert protected.message is not None, protected.rejected
        assert sum(map(len, protected.recipient_certificates.values())) == certificates
        assert _estimate(raw, certificates) >= len(protected.message)


def test_the_largest_plaintext_is_the_last_size_that_fits(settings):
    settings.HISP_MAX_MESSAGE_BYTES = LIMIT
    for certificates in (1, 2, 200):
        largest = compose.largest_plaintext(certificates=certificates)
        assert compose.protected_size(largest, certificates=certificates) <= LIMIT
        assert compose.protected_size(largest + 1, certificates=certificates) > LIMIT
    # Protection adds about 37%: a 2 MB limit leaves about 1.4 MB of plaintext.
    assert 1.4 * MB < compose.largest_plaintext() < 1.5 * MB
    settings.HISP_MAX_MESSAGE_BYTES = 25 * MB
    assert 18 * MB < compose.largest_plaintext() < 18.5 * MB
    settings.HISP_MAX_MESSAGE_BYTES = 1000
    assert compose.largest_plaintext() == 0


# --- Refused before anything is stored ----------------------------------------------------------


def _plain(sender: str, size: int, *, to: str = "carol@partner.example.net") -> bytes:
    """A message of exactly ``size`` bytes with CRLF line ends (with its Message-ID and Date:
    the submission port adds nothing that would make it larger)."""
    head = (
        f"From: Alice <{sender}>\r\nTo: {to}\r\nSubject: results\r\n"
        f"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{size:012d}@laptop.example>\r\n\r\n"
    ).encode()
    lines, rest = divmod(size - len(head), 78)
    if rest == 1:  # no line is 1 byte: one line is made a byte longer instead
        lines, rest = lines - 1, 79
    body = (b"x" * 76 + b"\r\n") * lines + (b"y" * (rest - 2) + b"\r\n" if rest else b"")
    raw = head + body
    assert len(raw) == size
    return raw


def _allowance(raw_for_size) -> int:
    """The largest size of this shape of message that fits (its header section is fixed)."""
    head = mailtext.head_of(raw_for_size(10 * KB))
    return compose.largest_plaintext(
        certificates=compose.certificates_for(["carol@partner.example.net"]), headers=len(head)
    )


@pytest.fixture
def small_submission(settings, transactional_db) -> Iterator[HispController]:
    from django.core.cache import cache

    cache.clear()  # the AUTH failure counters live in the cache
    settings.HISP_MAX_MESSAGE_BYTES = LIMIT
    controller = server.submission(bind="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def _signed_in(controller: HispController, login: str) -> smtplib.SMTP:
    client = smtplib.SMTP(controller.hostname, controller.port, timeout=30)
    client.ehlo("laptop")
    client.starttls(context=_tls())
    client.ehlo("laptop")
    client.login(login, PASSWORD)
    return client


def test_submission_refuses_a_message_just_over_the_allowance_with_552_534(
    small_submission, alice
):
    allowance = _allowance(lambda n: _plain(alice.address, n))
    over = _plain(alice.address, allowance + 1)
    with _signed_in(small_submission, alice.address) as client:
        client.mail(alice.address)
        client.rcpt("carol@partner.example.net")
        code, reply = client.data(over)
    assert (code, reply[:5]) == (552, b"5.3.4")
    text = reply.decode()
    assert "over the 2 MB limit" in text and "1 KB over" in text, text
    assert not Message.objects.exists()
    assert not MailboxEntry.objects.exists() and not Delivery.objects.exists()


def test_submission_accepts_a_message_just_under_the_allowance(small_submission, alice):
    # Less the room kept for the listener's Received stamp, signed with the message.
    allowance = _allowance(lambda n: _plain(alice.address, n)) - trace.MAX_BYTES
    with _signed_in(small_submission, alice.address) as client:
        client.mail(alice.address)
        client.rcpt("carol@partner.example.net")
        code, reply = client.data(_plain(alice.address, allowance))
    assert code == 250, reply
    assert len(Message.objects.get().raw) == allowance


def test_submission_advertises_the_plaintext_allowance_as_its_size(small_submission, alice):
    with _signed_in(small_submission, alice.address) as client:
        advertised = int(client.esmtp_features["size"])
        assert advertised == compose.largest_plaintext(
            certificates=compose.CERTIFICATES_PER_RECIPIENT
        ) - trace.MAX_BYTES
        assert 1.3 * MB < advertised < LIMIT
        # RFC 1870 6.1: a declared size over it is refused at MAIL, before any data is sent.
        code, reply = client.mail(alice.address, [f"SIZE={advertised + 1}"])
        assert (code, reply[:5]) == (552, b"5.3.4")
        assert b"exceed the 2 MB limit" in reply
        assert client.mail(alice.address, [f"SIZE={advertised}"])[0] == 250


def test_other_submission_errors_keep_550_571(small_submission, alice, bob):
    with _signed_in(small_submission, alice.address) as client:
        client.mail(alice.address)
        client.rcpt("carol@partner.example.net")
        code, reply = client.data(_plain(bob.address, 1 * KB))
    assert (code, reply[:5]) == (550, b"5.7.1")


def test_backbone_still_advertises_the_whole_limit(settings, transactional_db):
    settings.HISP_MAX_MESSAGE_BYTES = LIMIT
    controller = server.backbone(bind="127.0.0.1", port=free_port())
    controller.start()
    try:
        with smtplib.SMTP(controller.hostname, controller.port, timeout=10) as client:
            client.ehlo("partner")
            assert int(client.esmtp_features["size"]) == LIMIT
    finally:
        controller.stop()


def test_submit_refuses_before_storing_and_names_the_limit(world, settings):
    settings.HISP_MAX_MESSAGE_BYTES = LIMIT
    raw = _attachment_message(world.alice.address, [world.bob.address], 1100 * KB)
    with pytest.raises(compose.MessageTooLarge, match=r"over the 2 MB limit") as refused:
        compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")
    assert " MB" in str(refused.value).split("limit")[0]
    assert not Message.objects.exists()


def test_submit_counts_every_recipient_at_one_domain(world, settings):
    """One envelope per destination domain carries a RecipientInfo per certificate: a hundred
    recipients there need more room than one."""
    settings.HISP_MAX_MESSAGE_BYTES = LIMIT
    one = compose.largest_plaintext(certificates=compose.certificates_for(["a@partner.test"]))
    many = [f"doc{i}@partner.test" for i in range(100)]
    assert compose.largest_plaintext(certificates=compose.certificates_for(many)) < one - 100 * KB
    mixed = [*many[:10], *(f"doc@other{i}.test" for i in range(50))]
    assert compose.certificates_for(mixed) == 10 * compose.CERTIFICATES_PER_RECIPIENT


def test_manage_py_send_gives_the_same_clear_error(world, settings, tmp_path):
    settings.HISP_MAX_MESSAGE_BYTES = LIMIT
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(os.urandom(1100 * KB))
    with pytest.raises(CommandError, match=r"too large.*over the 2 MB limit"):
        call_command("send", "--from", world.alice.address, "--to", world.bob.address,
                     "--subject", "Imaging", "--attach", str(scan))
    assert not Message.objects.exists()
