"""The ``Received`` trace field each listener stamps on the messages it accepts.

RFC 5321 section 4.4: an SMTP server that accepts a message MUST insert trace information at
the beginning of its content. The backbone stores the bytes exactly as received (the agent
verifies them), so the stamp is kept beside them (``Message.trace``) and reads as the first
field of the message; on the submission port the message is ours to send on, and the stamp
goes inside it, signed and encrypted with the rest (``outbound``), so the client's address is
seen only by the recipients, never by the networks on the way (RFC 5321 section 7.6).

What the stamp says: the name the client gave in EHLO (when it is a domain or an address
literal; otherwise only its address stands), its address, the TLS version and cipher when the
session was encrypted, our own name, the protocol (RFC 3848: ``ESMTPS`` for EHLO with
STARTTLS, ``ESMTPSA`` when also authenticated), the recipient when there is exactly one (more
would tell each recipient the others, Bcc included, section 7.2), and the time.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import Any

# An upper bound on a stamp's length: each part that comes from the client is capped below,
# so a submitted message's allowance (what fits once protected) can leave room for it.
MAX_BYTES = 1536

# RFC 5321 section 4.1.2: Domain = sub-domain *("." sub-domain), sub-domain = Let-dig [Ldh-str],
# at most 253 characters (RFC 1123 host names; an internationalised one in its xn-- form).
_DOMAIN = re.compile(
    r"(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)
# A path as accepted by the listeners is printable ASCII without spaces; anything else (or a
# path longer than RFC 5321 allows) is left out of a field rather than escaped into it.
_PATH = re.compile(r"[!-;=?-~]{1,320}")  # no "<" or ">": it is written between them


def is_host_name(text: str) -> bool:
    """Whether ``text`` is a domain as SMTP writes one (the settings check HISP_HOSTNAME by
    it, since it becomes the ``by`` of every stamp)."""
    return bool(_DOMAIN.fullmatch(text))


def is_plain_path(text: str) -> bool:
    """Whether ``text`` may stand between angle brackets in a header field as it is."""
    return bool(_PATH.fullmatch(text))


# The TLS facts come from OpenSSL, not the client; still only tokens are written.
_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class Tls:
    version: str  # "TLSv1.3"
    cipher: str  # OpenSSL's name, "TLS_AES_256_GCM_SHA384"
    bits: int


def stamp(
    *,
    helo: str | None,
    address: str | None,
    by: str,
    esmtp: bool,
    tls: Tls | None,
    authenticated: bool,
    recipients: Sequence[str],
    at: datetime,
) -> str:
    """The ``Received`` field, folded, ending in CRLF (RFC 5321 section 4.4, RFC 5322 3.6.7).

    ``helo`` is what the client said in HELO or EHLO, ``address`` its IP address, ``by`` our
    own name (HISP_HOSTNAME); ``at`` must be aware."""
    literal = _address_literal(address)
    name = _client_name(helo)
    # Extended-Domain: a domain alone, or a name followed by the address in TCP-info; an
    # address literal alone is not one.
    tcp_info = literal
    if name is None:
        name = literal or "unknown"
    lines = [f"Received: from {name}" + (f" ({tcp_info})" if tcp_info else "")]
    if tls is not None and _TOKEN.fullmatch(tls.version) and _TOKEN.fullmatch(tls.cipher):
        lines.append(f"(using {tls.version} with cipher {tls.cipher} ({tls.bits:d} bits))")
    protocol = "ESMTP" if esmtp else "SMTP"
    if tls is not None and esmtp:
        protocol += "S"
    if authenticated and esmtp:
        protocol += "A"
    by_line = f"by {by} with {protocol}"
    if len(recipients) == 1 and is_plain_path(recipients[0]):
        by_line += f" for <{recipients[0]}>"
    lines.append(by_line + ";")
    lines.append(format_datetime(at))
    return "\r\n\t".join(lines) + "\r\n"


def stamp_for(
    session: Any, *, by: str, authenticated: bool, recipients: Sequence[str], at: datetime
) -> str:
    """:func:`stamp` for an aiosmtpd session: its EHLO name, peer and TLS state."""
    peer = session.peer
    address = peer[0] if isinstance(peer, tuple) and peer else None
    return stamp(
        helo=session.host_name,
        address=address if isinstance(address, str) else None,
        by=by,
        esmtp=bool(session.extended_smtp),
        tls=_tls_of(session.ssl),
        authenticated=authenticated,
        recipients=recipients,
        at=at,
    )


def _tls_of(extra: dict[str, Any] | None) -> Tls | None:
    if not extra:
        return None
    ssl_object = extra.get("ssl_object")
    cipher = ssl_object.cipher() if ssl_object is not None else extra.get("cipher")
    if not cipher:
        return None
    name, version, bits = cipher
    if ssl_object is not None:
        version = ssl_object.version() or version
    return Tls(version=str(version), cipher=str(name), bits=int(bits or 0))


def _client_name(helo: str | None) -> str | None:
    """The EHLO argument when it is a domain or an address literal, as RFC 5321 asks for;
    anything else is the client's word only, and is left out."""
    if not helo:
        return None
    if helo.startswith("[") and helo.endswith("]"):
        return _address_literal(helo[1:].removeprefix("IPv6:").removeprefix("ipv6:")[:-1])
    return helo if is_host_name(helo) else None


def _address_literal(address: str | None) -> str | None:
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped  # a dual-stack listener's IPv4 clients
        return f"[{mapped}]" if mapped else f"[IPv6:{ip.compressed}]"
    return f"[{ip}]"
