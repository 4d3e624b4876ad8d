"""Binding a certificate to a Direct address or to its domain (Applicability Statement 4.0).

A certificate is bound to an address by a subjectAltName rfc822Name equal to the address, or to
the address's domain by a subjectAltName dNSName equal to the domain. Subject DN emailAddress
attributes are not consulted (RFC 5280 4.1.2.6 deprecates them in favour of the SAN).

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


def bound_to_sender(certificate: x509.Certificate, sender: str) -> bool:
    """Either binding will do for a signer (Applicability Statement 4.0 / 5.1)."""
    return bound_to_address(certificate, sender) or bound_to_domain(
        certificate, address_domain(sender)
    )
