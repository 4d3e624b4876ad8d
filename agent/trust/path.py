"""Certification path building and validation (RFC 5280 section 6, RFC 4158 for building).

Why a small builder of our own rather than ``cryptography.x509.verification``:

* the legacy policy must validate SHA-1-signed paths (the Java and .NET reference vectors), and
  ``x509.verification`` refuses SHA-1 signatures with no way to opt in;
* every rejection must name its reason with a stable code (``signer-expired``, ``weak-key``,
  ``signer-revoked``...), while ``x509.verification`` reports one opaque ``VerificationError``;
* its Web PKI profile rejects certificates that real Direct CAs issue (no AKI, negative serials,
  v1 roots), and it has no hook for AIA fetching or for our revocation checker.

``python -m agent.trust.bench`` measures this builder against ``x509.verification`` and
pyhanko-certvalidator on the same path. Signatures are verified with the issuer's key directly
(``algorithms.issued_by``); what is acceptable is decided by ``algorithms`` under the policy.

Building is a depth-first search from the leaf: an anchor that issued the current certificate
closes a path; otherwise any candidate from the message (or, when those lead nowhere, from the
current certificate's AIA caIssuers, RFC 5280 4.2.2.1) is tried. Paths are yielded lazily so the
caller stops at the first that validates.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from agent.errors import AgentError, Code
from agent.trust.algorithms import (
    issued_by,
    key_problem,
    parseable,
    require_acceptable,
    signature_problem,
)
from agent.trust.binding import subject_email_addresses
from agent.trust.policies import check_policies
from agent.types import AlgorithmPolicy, IssuerFetcher, RevocationChecker, RevocationStatus

# Intermediates between leaf and anchor; Direct paths are one or two deep, this bounds work on
# hostile input (RFC 4158 8.4 warns about loops and long paths).
MAX_INTERMEDIATES = 6
# Links tried per search, so a message stuffed with look-alike certificates cannot cost much.
MAX_LINK_CHECKS = 64
# Certificates whose caIssuers are read per search. A Direct path misses one or two
# intermediates at most, while each read may take a fetch time-out: without a bound, a chain
# of the sender's own making (each answer naming more look-alike issuers, each with a URL of
# its own) holds the worker for minutes.
MAX_ISSUER_FETCHES = 4


@dataclass(frozen=True)
class Path:
    """``certificates`` is leaf first, anchor excluded; when the leaf itself is a trust anchor
    (Direct allows anchoring an endpoint certificate) it is ``(leaf,)`` and ``anchor`` is the leaf.
    """

    certificates: tuple[x509.Certificate, ...]
    anchor: x509.Certificate

    @property
    def leaf_is_anchor(self) -> bool:
        return len(self.certificates) == 1 and self.certificates[0] == self.anchor


def _key_ids_compatible(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Cheap pruning before a signature check (RFC 5280 4.2.1.1: AKI keyIdentifier = issuer SKI)."""
    try:
        aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except (x509.ExtensionNotFound, ValueError):
        return True
    return aki.key_identifier is None or aki.key_identifier == ski.digest


