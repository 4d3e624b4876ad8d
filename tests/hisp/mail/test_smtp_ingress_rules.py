"""More negative cases for both listeners (issue 6), each asserting its specific reply code:
SMTP smuggling variants, the reply after a failed commit, idle timeouts, path limits, and the
submission port's STARTTLS / AUTH / sequence rules."""

from __future__ import annotations

import base64
import smtplib
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.db import connection

from hisp.models import AuditEvent, Message
from hisp.smtp import server
from hisp.smtp.protocol import IDLE_TIMEOUT, smtp_options
from tests.hisp.mail.conftest import HOSTED, _start
from tests.hisp.mail.test_ingress import MESSAGE, _client, _raw_session, _say
from tests.hisp.mail.test_submission import PASSWORD, _message
from tests.hisp.mail.test_submission import _client as submission_client

# Every way a lone CR or LF can sit next to the dot (CVE-2023-51764 and relatives). None of
# them may end DATA: only <CRLF>.<CRLF> does (RFC 5321 section 4.1.1.4).
SMUGGLING = [b"\n.\r\n", b"\r\n.\n", b"\n.\n", b"\r.\r\n", b"\r\n.\r", b"\r.\n", b"\r.\r"]
SMUGGLED = (
    b"MAIL FROM:<evil@partner.example.net>\r\nRCPT TO:<bob@hospital.example.org>\r\n"
    b"DATA\r\nsmuggled\r\n"
)


@pytest.mark.parametrize("sequence", SMUGGLING, ids=[repr(s) for s in SMUGGLING])
def test_smuggling_sequence_never_ends_data_on_the_backbone(backbone, bob, sequence):
    with _client(backbone) as client:
        client.mail("doc@partner.example.net")
        client.rcpt(bob.address)
        assert client.docmd("DATA")[0] == 354
        client.send(b"Subject: x\r\n\r\nhello" + sequence + SMUGGLED + b".\r\n")
        code, reply = client.getreply()
        # Had the smuggled commands run, their replies would come next instead of NOOP's.
        after = client.noop()
    assert (code, reply[:5]) == (550, b"5.6.0")
    assert after == (250, b"OK")
    assert Message.objects.count() == 0


def test_smuggling_sequence_never_ends_data_on_submission(submission, alice):
    with submission_client(submission) as client:
        client.login(alice.address, PASSWORD)
        client.mail(alice.address)
        client.rcpt("carol@partner.example.net")
        assert client.docmd("DATA")[0] == 354
        client.send(_message(alice.address).rstrip(b"\r\n") + b"\r.\n" + SMUGGLED + b".\r\n")
        code, reply = client.getreply()
        after = client.noop()
    assert (code, reply[:5]) == (550, b"5.6.0")
    assert after == (250, b"OK")
    assert Message.objects.count() == 0


@contextmanager
def _refusing_inserts() -> Iterator[None]:
    """The database refuses new messages (a real trigger: full disk, lost primary...)."""
    if connection.vendor == "postgresql":
        create = [
            "CREATE FUNCTION hisp_test_refuse() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'refused by test'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER hisp_test_refuse BEFORE INSERT ON hisp_message "
            "FOR EACH ROW EXECUTE FUNCTION hisp_test_refuse()",
        ]
        drop = ["DROP TRIGGER hisp_test_refuse ON hisp_message",
                "DROP FUNCTION hisp_test_refuse()"]
    else:
        create = [
            "CREATE TRIGGER hisp_test_refuse BEFORE INSERT ON hisp_message "
            "BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
        ]
        drop = ["DROP TRIGGER hisp_test_refuse"]
    with connection.cursor() as cursor:
        for statement in create:
            cursor.execute(statement)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            for statement in drop:
                cursor.execute(statement)


