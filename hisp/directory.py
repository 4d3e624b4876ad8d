"""Our certificates for one hosted domain as LDIF (RFC 2849), for operators who publish them in
their own LDAP directory (found by senders through SRV ``_ldap._tcp``, see HISP_LDAP_SERVER).

One ``inetOrgPerson`` per hosted address with current certificates (``mail`` = the address) and
one for the domain (``mail`` = the domain name): the two searches Direct discovery makes
(``(mail=<address>)`` then ``(mail=<domain>)``). Each certificate is in ``userSMIMECertificate``
as a certs-only PKCS#7 (RFC 2798 9.1.2) and in ``userCertificate;binary`` as DER (RFC 4523).
"""

from __future__ import annotations

import base64
import re
from collections import defaultdict
from collections.abc import Iterator

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from django.utils import timezone
from ldap3.core.exceptions import LDAPInvalidDnError
from ldap3.utils.dn import escape_rdn, parse_dn

from hisp.dns.records import PublicationError, published_certificates
from hisp.dns.zonefile import hosted_domain
from hisp.models import Address, Certificate

LINE_WIDTH = 76  # RFC 2849 note 2: fold long lines; continuation lines start with one space
# RFC 2849 SAFE-STRING: no leading space, colon or '<', only printable ASCII, no trailing space.
_SAFE = re.compile(r"^(?![ :<])[\x01-\x09\x0b\x0c\x0e-\x7f]*(?<! )$")


def base_dn_for(domain: str) -> str:
    """``dc=hospital,dc=example,dc=org`` for ``hospital.example.org`` (RFC 2247)."""
    return ",".join(f"dc={escape_rdn(label)}" for label in domain.split("."))


def ldif_text(domain: str, *, base_dn: str | None = None) -> str:
    value = hosted_domain(domain)
    base = base_dn.strip() if base_dn else base_dn_for(value)
    try:
        parse_dn(base)
    except LDAPInvalidDnError:
        raise PublicationError(f"not a distinguished name: {base!r}") from None
    now = timezone.now()
    by_name: dict[str, list[Certificate]] = defaultdict(list)
    for row in published_certificates([value], at=now):
        by_name[row.bound_name].append(row)
    names = dict(
        Address.objects.filter(address__in=list(by_name)).values_list("address", "display_name")
    )
    lines = [
        "version: 1",
        f"# Direct certificates for {value} (manage.py ldif)",
        f"# generated {now:%Y-%m-%dT%H:%M:%SZ}",
        "# re-run after every issue, renewal or revocation",
    ]
    # Addresses first (sorted), the domain entry last; every name has at least one certificate.
    for name in sorted(by_name, key=lambda n: (n == value, n)):
        display = names.get(name) or name
        lines.append("")
        lines.extend(_entry(name, display, base, by_name[name]))
    return "\n".join(lines) + "\n"


def _entry(mail: str, display: str, base: str, rows: list[Certificate]) -> Iterator[str]:
    yield from _attribute("dn", f"mail={escape_rdn(mail)},{base}")
    for object_class in ("top", "person", "organizationalPerson", "inetOrgPerson"):
        yield from _attribute("objectClass", object_class)
    yield from _attribute("cn", display)
    yield from _attribute("sn", display)
    yield from _attribute("mail", mail)
    for row in rows:
        certificate = x509.load_der_x509_certificate(bytes(row.der))
        bundle = pkcs7.serialize_certificates([certificate], Encoding.DER)
        yield from _attribute("userSMIMECertificate", bundle)
    for row in rows:
        yield from _attribute("userCertificate;binary", bytes(row.der))


def _attribute(name: str, value: str | bytes) -> Iterator[str]:
    if isinstance(value, str) and _SAFE.match(value):
        line = f"{name}: {value}"
    else:
        raw = value.encode("utf-8") if isinstance(value, str) else value
        line = f"{name}:: {base64.b64encode(raw).decode('ascii')}"
    yield line[:LINE_WIDTH]
    for start in range(LINE_WIDTH, len(line), LINE_WIDTH - 1):
        yield " " + line[start : start + LINE_WIDTH - 1]