class _Builder:
    def __init__(
        self,
        *,
        extra: Sequence[x509.Certificate],
        anchors: Sequence[x509.Certificate],
        issuers: IssuerFetcher,
        policy: AlgorithmPolicy,
    ) -> None:
        # Certificates that do not parse can never be part of a path; dropping them here means
        # nothing below has to expect a parse error.
        self._pool = [c for c in dict.fromkeys(extra) if parseable(c)]
        self._anchors = [c for c in dict.fromkeys(anchors) if parseable(c)]
        self._issuers = issuers
        self._policy = policy
        self._fetched: dict[x509.Certificate, list[x509.Certificate]] = {}
        self._checks = 0
        self._fetches = 0

    def _links(self, certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
        if certificate.issuer != issuer.subject or not _key_ids_compatible(certificate, issuer):
            return False
        self._checks += 1
        if self._checks > MAX_LINK_CHECKS:
            return False
        if issued_by(certificate, issuer):
            return True
        # A signature the policy rejects anyway (MD5, SHA-1 under the default policy, unknown
        # algorithms) still closes the link by name, so the caller can name the weak algorithm:
        # such a path always fails ``check_path``, which applies ``signature_problem`` to every
        # non-anchor certificate before anything else.
        return signature_problem(certificate, self._policy) is not None

    def paths(self, leaf: x509.Certificate) -> Iterator[Path]:
        if leaf in self._anchors:
            yield Path((leaf,), leaf)
        yield from self._extend((leaf,))

    def _extend(self, path: tuple[x509.Certificate, ...]) -> Iterator[Path]:
        current = path[-1]
        found = False
        for anchor in self._anchors:
            if anchor != current and self._links(current, anchor):
                found = True
                yield Path(path, anchor)
        if len(path) > MAX_INTERMEDIATES:
            return
        for candidate in self._pool:
            if candidate not in path and self._links(current, candidate):
                for result in self._extend((*path, candidate)):
                    found = True
                    yield result
        if found:
            return
        for candidate in self._fetch(current):
            if candidate not in path and candidate not in self._pool:
                if self._links(current, candidate):
                    yield from self._extend((*path, candidate))

    def _fetch(self, certificate: x509.Certificate) -> list[x509.Certificate]:
        if certificate not in self._fetched:
            if self._fetches >= MAX_ISSUER_FETCHES:
                return []
            self._fetches += 1
            fetched = self._issuers.issuers(certificate)
            self._fetched[certificate] = [c for c in fetched if parseable(c)]
        return self._fetched[certificate]


def candidate_paths(
    leaf: x509.Certificate,
    *,
    extra: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    issuers: IssuerFetcher,
    policy: AlgorithmPolicy,
) -> Iterator[Path]:
    """Every path from ``leaf`` to one of ``anchors``, shortest-first per branch, lazily."""
    return _Builder(extra=extra, anchors=anchors, issuers=issuers, policy=policy).paths(leaf)


def check_validity(certificate: x509.Certificate, at: datetime, *, what: str) -> None:
    """RFC 5280 6.1.3(a)(2): the certificate is valid at the validation time."""
    if at < certificate.not_valid_before_utc:
        raise AgentError(
            Code.SIGNER_NOT_YET_VALID,
            f"{what} not valid before {certificate.not_valid_before_utc.isoformat()}",
        )
    if at > certificate.not_valid_after_utc:
        raise AgentError(
            Code.SIGNER_EXPIRED, f"{what} expired {certificate.not_valid_after_utc.isoformat()}"
        )


def _extensions(certificate: x509.Certificate, *, what: str) -> x509.Extensions:
    try:
        extensions = certificate.extensions
    except ValueError as exc:
        raise AgentError(Code.UNTRUSTED_SIGNER, f"{what}: malformed extension ({exc})")
    for extension in extensions:
        # RFC 5280 4.2: a certificate with a critical extension we do not process is rejected.
        # cryptography leaves policyMappings undecoded; policies.py decodes and processes it.
        if (
            extension.critical
            and isinstance(extension.value, x509.UnrecognizedExtension)
            and extension.oid != ExtensionOID.POLICY_MAPPINGS
        ):
            raise AgentError(
                Code.UNTRUSTED_SIGNER,
                f"{what}: unrecognised critical extension {extension.oid.dotted_string}",
            )
    return extensions


def _check_ca(
    certificate: x509.Certificate, *, below: int, what: str, is_anchor: bool
) -> x509.NameConstraints | None:
    """RFC 5280 6.1.4(k), (l), (m), (n) for a certificate that issued ``below`` non-self-issued
    intermediates' worth of path. Returns its name constraints, if any."""
    extensions = _extensions(certificate, what=what)
    try:
        basic = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        basic = None
    if basic is None:
        # A v1 or extension-less trust anchor is trusted by configuration (RFC 5280 6.1.1(d));
        # an intermediate must say it is a CA.
        if not is_anchor:
            raise AgentError(Code.UNTRUSTED_SIGNER, f"{what} is not a CA (no basicConstraints)")
    else:
        if not basic.ca:
            raise AgentError(Code.UNTRUSTED_SIGNER, f"{what} is not a CA (basicConstraints)")
        if basic.path_length is not None and below > basic.path_length:
            raise AgentError(
                Code.UNTRUSTED_SIGNER,
                f"{what}: path length {below} exceeds its pathLenConstraint {basic.path_length}",
            )
    try:
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.key_cert_sign:
        raise AgentError(Code.UNTRUSTED_SIGNER, f"{what}: keyUsage lacks keyCertSign")
    try:
        return extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None


def _dns_within(name: str, base: str) -> bool:
    name, base = name.lower().rstrip("."), base.lower().rstrip(".")
    if not base:
        return True  # RFC 5280 4.2.1.10: an empty dNSName constraint covers every name
    if base.startswith("."):
        return name.endswith(base)
    return name == base or name.endswith("." + base)


def _mailbox_within(mailbox: str, base: str) -> bool:
    """RFC 5280 4.2.1.10: a full mailbox, a host (all mail there) or a .domain (subdomains)."""
    mailbox, base = mailbox.lower(), base.lower()
    if "@" in base:
        return mailbox == base
    host = mailbox.rpartition("@")[2]
    if base.startswith("."):
        return host.endswith(base)
    return host == base


def _dn_within(name: x509.Name, base: x509.Name) -> bool:
    return list(name.rdns)[: len(base.rdns)] == list(base.rdns)


def _name_matches(subtree: x509.GeneralName, value: x509.GeneralName) -> bool | None:
    """True/False when ``subtree`` speaks about ``value``'s type, None when it does not."""
    if type(subtree) is not type(value):
        return None
    if isinstance(subtree, x509.DNSName) and isinstance(value, x509.DNSName):
        return _dns_within(value.value, subtree.value)
    if isinstance(subtree, x509.RFC822Name) and isinstance(value, x509.RFC822Name):
        return _mailbox_within(value.value, subtree.value)
    if isinstance(subtree, x509.DirectoryName) and isinstance(value, x509.DirectoryName):
        return _dn_within(value.value, subtree.value)
    if isinstance(subtree, x509.IPAddress) and isinstance(value, x509.IPAddress):
        network = subtree.value
        address = value.value
        if isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network) and isinstance(
            address, ipaddress.IPv4Address | ipaddress.IPv6Address
        ):
            return address in network
        return False
    # URI and otherName forms: we do not evaluate them, so a constrained name of that type is
    # treated as outside the permitted set (fail closed).
    return False


