"""HispSMTP's chunked DATA reader (hisp/smtp/protocol.py) on real loopback sockets: where DATA
ends whatever the TCP segmentation, dot-unstuffing, pipelining behind the dot, the size and line
limits, smuggling sequences, the idle timeout, and the same replies and content as aiosmtpd's
own line-by-line smtp_DATA (used below as the reference)."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from hisp.smtp.protocol import (
    DATA_LINE_TOO_LONG,
    DATA_TOO_MUCH,
    END_OF_DATA,
    HispController,
    HispSMTP,
    _DataCollector,
    bare_line_ending,
)
from tests.hisp.mail.test_smtp_ingress_rules import SMUGGLING
from tests.support.services import free_port

LIMIT = 20_000
ENVELOPE = b"MAIL FROM:<doc@partner.example.net>\r\nRCPT TO:<bob@hospital.example.org>\r\n"
# A 19 KB message of 76-character base64 lines, the shape the benchmark sends.
BASE64_BODY = b"Subject: x\r\n\r\n" + b"QUJD" * 19 + b"\r\n"


class Recorder:
    """A trivial handler: keeps what each DATA delivered."""

    def __init__(self) -> None:
        self.contents: list[bytes] = []
        self.decoded: list[Any] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.original_content, bytes)
        self.contents.append(envelope.original_content)
        self.decoded.append(envelope.content)
        return "250 OK"


class LineByLine(HispSMTP):
    """The reference: aiosmtpd's own smtp_DATA, one readuntil(CRLF) per line."""

    smtp_DATA = SMTP.smtp_DATA


class LineByLineController(HispController):
    def factory(self) -> SMTP:
        return LineByLine(self.handler, **self.SMTP_kwargs)


def _serve(controller_class: type[HispController], **options: Any) -> Iterator[Any]:
    recorder = Recorder()
    options.setdefault("data_size_limit", LIMIT)
    controller = controller_class(recorder, hostname="127.0.0.1", port=free_port(), **options)
    controller.start()
    try:
        yield controller, recorder
    finally:
        controller.stop()


@pytest.fixture
def server() -> Iterator[Any]:
    yield from _serve(HispController)


class Client:
    """A raw SMTP client: exact bytes out, one reply at a time in."""

    def __init__(self, controller: HispController) -> None:
        self.sock = socket.create_connection((controller.hostname, controller.port), timeout=10)
        # Each send() leaves as its own segment, so the server sees the splits we make.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.replies = self.sock.makefile("rb")
        assert self.reply().startswith(b"220")
        self.send(b"EHLO partner.example.net\r\n")
        assert self.reply().startswith(b"250")

    def send(self, *pieces: bytes) -> None:
        for index, piece in enumerate(pieces):
            if index:
                time.sleep(0.005)  # let the server read what came so far
            self.sock.sendall(piece)

    def reply(self) -> bytes:
        """The last line of the next (possibly multi-line) reply, b"" once the server closed."""
        while True:
            line = self.replies.readline()
            if not line or line[3:4] != b"-":
                return line.rstrip(b"\r\n")

    def start_data(self) -> None:
        self.send(ENVELOPE + b"DATA\r\n")
        assert [self.reply() for _ in range(3)] == [b"250 OK", b"250 OK", DATA_GO]

    def transaction(self, *pieces: bytes) -> bytes:
        self.start_data()
        self.send(*pieces)
        return self.reply()

    def close(self) -> None:
        self.replies.close()
        self.sock.close()


DATA_GO = b"354 End data with <CR><LF>.<CR><LF>"


@pytest.fixture
def client(server: Any) -> Iterator[Client]:
    sent = Client(server[0])
    yield sent
    sent.close()


def _splits(data: bytes, offsets: range) -> Iterator[tuple[bytes, bytes]]:
    for offset in offsets:
        yield data[:offset], data[offset:]


def test_terminator_split_at_every_offset(server, client):
    _, recorder = server
    stream = BASE64_BODY + b".\r\n"
    tail = len(END_OF_DATA) + 3
    for first, second in _splits(stream, range(len(stream) - tail, len(stream))):
        assert client.transaction(first, second) == b"250 OK"
    assert recorder.contents == [BASE64_BODY] * tail


