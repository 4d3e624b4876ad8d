"""Backbone ingress: the SMTP rules other HISPs meet, over real sockets with smtplib."""

from __future__ import annotations

import smtplib
import socket
import ssl

import pytest

from hisp.models import Address, AuditEvent, Message
from hisp.smtp import server
from tests.hisp.mail.conftest import HOSTED, _start

MESSAGE = (
    b"From: doc@partner.example.net\r\nTo: bob@hospital.example.org\r\n"
    b"Subject: hello\r\nMessage-ID: <m1@partner.example.net>\r\n\r\n"
    b"..leading dot\r\nbody\r\n"
)


def _client(controller) -> smtplib.SMTP:
    client = smtplib.SMTP(controller.hostname, controller.port, timeout=10)
    client.ehlo("partner.example.net")
    return client


def _raw_session(controller) -> socket.socket:
    sock = socket.create_connection((controller.hostname, controller.port), timeout=10)
    sock.recv(1024)
    return sock


def _say(sock: socket.socket, line: bytes) -> bytes:
    """Send one line and read the whole (possibly multi-line) reply."""
    sock.sendall(line)
    data = b""
    while True:
        data += sock.recv(4096)
        last = data.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1]
        if data.endswith(b"\r\n") and last[3:4] == b" ":
            return last


def test_data_is_stored_byte_for_byte_with_envelope_before_250(backbone, bob):
    with _client(backbone) as client:
        client.mail("doc@partner.example.net")
        client.rcpt(bob.address)
        code, reply = client.data(MESSAGE)
    assert code == 250
    stored = Message.objects.get()
    assert stored.direction == Message.Direction.INBOUND
    assert stored.state == Message.State.RECEIVED
    assert bytes(stored.raw) == MESSAGE  # smtplib dot-stuffs, aiosmtpd unstuffs
    assert stored.envelope_from == "doc@partner.example.net"
    assert stored.envelope_to == [bob.address]
    assert str(stored.pk).encode() in reply
    assert AuditEvent.objects.filter(action="message.received", object_id=str(stored.pk)).exists()


def test_rcpt_unknown_user_is_550_5_1_1(backbone, bob):
    with _client(backbone) as client:
        client.mail("doc@partner.example.net")
        code, reply = client.rcpt(f"nobody@{HOSTED}")
    assert (code, reply[:5]) == (550, b"5.1.1")


def test_rcpt_inactive_address_is_550_5_1_1(backbone, bob):
    Address.objects.filter(pk=bob.pk).update(status=Address.Status.DISABLED)
    with _client(backbone) as client:
        client.mail("doc@partner.example.net")
        code, reply = client.rcpt(bob.address)
    assert (code, reply[:5]) == (550, b"5.1.1")


def test_rcpt_other_domain_is_refused_as_relaying(backbone, bob):
    with _client(backbone) as client:
        client.mail("doc@partner.example.net")
        code, reply = client.rcpt("someone@elsewhere.example.com")
    assert (code, reply[:5]) == (550, b"5.7.1")
    assert Message.objects.count() == 0


def test_size_over_limit_is_552(settings, transactional_db, bob):
    settings.HISP_MAX_MESSAGE_BYTES = 1000
    for controller in _start(server.backbone):
        with _client(controller) as client:
            assert "1000" in client.esmtp_features["size"]
            client.mail("doc@partner.example.net")
            client.rcpt(bob.address)
            code, _ = client.data(MESSAGE + (b"x" * 70 + b"\r\n") * 30)
    assert code == 552
    assert Message.objects.count() == 0


def test_size_declared_in_mail_from_over_limit_is_552(settings, transactional_db, bob):
    settings.HISP_MAX_MESSAGE_BYTES = 1000
    for controller in _start(server.backbone):
        with _client(controller) as client:
            code, _ = client.mail("doc@partner.example.net", ["SIZE=5000"])
    assert code == 552


def test_bare_lf_in_data_is_refused(backbone, bob):
    with _client(backbone) as client:
        client.mail("doc@partner.example.net")
        client.rcpt(bob.address)
        client.send(b"DATA\r\n")
        assert client.getreply()[0] == 354
        client.send(b"Subject: x\r\n\r\nline one\nline two\r\n.\r\n")
        code, reply = client.getreply()
    assert (code, reply[:5]) == (550, b"5.6.0")
    assert Message.objects.count() == 0


def test_bare_cr_in_data_is_refused(backbone, bob):
    with _client(backbone) as client:
        client.mail("doc@partner.example.net")
        client.rcpt(bob.address)
        client.send(b"DATA\r\n")
        client.getreply()
        client.send(b"Subject: x\r\n\r\nline one\rline two\r\n.\r\n")
        code, _ = client.getreply()
    assert code == 550
    assert Message.objects.count() == 0


def test_smtp_smuggling_sequence_does_not_end_data(backbone, bob):
    """<LF>.<CR><LF> is not the end of DATA: the smuggled MAIL FROM never becomes a command,
    and the whole message is refused for its bare LF."""
    with _client(backbone) as client:
        client.mail("doc@partner.example.net")
        client.rcpt(bob.address)
        client.send(b"DATA\r\n")
        client.getreply()
        client.send(
            b"Subject: x\r\n\r\nhello\n.\r\nMAIL FROM:<evil@partner.example.net>\r\n"
            b"RCPT TO:<bob@hospital.example.org>\r\nDATA\r\nsmuggled\r\n.\r\n"
        )
        code, _ = client.getreply()
    assert code == 550
    assert Message.objects.count() == 0


