"""Submission port findings of the security review: AUTH throttling is keyed by the account,
not by how its name was typed; a submission is audited with the client's address."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.cache import cache

from hisp.models import AuditEvent, Message
from hisp.smtp import credentials
from tests.hisp.mail.test_submission import _client, _message

PASSWORD = "correct horse battery"


def test_login_name_variants_share_one_failure_counter(db):
    cache.clear()
    get_user_model().objects.create_user(username="alice@direct.example", password=PASSWORD)
    # Each try from a different client address, so only the per-login counter can stop them.
    variants = ["alice@direct.example", " alice@direct.example", "alice@direct.example ",
                "  alice@direct.example", "ALICE@direct.example\t"]
    for n, login in enumerate(variants):
        assert credentials.check(login, "wrong", client=f"192.0.2.{n}").user is None
    outcome = credentials.check("alice@direct.example", PASSWORD, client="192.0.2.200")
    assert outcome.throttled and outcome.user is None
    cache.clear()


def test_a_submission_is_audited_with_the_client_address(submission, alice):
    with _client(submission) as client:
        client.login(alice.address, PASSWORD)
        client.mail(alice.address)
        client.rcpt("carol@partner.example.net")
        code, _ = client.data(_message(alice.address))
    assert code == 250
    event = AuditEvent.objects.get(action="message.submitted")
    assert event.client_address == "127.0.0.1"
    assert event.actor_label == alice.address


def test_a_second_author_in_the_from_field_is_refused(db):
    import pytest

    from hisp.models import Address, Domain
    from hisp.services.compose import SubmissionError, submit

    domain = Domain.objects.create(name="direct.example")
    Address.objects.create(address="alice@direct.example", domain=domain)
    for from_field in (b"alice@direct.example, eve@evil.example",
                       b"alice@direct.example <eve@evil.example>"):
        raw = (b"From: " + from_field + b"\r\nTo: carol@partner.example.net\r\n"
               b"Subject: hi\r\n\r\nbody\r\n")
        with pytest.raises(SubmissionError, match="From header must be"):
            submit(address="alice@direct.example", raw=raw, actor="test", peer="test")
    ok = b"From: Alice <alice@direct.example>\r\nTo: carol@partner.example.net\r\n\r\nbody\r\n"
    submit(address="alice@direct.example", raw=ok, actor="test", peer="test")
    assert Message.objects.count() == 1


def test_a_sender_field_naming_someone_else_is_refused(db):
    import pytest

    from hisp.models import Address, Domain
    from hisp.services.compose import SubmissionError, submit

    domain = Domain.objects.create(name="direct.example")
    Address.objects.create(address="alice@direct.example", domain=domain)
    head = b"From: alice@direct.example\r\nTo: carol@partner.example.net\r\n"
    for sender_field in (b"eve@evil.example", b"alice@direct.example, eve@evil.example", b""):
        raw = head + b"Sender: " + sender_field + b"\r\nSubject: hi\r\n\r\nbody\r\n"
        with pytest.raises(SubmissionError, match="Sender header, when present, must be"):
            submit(address="alice@direct.example", raw=raw, actor="test", peer="test")
    ok = head + b"Sender: Alice <ALICE@direct.example>\r\n\r\nbody\r\n"
    submit(address="alice@direct.example", raw=ok, actor="test", peer="test")
    assert Message.objects.count() == 1


def test_an_address_literal_recipient_is_refused(db):
    import pytest

    from hisp.models import Address, Domain
    from hisp.services.compose import SubmissionError, build_message, submit

    domain = Domain.objects.create(name="direct.example")
    Address.objects.create(address="alice@direct.example", domain=domain)
    for rcpt in ("bob@[127.0.0.1]", "bob@[IPv6:::1]"):
        raw = build_message(sender="alice@direct.example", to=["carol@partner.example.net"],
                            subject="hi", body_text="body")
        with pytest.raises(SubmissionError, match="not a Direct address"):
            submit(address="alice@direct.example", raw=raw, actor="test", peer="test",
                   recipients=[rcpt])
    assert not Message.objects.exists()


def test_a_display_name_with_a_comma_or_accents_still_passes_the_from_check(db):
    from hisp.models import Address, Domain
    from hisp.services.compose import build_message, submit

    domain = Domain.objects.create(name="direct.example")
    Address.objects.create(address="alice@direct.example", domain=domain)
    for name in ("Smith, Alice", "Zoë Ångström, MD"):
        raw = build_message(sender="alice@direct.example", sender_name=name,
                            to=["carol@partner.example.net"], subject="hi", body_text="body")
        submit(address="alice@direct.example", raw=raw, actor="test", peer="test")
    assert Message.objects.count() == 2