def _names_of(certificate: x509.Certificate) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    if len(certificate.subject.rdns):
        names.append(x509.DirectoryName(certificate.subject))
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names.extend(san)
    except x509.ExtensionNotFound:
        san = None
    if san is None or not any(isinstance(n, x509.RFC822Name | x509.DNSName) for n in san):
        # RFC 5280 4.2.1.10: without a SAN, rfc822Name constraints apply to the subject's
        # emailAddress. The legacy binding reads it whenever the SAN names no mailbox or
        # domain (a SAN of URIs only, say), so the constraints must read it then too. A bare
        # domain there is what that binding reads as a domain binding, so dNSName constraints
        # apply to it as well (fail closed).
        for value in subject_email_addresses(certificate):
            try:
                names.append(x509.RFC822Name(value))
                if "@" not in value:
                    names.append(x509.DNSName(value))
            except ValueError:  # not ASCII: it cannot be checked, so it cannot pass
                raise AgentError(Code.UNTRUSTED_SIGNER, "subject emailAddress is not ASCII")
    return names


def _check_name_constraints(
    constraints: x509.NameConstraints, certificate: x509.Certificate, *, what: str
) -> None:
    """RFC 5280 6.1.3(b), (c) for one constrained certificate."""
    for name in _names_of(certificate):
        for excluded in constraints.excluded_subtrees or ():
            if _name_matches(excluded, name) is True:
                raise AgentError(Code.UNTRUSTED_SIGNER, f"{what}: a name is in an excluded subtree")
        permitted = [
            verdict
            for subtree in constraints.permitted_subtrees or ()
            if (verdict := _name_matches(subtree, name)) is not None
        ]
        if permitted and not any(permitted):
            raise AgentError(Code.UNTRUSTED_SIGNER, f"{what}: a name is outside permitted subtrees")