def test_failed_commit_answers_451_and_stores_nothing(backbone, bob):
    """250 only after the commit: when the store fails the sender gets a 4xx and retries."""
    with _client(backbone) as client:
        client.mail("doc@partner.example.net")
        client.rcpt(bob.address)
        with _refusing_inserts():
            code, reply = client.data(MESSAGE)
        assert (code, reply[:5]) == (451, b"4.3.0")
        assert Message.objects.count() == 0
        assert not AuditEvent.objects.filter(action="message.received").exists()
        # The same session can try again once the database is back.
        client.mail("doc@partner.example.net")
        client.rcpt(bob.address)
        code, reply = client.data(MESSAGE)
    assert code == 250
    assert str(Message.objects.get().pk).encode() in reply


def test_idle_timeout_is_at_least_five_minutes_by_default(settings):
    assert IDLE_TIMEOUT >= 300  # RFC 5321 section 4.5.3.2.7
    assert smtp_options()["timeout"] == IDLE_TIMEOUT


def test_idle_session_mid_transaction_gets_421_and_stores_nothing(transactional_db, bob):
    for controller in _start(server.backbone, timeout=0.5):
        sock = _raw_session(controller)
        try:
            _say(sock, b"EHLO partner.example.net\r\n")
            _say(sock, b"MAIL FROM:<doc@partner.example.net>\r\n")
            _say(sock, f"RCPT TO:<{bob.address}>\r\n".encode())
            assert _say(sock, b"DATA\r\n").startswith(b"354")
            sock.sendall(b"Subject: half a message\r\n")
            sock.settimeout(5)
            assert sock.recv(1024).startswith(b"421 4.4.2 ")
            assert sock.recv(1024) == b""
        finally:
            sock.close()
    assert Message.objects.count() == 0


def test_idle_submission_session_gets_421(transactional_db, alice):
    for controller in _start(server.submission, timeout=0.5):
        sock = _raw_session(controller)
        try:
            sock.settimeout(5)
            assert sock.recv(1024).startswith(b"421 4.4.2 ")
        finally:
            sock.close()


def test_command_with_a_bare_cr_inside_is_not_executed(backbone, bob):
    sock = _raw_session(backbone)
    try:
        assert _say(sock, b"EHLO partner.example.net\r\n").startswith(b"250")
        reply = _say(sock, b"NOOP\rMAIL FROM:<doc@partner.example.net>\r\n")
        assert reply.startswith(b"500")
        assert _say(sock, f"RCPT TO:<{bob.address}>\r\n".encode()).startswith(b"503")
    finally:
        sock.close()


def test_recipient_path_over_rfc_limit_is_501(backbone, bob):
    with _client(backbone) as client:
        client.mail("doc@partner.example.net")
        code, reply = client.rcpt("bob@" + ".".join(["a" * 60] * 4) + "." + HOSTED)
    assert (code, reply[:5]) == (501, b"5.1.3")


def test_sender_local_part_over_64_octets_is_553(backbone, bob):
    with _client(backbone) as client:
        code, reply = client.mail("x" * 65 + "@partner.example.net")
    assert (code, reply[:5]) == (553, b"5.1.3")


def test_rset_clears_the_transaction_so_data_is_503(backbone, bob):
    with _client(backbone) as client:
        client.mail("doc@partner.example.net")
        client.rcpt(bob.address)
        assert client.rset()[0] == 250
        assert client.docmd("DATA")[0] == 503
        assert client.rcpt(bob.address)[0] == 503
    assert Message.objects.count() == 0


def test_bdat_chunking_is_not_offered_so_it_cannot_bypass_data_checks(backbone, bob):
    with _client(backbone) as client:
        assert not client.has_extn("chunking")
        client.mail("doc@partner.example.net")
        client.rcpt(bob.address)
        code, _ = client.docmd("BDAT", "10 LAST")
    assert code == 500
    assert Message.objects.count() == 0


# --- submission ----------------------------------------------------------------------------


def test_submission_mail_before_starttls_is_530(submission, alice):
    with submission_client(submission, tls=False) as client:
        assert not client.has_extn("auth")  # no AUTH offered in clear text (RFC 4954 4)
        code, _ = client.mail(alice.address)
    assert code == 530


def test_submission_rcpt_and_data_before_starttls_are_530(submission, alice):
    with submission_client(submission, tls=False) as client:
        assert client.rcpt("carol@partner.example.net")[0] == 530
        assert client.docmd("DATA")[0] == 530