def test_terminator_sent_one_byte_at_a_time(server, client):
    _, recorder = server
    assert client.transaction(b"line", *[bytes([b]) for b in END_OF_DATA]) == b"250 OK"
    assert client.transaction(*[bytes([b]) for b in b"x\r\n.\r\n"]) == b"250 OK"
    assert recorder.contents == [b"line\r\n", b"x\r\n"]


def test_dot_stuffed_lines_at_every_chunk_boundary(server, client):
    _, recorder = server
    sent = b"a\r\n..\r\n...two\r\n.x\r\n\r\n..\r\nend\r\n"
    for first, second in _splits(sent + b".\r\n", range(1, len(sent) + 3)):
        assert client.transaction(first, second) == b"250 OK"
    # RFC 5321 4.5.2: the first character of every line starting with a dot goes.
    assert set(recorder.contents) == {b"a\r\n.\r\n..two\r\nx\r\n\r\n.\r\nend\r\n"}


@pytest.mark.parametrize(
    ("sent", "content"),
    [
        (b"..first\r\nsecond\r\n", b".first\r\nsecond\r\n"),
        (b".first\r\n", b"first\r\n"),
        (b"..\r\n", b".\r\n"),
        (b".\r\n", b""),  # the first line "." is the end: an empty message
        (b"\r\n", b"\r\n"),
        (b"\r\n\r\n", b"\r\n\r\n"),
    ],
)
def test_first_line(server, client, sent, content):
    _, recorder = server
    stream = sent if sent == b".\r\n" else sent + b".\r\n"
    assert client.transaction(stream) == b"250 OK"
    for first, second in _splits(stream, range(1, len(stream))):
        assert client.transaction(first, second) == b"250 OK"
    assert recorder.contents == [content] * len(stream)


@pytest.mark.parametrize("body", [BASE64_BODY, b"", b"ends with a dot.\r\n", b"\r\n"])
def test_commands_pipelined_behind_the_dot_are_left_for_the_command_loop(server, client, body):
    _, recorder = server
    client.start_data()
    # The end of one message and the whole next transaction in one segment (RFC 2920).
    client.send(body + b".\r\n" + ENVELOPE + b"DATA\r\n")
    assert [client.reply() for _ in range(4)] == [b"250 OK", b"250 OK", b"250 OK", DATA_GO]
    client.send(b"second\r\n.\r\nNOOP\r\n")
    assert [client.reply() for _ in range(2)] == [b"250 OK", b"250 OK"]
    assert recorder.contents == [body, b"second\r\n"]


def _of_size(size: int) -> bytes:
    """A message of exactly ``size`` bytes as counted against the limit (lines with CRLF)."""
    lines, rest = divmod(size, 100)
    body = (b"x" * 98 + b"\r\n") * lines
    return body + (b"y" * (rest - 2) + b"\r\n" if rest else b"")


def test_message_exactly_at_the_size_limit_is_accepted(server, client):
    _, recorder = server
    assert client.transaction(_of_size(LIMIT) + b".\r\n") == b"250 OK"
    assert recorder.contents == [_of_size(LIMIT)]


def test_dot_stuffing_counts_towards_the_size_limit_as_sent(server, client):
    _, recorder = server
    stuffed = b"." + _of_size(LIMIT - 1)
    assert client.transaction(stuffed + b".\r\n") == b"250 OK"
    assert client.transaction(b"." + stuffed + b".\r\n") == DATA_TOO_MUCH.encode()
    assert recorder.contents == [stuffed[1:]]


def test_one_byte_over_the_size_limit_is_552_and_the_session_goes_on(server, client):
    _, recorder = server
    assert client.transaction(_of_size(LIMIT + 1) + b".\r\n") == DATA_TOO_MUCH.encode()
    assert client.transaction(b"next\r\n.\r\n") == b"250 OK"
    assert recorder.contents == [b"next\r\n"]


def test_far_over_the_size_limit_is_drained_then_552(server, client):
    _, recorder = server
    client.start_data()
    chunk = _of_size(64 * 1024)
    client.send(*[chunk] * 32, b".\r\n")  # 2 MB against a 20 KB limit
    assert client.reply() == DATA_TOO_MUCH.encode()
    client.send(b"NOOP\r\n")
    assert client.reply() == b"250 OK"
    assert recorder.contents == []


