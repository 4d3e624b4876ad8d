"""The two trust decisions the message layer asks for: is this signer trusted by the recipient's
domain (incoming), and which certificates may we encrypt to for this recipient (outgoing)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent.errors import AgentError, Code
from agent.trust.algorithms import parseable, require_acceptable
from agent.trust.binding import address_domain, bound_to_address, bound_to_domain, bound_to_sender
from agent.trust.path import Path, candidate_paths, check_path, check_revocation, check_validity
from agent.types import Binding, Direction, Environment

# RFC 8550 4.4.4: if extendedKeyUsage is present it must allow email protection.
_EMAIL_EKUS = frozenset(
    {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
)


def _require_parseable(certificate: x509.Certificate, code: Code) -> None:
    """cryptography parses extensions and keys lazily; a malformed one (duplicate extension, bad
    encoding, unknown key type) must become a typed rejection here, not a ValueError later."""
    if not parseable(certificate):
        raise AgentError(
            code, "malformed certificate (names, validity, extensions or key do not parse)"
        )


def _require_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("the validation time `at` must be timezone-aware")


def _key_usage(certificate: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:  # parse errors were ruled out by _require_parseable
        return None


def _require_email_eku(certificate: x509.Certificate) -> None:
    try:
        eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not _EMAIL_EKUS.intersection(eku):
        raise AgentError(Code.KEY_USAGE, "extendedKeyUsage does not allow emailProtection")


def _require_signing_usage(certificate: x509.Certificate) -> None:
    """RFC 8550 4.4.2: a signing certificate with keyUsage must assert digitalSignature (Direct
    Applicability Statement 4.0 requires it; nonRepudiation alone is not enough)."""
    usage = _key_usage(certificate)
    if usage is not None and not usage.digital_signature:
        raise AgentError(Code.KEY_USAGE, "keyUsage does not allow digitalSignature")
    _require_email_eku(certificate)


def _require_encryption_usage(certificate: x509.Certificate) -> None:
    """RFC 8550 4.4.2: RSA key transport needs keyEncipherment when keyUsage is present."""
    usage = _key_usage(certificate)
    if usage is not None and not usage.key_encipherment:
        raise AgentError(Code.KEY_USAGE, "keyUsage does not allow keyEncipherment")
    _require_email_eku(certificate)


def _first_valid_path(
    leaf: x509.Certificate,
    *,
    extra: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    env: Environment,
    at: datetime,
) -> Path:
    """The first built path that validates; else the most telling failure of any path."""
    failures: list[AgentError] = []
    for path in candidate_paths(
        leaf, extra=extra, anchors=anchors, issuers=env.issuers, policy=env.policy
    ):
        try:
            check_path(path, at=at, policy=env.policy, revocation=env.revocation)
        except AgentError as exc:
            failures.append(exc)
            continue
        return path
    if not failures:
        raise AgentError(Code.UNTRUSTED_SIGNER, "no certification path to a trusted anchor")
    # A revocation found on any path outranks other reasons: the certificate is revoked.
    revoked = [f for f in failures if f.code is Code.SIGNER_REVOKED]
    raise (revoked or failures)[0]


def _remembered(
    key: Hashable, *, env: Environment, at: datetime, decide: Callable[[], Path]
) -> Path:
    """``decide()``, or the path a previous success found for ``key`` when the environment
    carries a ``ValidationCache`` and that path is still usable at ``at``: its revocation status
    is asked again on every use (``validation_cache`` explains what else keeps it correct)."""
    cache = env.validation_cache
    if cache is None:
        return decide()
    path = cache.get(key, at)
    if path is not None:
        try:
            check_revocation(path, at=at, policy=env.policy, revocation=env.revocation)
        except AgentError:
            # Revoked or unreadable now: forget it and decide in full, which may find another
            # path or names the failure exactly as an uncached call would.
            cache.discard(key)
        else:
            return path
    path = decide()
    cache.put(key, path)
    return path


def validate_signer(
    signer: x509.Certificate,
    extra: Sequence[x509.Certificate],
    *,
    sender: str,
    recipient_domain: str,
    env: Environment,
    at: datetime,
) -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
    """Is ``signer`` the sender's, and trusted for incoming mail by ``recipient_domain``?

    Returns ``(anchor, path)`` with ``path`` leaf first and the anchor excluded (``(signer,)``
    when the signer itself is an anchor). Raises AgentError: ``sender-mismatch``, ``key-usage``,
    ``weak-algorithm``, ``weak-key``, ``signer-expired``, ``signer-not-yet-valid``,
    ``untrusted-signer``, ``signer-revoked`` or ``revocation-unavailable``.

    The signer's own checks come first, so a certificate that can never pass costs no AIA or
    revocation fetches.
    """
    _require_aware(at)
    domain = recipient_domain.lower()
    anchors = tuple(env.anchors.anchors(domain, Direction.INCOMING))

    def decide() -> Path:
        _require_parseable(signer, Code.UNTRUSTED_SIGNER)
        # Applicability Statement 4.0: the signer is bound to the From address or its domain.
        if not bound_to_sender(
            signer, sender, allow_subject_email=env.policy.allow_subject_email_binding
        ):
            raise AgentError(
                Code.SENDER_MISMATCH,
                "the signer certificate is bound neither to the sender address nor to its domain",
            )
        _require_signing_usage(signer)
        require_acceptable(signer, env.policy, what="signer certificate")
        check_validity(signer, at, what="signer certificate")
        if not anchors:
            raise AgentError(
                Code.UNTRUSTED_SIGNER, "the recipient domain has no anchors for incoming mail"
            )
        return _first_valid_path(signer, extra=extra, anchors=anchors, env=env, at=at)

    key = ("signer", signer, tuple(extra), sender, domain, anchors, env.policy)
    path = _remembered(key, env=env, at=at, decide=decide)
    return path.anchor, path.certificates


# What each signer-side code means for a recipient's certificate: only "no path" is a trust
# problem (untrusted-recipient); an unreachable revocation source is transient and keeps its code
# so the caller retries rather than failing the recipient for good.
_UNTRUSTED = frozenset({Code.UNTRUSTED_SIGNER})
_TRANSIENT = frozenset({Code.REVOCATION_UNAVAILABLE})


def _recipient_problem(
    certificate: x509.Certificate,
    binding: Binding,
    address: str,
    *,
    extra: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    env: Environment,
    at: datetime,
) -> tuple[AgentError | None, x509.Certificate | None]:
    """(None, anchor) when ``certificate`` is usable for ``address``, else (reason, None)."""

    def decide() -> Path:
        _require_parseable(certificate, Code.NO_RECIPIENT_CERTIFICATE)
        if binding is Binding.ADDRESS:
            bound = bound_to_address(certificate, address)
        else:
            bound = bound_to_domain(certificate, address_domain(address))
        if not bound:
            raise AgentError(Code.NO_RECIPIENT_CERTIFICATE, f"not bound to the {binding}")
        _require_encryption_usage(certificate)
        if not isinstance(certificate.public_key(), rsa.RSAPublicKey):
            # Key transport is RSA only (RFC 8551 2.3; Direct Applicability Statement 5.3).
            raise AgentError(Code.WEAK_ALGORITHM, "not an RSA key")
        require_acceptable(certificate, env.policy, what="recipient certificate")
        check_validity(certificate, at, what="recipient certificate")
        if not anchors:
            raise AgentError(Code.UNTRUSTED_SIGNER, "no anchors for outgoing mail")
        return _first_valid_path(certificate, extra=extra, anchors=anchors, env=env, at=at)

    # Keyed by the certificates discovery returned this time, never by the address alone: a
    # changed DNS/LDAP answer is a different key.
    key = ("recipient", certificate, tuple(extra), binding, address, tuple(anchors), env.policy)
    try:
        path = _remembered(key, env=env, at=at, decide=decide)
    except AgentError as exc:
        return exc, None
    return None, path.anchor


def select_recipient_certificates(
    address: str, *, sender_domain: str, env: Environment, at: datetime
) -> tuple[tuple[x509.Certificate, ...], x509.Certificate]:
    """Usable certificates for ``address`` from the first discovery level that has any.

    A certificate is usable if bound to the address (ADDRESS levels) or its domain (DOMAIN
    levels), valid at ``at``, allowed to encipher keys, RSA of at least ``min_rsa_bits``, not
    revoked and chaining to an anchor ``sender_domain`` trusts for outgoing mail. All usable
    certificates of the winning level are returned (certificate rollover, Applicability Statement
    4.0), with the anchor of the first.

    Raises AgentError ``untrusted-recipient`` when some certificate failed only for want of a
    trusted path, ``revocation-unavailable`` (transient) when some failed only because a named
    revocation source could not be read, else ``no-recipient-certificate`` with every reason.
    """
    _require_aware(at)
    anchors = tuple(env.anchors.anchors(sender_domain.lower(), Direction.OUTGOING))
    reasons: list[str] = []
    worst: set[Code] = set()
    levels = iter(env.certificates.candidates(address))
    while True:
        try:
            level = next(levels)
        except StopIteration:
            break
        except AgentError as exc:
            # A level that fails transiently ends the search (the resolver raises it); the
            # reasons the earlier levels gave go with it, or the sender's DSN and the console
            # would say only that the last lookup failed.
            # A certificate already refused only for want of a trusted path names the cure
            # (trusting its CA) better than "none found"; the search is still unfinished.
            code = Code.UNTRUSTED_RECIPIENT if worst & _UNTRUSTED else exc.code
            raise AgentError(
                code, "; ".join([*reasons, exc.detail]), permanent=exc.permanent
            ) from exc
        if level.error is not None:
            reasons.append(f"{level.source}: lookup failed ({level.error})")
        if not level.certificates:
            if level.error is None:
                reasons.append(f"{level.source}: none found")
            continue
        usable: list[x509.Certificate] = []
        first_anchor: x509.Certificate | None = None
        for certificate in level.certificates:
            problem, anchor = _recipient_problem(
                certificate,
                level.binding,
                address,
                # A directory may return intermediates alongside the certificate (RFC 4398 2.1
                # PKIX chains, LDAP userCertificate lists): they may complete the path.
                extra=level.certificates,
                anchors=anchors,
                env=env,
                at=at,
            )
            if problem is None and anchor is not None:
                usable.append(certificate)
                first_anchor = first_anchor or anchor
            elif problem is not None:
                worst.add(problem.code)
                reasons.append(
                    f"{level.source}: certificate serial {certificate.serial_number:x}: "
                    f"{problem.code}: {problem.detail}"
                )
        if usable and first_anchor is not None:
            return tuple(usable), first_anchor
    detail = "; ".join(reasons) or "no discovery level returned anything"
    if worst & _UNTRUSTED:
        raise AgentError(Code.UNTRUSTED_RECIPIENT, detail)
    if worst & _TRANSIENT:
        raise AgentError(Code.REVOCATION_UNAVAILABLE, detail)
    raise AgentError(Code.NO_RECIPIENT_CERTIFICATE, detail)
