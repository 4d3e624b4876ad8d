"""Binding a certificate to a Direct address or to its domain (Applicability Statement 4.0).

A certificate is bound to an address by a subjectAltName rfc822Name equal to the address, or to
the address's domain by a subjectAltName dNSName equal to the domain. Subject DN emailAddress
attributes are not consulted by default (RFC 5280 4.1.2.6 deprecates them in favour of the SAN);
the legacy policy switch ``allow_subject_email_binding`` consults them for a signer that has no
rfc822Name or dNSName SAN at all, as pre-Direct-AS implementations (the .NET reference
implementation) issued certificates: the attribute holds the address, or the bare domain for a
domain-bound certificate.

Comparison choice: the domain is compared case-insensitively (RFC 5321 2.4). The local part is
ALSO compared case-insensitively, although RFC 5280 7.5 allows a case-sensitive local part: every
Direct implementation we interoperate with (the Java and .NET reference implementations compare
with equalsIgnoreCase/OrdinalIgnoreCase) and every HISP treats mailboxes case-insensitively, so a
case-sensitive match would only reject genuine mail. Both names must still be issued under an
anchor the receiving domain trusts, which is what actually binds them.

Wildcard dNSNames never match: Direct binds a certificate to exactly one domain.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from agent.errors import AgentError, Code


def split_address(address: str) -> tuple[str, str]:
    """``local@domain`` -> (local, lower-cased domain without a trailing dot)."""
    local, sep, domain = address.strip().rpartition("@")
    if not sep or not local or not domain:
        raise AgentError(Code.MALFORMED, "not an address of the form local@domain")
    return local, _normalise_domain(domain)


def address_domain(address: str) -> str:
    return split_address(address)[1]


def _normalise_domain(domain: str) -> str:
    return domain.strip().rstrip(".").lower()


def _san(certificate: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def rfc822_names(certificate: x509.Certificate) -> list[str]:
    san = _san(certificate)
    return [] if san is None else list(san.get_values_for_type(x509.RFC822Name))


def dns_names(certificate: x509.Certificate) -> list[str]:
    san = _san(certificate)
    return [] if san is None else list(san.get_values_for_type(x509.DNSName))


def bound_to_address(certificate: x509.Certificate, address: str) -> bool:
    local, domain = split_address(address)
    for name in rfc822_names(certificate):
        name_local, sep, name_domain = name.rpartition("@")
        if not sep:
            continue  # a bare domain is a name-constraint form, not a mailbox (RFC 5280 4.2.1.6)
        if name_local.lower() == local.lower() and _normalise_domain(name_domain) == domain:
            return True
    return False


def bound_to_domain(certificate: x509.Certificate, domain: str) -> bool:
    wanted = _normalise_domain(domain)
    return any(
        "*" not in name and _normalise_domain(name) == wanted for name in dns_names(certificate)
    )


def subject_email_addresses(certificate: x509.Certificate) -> list[str]:
    """The subject DN's emailAddress (PKCS #9) values, addresses or bare domains."""
    return [
        attribute.value
        for attribute in certificate.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)
        if isinstance(attribute.value, str)
    ]


def bound_by_subject_email(certificate: x509.Certificate, sender: str) -> bool:
    """Legacy binding: a subject emailAddress equal to the address, or to its bare domain, and
    no rfc822Name/dNSName SAN that would say otherwise (a certificate with SAN names is bound by
    them alone, RFC 5280 4.2.1.6)."""
    if rfc822_names(certificate) or dns_names(certificate):
        return False
    local, domain = split_address(sender)
    for value in subject_email_addresses(certificate):
        value_local, sep, value_domain = value.strip().rpartition("@")
        if sep:
            if value_local.lower() == local.lower() and _normalise_domain(value_domain) == domain:
                return True
        elif "*" not in value and _normalise_domain(value) == domain:
            return True
    return False


def bound_to_sender(
    certificate: x509.Certificate, sender: str, *, allow_subject_email: bool = False
) -> bool:
    """Either binding will do for a signer (Applicability Statement 4.0 / 5.1); the subject
    emailAddress only when the legacy policy allows it."""
    if bound_to_address(certificate, sender) or bound_to_domain(
        certificate, address_domain(sender)
    ):
        return True
    return allow_subject_email and bound_by_subject_email(certificate, sender)