@pytest.mark.parametrize("length", [1002, 1003, 1004, 5000, 200_000])
def test_line_longer_than_the_limit_is_500_after_draining(server, client, length):
    _, recorder = server
    long_line = b"z" * (length - 2) + b"\r\n"
    first, second = long_line[: length // 2], long_line[length // 2 :]
    reply = client.transaction(b"ok\r\n", first, second, b"after\r\n.\r\n")
    assert reply == DATA_LINE_TOO_LONG.encode()
    assert client.transaction(b"next\r\n.\r\n") == b"250 OK"
    assert recorder.contents == [b"next\r\n"]


def test_line_at_the_limit_is_accepted(server, client):
    _, recorder = server
    # aiosmtpd's line_length_limit: 1001 octets with the CRLF (998 + CRLF + a stuffed dot).
    line = b"." + b"z" * 998 + b"\r\n"
    assert client.transaction(line + b".\r\n") == b"250 OK"
    assert recorder.contents == [line[1:]]


@pytest.mark.parametrize(
    ("pieces", "error"),
    [
        ([b"x" * 600, b"x" * 600, b"x" * 100_000], DATA_LINE_TOO_LONG),  # no CRLF yet
        ([b"x" * 98 + b"\r\n"] * 300, DATA_TOO_MUCH),
    ],
)
def test_nothing_more_is_kept_once_the_message_is_refused(pieces, error):
    # Memory stays bounded whatever the client sends: the refusal is known as soon as it can be
    # (a line is too long before its CRLF arrives) and from then on the data is only drained.
    collector = _DataCollector(size_limit=LIMIT, line_limit=1001)
    for piece in pieces:
        collector.feed(piece)
        kept = sum(map(len, collector.parts))
        assert kept <= LIMIT + 1001
    assert collector.error == error
    assert collector.parts == []


def test_megabyte_message_arrives_byte_for_byte():
    for controller, recorder in _serve(HispController, data_size_limit=4 * 1024 * 1024):
        rng = random.Random(5)
        alphabet = b"ABCDEFGHIJ.\tklmnop ="
        pool = [bytes(rng.choices(alphabet, k=rng.randint(0, 120))) + b"\r\n" for _ in range(500)]
        lines = rng.choices(pool, k=20_000)  # about 1.2 MB; one line in 16 starts with a dot
        content = b"".join(lines)
        sent = b"".join(b"." + line if line.startswith(b".") else line for line in lines)
        stream = sent + b".\r\n"
        cuts = sorted(rng.sample(range(1, len(stream)), 40))
        pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        client = Client(controller)
        try:
            assert client.transaction(*pieces) == b"250 OK"
        finally:
            client.close()
        assert recorder.contents == [content]


@pytest.mark.parametrize("sequence", SMUGGLING, ids=[repr(s) for s in SMUGGLING])
def test_smuggling_sequence_does_not_end_data(server, client, sequence):
    _, recorder = server
    smuggled = ENVELOPE + b"DATA\r\nsmuggled\r\n"
    stream = b"Subject: x\r\n\r\nhello" + sequence + smuggled + b".\r\nNOOP\r\n"
    at = stream.index(sequence)
    for offset in range(at, at + len(sequence) + 1):
        client.start_data()
        client.send(stream[:offset], stream[offset:])
        # Had DATA ended at the sequence, the smuggled MAIL's 250 would come before NOOP's.
        assert [client.reply() for _ in range(2)] == [b"250 OK", b"250 OK"]
    sent = stream[: -len(b".\r\nNOOP\r\n")].split(b"\r\n")
    content = b"\r\n".join(line[1:] if line.startswith(b".") else line for line in sent)
    assert recorder.contents == [content] * (len(sequence) + 1)
    # What the listeners then refuse with 550 (backbone.py, submission.py): untouched bytes.
    assert bare_line_ending(recorder.contents[0])


def test_client_stalling_mid_data_gets_the_idle_timeout_421():
    for controller, recorder in _serve(HispController, timeout=0.5):
        client = Client(controller)
        try:
            client.start_data()
            client.send(b"Subject: half a message\r\n\r\n" + b"x" * 3000)
            assert client.reply().startswith(b"421 4.4.2 ")
            assert client.reply() == b""  # closed
        finally:
            client.close()
        assert recorder.contents == []


def test_connection_lost_mid_data_delivers_nothing(server):
    controller, recorder = server
    client = Client(controller)
    client.start_data()
    client.send(b"Subject: cut short\r\n\r\n" + b"x" * 5000 + b"\r\n")
    client.close()
    other = Client(controller)  # the listener carries on
    try:
        assert other.transaction(b"whole\r\n.\r\n") == b"250 OK"
    finally:
        other.close()
    assert recorder.contents == [b"whole\r\n"]


# Pieces a random stream is made of, chosen to hit every rule: dots, bare CR/LF, terminators,
# lines around the 1001-octet limit, and much longer ones.
ALPHABET = [
    b"a", b".", b"\r", b"\n", b"\r\n", b".\r\n", b"\r\n.\r\n", b"\r\n.", b"..",
    b"\xe9", b"x" * 60, b"y" * 997, b"y" * 998, b"z" * 999, b"w" * 1500,
]  # fmt: skip


def _random_session(rng: random.Random) -> list[bytes]:
    """One raw session from DATA on, in random segments."""
    stream = b"".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))
    stream += rng.choice([b"\r\n.\r\n", b".\r\n"])
    stream += ENVELOPE + b"DATA\r\nbye\r\n.\r\nQUIT\r\n"
    cuts = sorted(rng.sample(range(1, len(stream)), min(rng.randint(0, 6), len(stream) - 1)))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