def check_path(
    path: Path, *, at: datetime, policy: AlgorithmPolicy, revocation: RevocationChecker
) -> None:
    """Validate a built path; raises AgentError with the signer-side code of the first failure.

    Leaf-specific checks (binding, key usage) are the caller's. Order: local checks for every
    certificate first, revocation (network) last, so a doomed path costs no fetches.
    """
    certificates = path.certificates
    names = ["leaf certificate"] + [f"intermediate CA {i}" for i in range(1, len(certificates))]
    if path.leaf_is_anchor:
        require_acceptable(path.anchor, policy, what="trust anchor")
        check_validity(path.anchor, at, what="trust anchor (the signer itself)")
        _extensions(path.anchor, what="trust anchor")
        return
    for certificate, what in zip(certificates, names, strict=True):
        require_acceptable(certificate, policy, what=what)
        check_validity(certificate, at, what=what)
        _extensions(certificate, what=what)
    # The anchor's own self-signature is not part of the path (RFC 5280 6.1.1(d)): only its key
    # strength and validity matter.
    problem = key_problem(path.anchor, policy)
    if problem is not None:
        raise AgentError(Code.WEAK_KEY, f"trust anchor: {problem}")
    check_validity(path.anchor, at, what="trust anchor")

    # CA checks from the anchor down; name constraints apply to everything below their CA.
    issuers = [*certificates[1:], path.anchor]
    for index, (issuer, what) in enumerate(zip(issuers, [*names[1:], "trust anchor"], strict=True)):
        # Non-self-issued intermediates strictly between this CA and the leaf (RFC 5280 6.1.4(l)).
        below = sum(1 for c in certificates[1 : index + 1] if c.issuer != c.subject)
        constraints = _check_ca(issuer, below=below, what=what, is_anchor=issuer is path.anchor)
        if constraints is not None:
            for subject in certificates[: index + 1]:
                if subject.issuer == subject.subject and subject is not certificates[0]:
                    continue  # self-issued intermediates are exempt (RFC 5280 6.1.3(b))
                _check_name_constraints(constraints, subject, what=what)
    check_policies(certificates, names)

    check_revocation(path, at=at, policy=policy, revocation=revocation)


def check_revocation(
    path: Path, *, at: datetime, policy: AlgorithmPolicy, revocation: RevocationChecker
) -> None:
    """RFC 5280 6.1.3(a)(3): no certificate of the path (anchor excluded) is revoked at ``at``.

    Separate from ``check_path`` because it is the one part of a decision that changes while the
    certificates stay the same, so a remembered path is re-checked with it on every use."""
    if path.leaf_is_anchor:
        return  # an anchor is trusted by configuration; nothing above it could revoke it
    certificates = path.certificates
    issuers = (*certificates[1:], path.anchor)
    for index, (certificate, issuer) in enumerate(zip(certificates, issuers, strict=True)):
        status = revocation.status(certificate, issuer, at)
        if status is RevocationStatus.GOOD or status is RevocationStatus.NOT_CHECKED:
            continue
        what = f"intermediate CA {index}" if index else "leaf certificate"
        if status is RevocationStatus.REVOKED:
            raise AgentError(Code.SIGNER_REVOKED, f"{what} is revoked")
        if status is RevocationStatus.UNAVAILABLE and policy.revocation_required_when_named:
            raise AgentError(
                Code.REVOCATION_UNAVAILABLE,
                f"{what}: its CRL/OCSP source is named but could not be read",
            )
