"""Rolling a hosted domain's issuing CA over to a new CA (new key), without breaking trust.

Partners trust our CA certificate as an anchor, so a new CA cannot simply replace the old one:
certificates it issues would be untrusted until every partner has imported it. The rollover
therefore has two steps, with as much time between them as the partners need:

1. ``prepare``: create the successor CA (a new key), make every hosted domain that trusts the
   current CA trust the successor too, and publish its CRL. Nothing is issued by it yet; staff
   send it to partners (``manage.py anchor export DOMAIN --next``) and wait for confirmation.
2. ``activate``: the successor becomes the issuing CA of every domain in the scope, and each
   hosted certificate the old CA issued is renewed under it (new keys; pki.renew). The old CA is
   marked superseded but keeps its key, its CRL and OCSP answers, and stays trusted here, so
   mail already signed or encrypted with the old certificates is still accepted and decrypted
   until they expire.

A CA that is being rolled over is identified without extra state: the successor is the newest
usable CA of the same scope that no domain issues from yet (hisp.ca.authority.successor).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from hisp.agent_env import bump_pki_version
from hisp.ca import crl as crls
from hisp.ca.authority import create_ca, scope_domains, scope_for, successor
from hisp.models import Certificate, Domain, TrustAnchor
from hisp.services import audit, pki
from hisp.services.identity import Actor, normalise_domain


class RolloverError(ValueError):
    """The rollover cannot be done as asked (the message says why)."""


@dataclass(frozen=True)
class Activated:
    ca: Certificate
    previous: Certificate
    domains: list[str]
    renewed: list[Certificate]
    pending: int = 0  # certificates left to the renewal task (renew_now=False)


def _domain(name: str) -> Domain:
    domain = Domain.objects.select_related("issuing_ca").filter(name=normalise_domain(name)).first()
    if domain is None:
        raise RolloverError(f"domain {name} is not hosted here")
    if domain.issuing_ca is None:
        raise RolloverError(f"domain {domain.name} has no issuing CA")
    return domain


def pending(name: str) -> Certificate | None:
    """The prepared successor of ``name``'s issuing CA, if a rollover is under way."""
    return successor(_domain(name))


def _trust_successor(current: Certificate, new: Certificate, domains: list[Domain]) -> int:
    """Every hosted domain that trusts ``current`` trusts ``new`` the same way, and every domain
    that will issue from ``new`` trusts it both ways (its own users' mail is validated like any
    other). Idempotent; returns the number of anchors added."""
    wanted: dict[int, tuple[bool, bool]] = {
        a.domain_id: (a.incoming, a.outgoing)
        for a in TrustAnchor.objects.filter(certificate=current, bundle__isnull=True)
    }
    for domain in domains:
        wanted[domain.pk] = (True, True)
    have = set(TrustAnchor.objects.filter(certificate=new).values_list("domain_id", flat=True))
    added = [
        TrustAnchor(
            certificate=new,
            domain_id=domain_id,
            incoming=incoming,
            outgoing=outgoing,
            confirmed_fingerprint=new.fingerprint_sha256,
        )
        for domain_id, (incoming, outgoing) in wanted.items()
        if domain_id not in have
    ]
    TrustAnchor.objects.bulk_create(added)
    return len(added)


def prepare(name: str, *, actor: Actor = None, client: str | None = None) -> Certificate:
    """Step one: the successor CA, trusted here and ready to be sent to partners. Running it
    again returns the same successor."""
    domain = _domain(name)
    current = domain.issuing_ca
    assert current is not None
    with transaction.atomic():
        # One rollover at a time per scope: two staff members preparing at once get one CA.
        Certificate.objects.select_for_update().filter(pk=current.pk).first()
        existing = successor(domain)
        if existing is not None:
            return existing
        new = create_ca(scope_for(domain))
        added = _trust_successor(current, new, scope_domains(domain))
        crls.generate(new)
        bump_pki_version()
        audit.record(action="ca.rollover-prepare", obj=new, actor=actor, client=client,
                     domain=domain.name, previous=current.fingerprint_sha256,
                     fingerprint=new.fingerprint_sha256, anchors_added=added)
    return new


def activate(
    name: str, *, actor: Actor = None, client: str | None = None, renew_now: bool = True
) -> Activated:
    """Step two: issue from the successor and renew every certificate the old CA issued.

    Each renewal generates a key (tenths of a second), so a domain with thousands of addresses
    takes minutes: with ``renew_now=False`` (the console, inside a web request) the switch
    commits at once and the renewals are left to the renewal task, queued on commit, for which
    a certificate of a replaced CA is due (pki.due_for_renewal). ``renewed`` is then empty."""
    domain = _domain(name)
    current = domain.issuing_ca
    assert current is not None
    with transaction.atomic():
        Certificate.objects.select_for_update().filter(pk=current.pk).first()
        new = successor(domain)
        if new is None:
            raise RolloverError(
                f"no successor CA is prepared for {domain.name}: run 'manage.py anchor rollover "
                f"{domain.name}' first and give partners its certificate"
            )
        if new.not_after <= timezone.now():
            raise RolloverError("the prepared successor CA has expired: prepare a new one")
        domains = scope_domains(domain)
        _trust_successor(current, new, domains)
        Domain.objects.filter(pk__in=[d.pk for d in domains]).update(issuing_ca=new)
        Certificate.objects.filter(pk=current.pk, superseded_by__isnull=True).update(
            superseded_by=new
        )
        to_renew = Certificate.objects.filter(
            issued_by=current,
            source=Certificate.Source.HOSTED,
            binding__in=[Certificate.Binding.ADDRESS, Certificate.Binding.DOMAIN],
            superseded_by__isnull=True,
            revoked_at__isnull=True,
            not_after__gt=timezone.now(),
        ).order_by("pk")
        waiting = to_renew.count()
        if renew_now:
            renewed = [pki.renew(row, actor=actor, client=client) for row in to_renew]
        else:
            renewed = []
            transaction.on_commit(_queue_renewals, robust=True)
        bump_pki_version()
        audit.record(action="ca.rollover-activate", obj=new, actor=actor, client=client,
                     domains=[d.name for d in domains], previous=current.fingerprint_sha256,
                     fingerprint=new.fingerprint_sha256, renewed=len(renewed),
                     left_to_the_renewal_task=waiting - len(renewed))
    return Activated(new, current, [d.name for d in domains], renewed, waiting - len(renewed))


def _queue_renewals() -> None:
    from hisp.tasks.pki import renew_certificates

    renew_certificates.delay()  # should the broker be down, the 6-hourly run does the same