def test_command_ending_in_bare_lf_is_not_executed(backbone, bob):
    sock = _raw_session(backbone)
    try:
        assert _say(sock, b"EHLO partner.example.net\r\n").startswith(b"250")
        reply = _say(sock, b"MAIL FROM:<doc@partner.example.net>\n")
        assert reply.startswith(b"500")
        # Still no sender: RCPT is out of sequence.
        assert _say(sock, b"RCPT TO:<bob@hospital.example.org>\r\n").startswith(b"503")
    finally:
        sock.close()


def test_commands_out_of_sequence_are_503(backbone, bob):
    with _client(backbone) as client:
        assert client.rcpt(bob.address)[0] == 503
        assert client.docmd("DATA")[0] == 503
        client.mail("doc@partner.example.net")
        assert client.mail("doc@partner.example.net")[0] == 503


def test_mail_before_helo_is_503(backbone, bob):
    sock = _raw_session(backbone)
    try:
        assert _say(sock, b"MAIL FROM:<doc@partner.example.net>\r\n").startswith(b"503")
    finally:
        sock.close()


def test_local_part_over_64_octets_is_refused(backbone, bob):
    with _client(backbone) as client:
        client.mail("doc@partner.example.net")
        code, _ = client.rcpt("x" * 65 + f"@{HOSTED}")
    assert code == 553


def test_path_over_rfc_limit_is_refused(backbone, bob):
    with _client(backbone) as client:
        code, reply = client.mail("doc@" + "a" * 60 + "." + "b" * 60 + "." + "c" * 60 + "." +
                                  "d" * 60 + ".example")
    assert (code, reply[:5]) == (501, b"5.1.3")


def test_command_line_over_512_octets_is_refused(backbone, bob):
    with _client(backbone) as client:
        code, _ = client.docmd("NOOP " + "x" * 600)
    assert code == 500


def test_text_line_over_1000_octets_is_refused(backbone, bob):
    with _client(backbone) as client:
        client.mail("doc@partner.example.net")
        client.rcpt(bob.address)
        code, _ = client.data(b"Subject: x\r\n\r\n" + b"y" * 1200 + b"\r\n")
    assert code == 500
    assert Message.objects.count() == 0


def test_more_than_100_recipients_is_452(backbone, bob):
    with _client(backbone) as client:
        client.mail("doc@partner.example.net")
        codes = [client.rcpt(bob.address)[0] for _ in range(101)]
    assert codes[:100] == [250] * 100
    assert codes[100] == 452


def test_starttls_is_offered_and_works(backbone, bob):
    with _client(backbone) as client:
        assert client.has_extn("starttls")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        assert client.starttls(context=context)[0] == 220
        client.ehlo("partner.example.net")
        client.mail("doc@partner.example.net")
        client.rcpt(bob.address)
        assert client.data(MESSAGE)[0] == 250
    assert Message.objects.count() == 1


def test_idle_session_is_closed(transactional_db, bob):
    for controller in _start(server.backbone, timeout=0.5):
        sock = _raw_session(controller)
        try:
            sock.settimeout(5)
            assert sock.recv(1024).startswith(b"421 4.4.2 ")  # RFC 5321 3.8: why, then close
            assert sock.recv(1024) == b""  # the server hung up
        finally:
            sock.close()


def test_self_signed_certificate_is_generated_once(settings, tmp_path):
    from hisp import tls

    settings.DATA_DIR = tmp_path
    settings.HISP_TLS_CERT_FILE = str(tmp_path / "tls" / "cert.pem")
    settings.HISP_TLS_KEY_FILE = str(tmp_path / "tls" / "key.pem")
    cert, key = tls.ensure_certificate()
    first = cert.read_bytes()
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert tls.ensure_certificate()[0].read_bytes() == first


def test_missing_configured_certificate_is_an_error(settings, tmp_path):
    from hisp import tls

    settings.HISP_TLS_CERT_FILE = str(tmp_path / "elsewhere" / "cert.pem")
    settings.HISP_TLS_KEY_FILE = str(tmp_path / "elsewhere" / "key.pem")
    with pytest.raises(FileNotFoundError):
        tls.ensure_certificate()


def test_a_repeated_recipient_is_accepted_and_the_envelope_stored_as_received(backbone, bob):
    # Inbound then delivers once per mailbox (test_inbound: ..._named_twice_is_one_delivery).
    local, _, domain = bob.address.partition("@")
    with _client(backbone) as client:
        client.mail("doc@partner.example.net")
        codes = [client.rcpt(rcpt)[0] for rcpt in (bob.address, bob.address,
                                                   f"{local}@{domain.upper()}")]
        code, _ = client.data(MESSAGE)
    assert codes == [250, 250, 250]
    assert code == 250
    assert Message.objects.get().envelope_to == [
        bob.address, bob.address, f"{local}@{domain.upper()}"
    ]