def test_submission_unknown_mechanism_is_504(submission, alice):
    with submission_client(submission) as client:
        code, reply = client.docmd("AUTH", "CRAM-MD5")
    assert (code, reply[:5]) == (504, b"5.5.4")


def test_submission_mechanism_name_is_case_insensitive(submission, alice):
    token = base64.b64encode(f"\0{alice.address}\0{PASSWORD}".encode()).decode()
    with submission_client(submission) as client:
        code, _ = client.docmd("AUTH", "plain " + token)
    assert code == 235


def test_submission_undecodable_plain_response_is_501(submission, alice):
    with submission_client(submission) as client:
        code, reply = client.docmd("AUTH", "PLAIN not*base64")
    assert (code, reply[:5]) == (501, b"5.5.2")


def test_submission_plain_response_without_two_nuls_is_501(submission, alice):
    token = base64.b64encode(b"just-a-password").decode()
    with submission_client(submission) as client:
        code, reply = client.docmd("AUTH", "PLAIN " + token)
    assert (code, reply[:5]) == (501, b"5.5.2")


def test_submission_auth_login_with_wrong_password_is_535(submission, alice):
    with submission_client(submission) as client:
        client.user, client.password = alice.address, "wrong password"
        with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
            client.auth("LOGIN", client.auth_login, initial_response_ok=False)
    assert failure.value.smtp_code == 535
    assert failure.value.smtp_error[:5] == b"5.7.8"


def test_submission_failures_from_one_client_throttle_every_login(submission, alice):
    """Guessing across many logins from one address is throttled too (454 4.7.0)."""
    for n in range(5):
        with submission_client(submission) as client:
            client.user, client.password = f"guess{n}@{HOSTED}", "guess"
            with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
                client.auth("PLAIN", client.auth_plain)  # one attempt (login() tries two)
            assert failure.value.smtp_code == 535
    with submission_client(submission) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
            client.login(alice.address, PASSWORD)
    assert (failure.value.smtp_code, failure.value.smtp_error[:5]) == (454, b"4.7.0")


def test_submission_second_auth_is_503(submission, alice):
    with submission_client(submission) as client:
        client.login(alice.address, PASSWORD)
        token = base64.b64encode(f"\0{alice.address}\0{PASSWORD}".encode()).decode()
        code, _ = client.docmd("AUTH", "PLAIN " + token)
    assert code == 503


def test_submission_commands_out_of_sequence_are_503(submission, alice):
    with submission_client(submission) as client:
        client.login(alice.address, PASSWORD)
        assert client.rcpt("carol@partner.example.net")[0] == 503
        assert client.docmd("DATA")[0] == 503
        client.mail(alice.address)
        assert client.docmd("DATA")[0] == 503
        assert client.mail(alice.address)[0] == 503


def test_submission_size_over_limit_is_552(settings, transactional_db, alice):
    from django.core.cache import cache

    cache.clear()
    settings.HISP_MAX_MESSAGE_BYTES = 1000
    for controller in _start(server.submission):
        with submission_client(controller) as client:
            client.login(alice.address, PASSWORD)
            assert client.mail(alice.address, ["SIZE=5000"])[0] == 552
            client.mail(alice.address)
            client.rcpt("carol@partner.example.net")
            code, _ = client.data(_message(alice.address) + (b"x" * 70 + b"\r\n") * 30)
    assert code == 552
    assert Message.objects.count() == 0


def test_submission_recipient_without_domain_is_553(submission, alice):
    with submission_client(submission) as client:
        client.login(alice.address, PASSWORD)
        client.mail(alice.address)
        code, reply = client.rcpt("carol")
    assert (code, reply[:5]) == (553, b"5.1.3")


def test_submission_command_ending_in_bare_lf_is_not_executed(submission, alice):
    with submission_client(submission) as client:
        client.login(alice.address, PASSWORD)
        client.send(f"MAIL FROM:<{alice.address}>\n".encode())
        assert client.getreply()[0] == 500
        assert client.rcpt("carol@partner.example.net")[0] == 503