def _replay(controller: HispController, pieces: list[bytes]) -> tuple[list[bytes], bool]:
    """The replies to a session, and whether it ended with QUIT's 221 (else the server hung up,
    after too many unrecognised commands, and the last replies may be lost to the reset)."""
    client = Client(controller)
    replies: list[bytes] = []
    try:
        client.start_data()
        try:
            client.send(*pieces)
        except OSError:
            pass  # hung up on: read what came before
        while reply := client.reply():
            replies.append(reply)
            if reply.startswith(b"221"):
                return replies, True
    except OSError:
        pass
    finally:
        client.close()
    return replies, False


def _same_session(ours: tuple[list[bytes], bool], theirs: tuple[list[bytes], bool]) -> bool:
    if ours[1] and theirs[1]:
        return ours[0] == theirs[0]
    shortest = min(len(ours[0]), len(theirs[0]))
    return ours[0][:shortest] == theirs[0][:shortest]


@pytest.mark.parametrize(
    ("size_limit", "decode", "utf8"),
    [(2500, False, False), (0, False, False), (4000, True, False), (3000, True, True)],
)
def test_same_replies_and_content_as_aiosmtpd(size_limit, decode, utf8):
    options = {"data_size_limit": size_limit, "decode_data": decode, "enable_SMTPUTF8": utf8}
    for ours, our_recorder in _serve(HispController, **options):
        for theirs, their_recorder in _serve(LineByLineController, **options):
            rng = random.Random(size_limit)
            for _ in range(40):
                pieces = _random_session(rng)
                assert _same_session(_replay(ours, pieces), _replay(theirs, pieces)), pieces
                assert our_recorder.contents == their_recorder.contents, pieces
                assert our_recorder.decoded == their_recorder.decoded, pieces


def test_non_ascii_with_decode_data_is_500_as_in_aiosmtpd():
    for controller, recorder in _serve(HispController, decode_data=True, enable_SMTPUTF8=False):
        client = Client(controller)
        try:
            assert client.transaction(b"caf\xc3\xa9\r\n.\r\n") == b"500 Error: strict ASCII mode"
            # aiosmtpd keeps the transaction after that reply: MAIL now would be "nested".
            client.send(b"RSET\r\n")
            assert client.reply() == b"250 OK"
            assert client.transaction(b"plain\r\n.\r\n") == b"250 OK"
        finally:
            client.close()
        assert recorder.decoded == ["plain\r\n"]
