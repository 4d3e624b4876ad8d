"""A HISP with thousands of addresses and anchors keeps usable pages. A domain's certificates are
listed up to a limit, the domain's own (CA and domain-bound) first, with a link to all of them
in the certificate list, as its addresses are; the anchor list is paged. Before, every
certificate of the domain (one per address, one more per renewal) and every anchor of every
domain was rendered on one page."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from adminconsole.views.domains import CERTIFICATES_SHOWN
from hisp.models import Certificate, Domain
from tests.adminconsole.world import World


def _address_certificates(domain: Domain, n: int) -> None:
    now = timezone.now()
    Certificate.objects.bulk_create(
        Certificate(
            der=b"x", subject=f"CN=a{i}@{domain.name}", issuer="CN=x", serial=secrets.token_hex(8),
            not_before=now, not_after=now + timedelta(days=300),
            fingerprint_sha256=secrets.token_hex(32), binding=Certificate.Binding.ADDRESS,
            bound_name=f"a{i:04d}@{domain.name}", source=Certificate.Source.HOSTED, domain=domain,
        )
        for i in range(n)
    )


def test_the_domain_page_lists_a_bounded_number_of_certificates(
    staff_client: Client, world: World
) -> None:
    _address_certificates(world.domain, CERTIFICATES_SHOWN + 50)
    total = Certificate.objects.filter(domain=world.domain).count()
    with CaptureQueriesContext(connection) as queries:
        response = staff_client.get(
            reverse("adminconsole:domain-detail", kwargs={"pk": world.domain.pk})
        )
    body = response.content.decode()
    assert len(response.context["certificates"]) == CERTIFICATES_SHOWN
    assert response.context["certificate_count"] == total
    # The domain's own CA is listed first, however many addresses sort before it.
    assert response.context["certificates"][0].pk == world.domain.issuing_ca_id
    link = f'{reverse("adminconsole:certificate-list")}?domain={world.domain.pk}'
    assert link in body
    assert len(queries) < 25
    listed = staff_client.get(link)
    assert listed.context["page"].paginator.count == total


def test_the_certificate_list_filters_by_domain(staff_client: Client, world: World) -> None:
    other = Domain.objects.create(name="other.example.org")
    _address_certificates(other, 3)
    listed = staff_client.get(reverse("adminconsole:certificate-list"), {"domain": other.pk})
    assert listed.context["page"].paginator.count == 3


def test_the_anchor_list_is_paged_in_constant_queries(staff_client: Client, world: World) -> None:
    from adminconsole.views.trust import ANCHORS_PER_PAGE
    from hisp.models import TrustAnchor

    now = timezone.now()
    partners = Certificate.objects.bulk_create(
        Certificate(
            der=b"x", subject=f"CN=Member {i:04d}", issuer="CN=x", serial=secrets.token_hex(8),
            not_before=now, not_after=now + timedelta(days=300),
            fingerprint_sha256=secrets.token_hex(32), binding=Certificate.Binding.CA,
            bound_name="", source=Certificate.Source.ANCHOR,
        )
        for i in range(ANCHORS_PER_PAGE + 30)
    )
    TrustAnchor.objects.bulk_create(
        TrustAnchor(certificate=c, domain=world.domain, bundle=world.bundle) for c in partners
    )
    url = reverse("adminconsole:anchor-list")
    with CaptureQueriesContext(connection) as queries:
        first = staff_client.get(url)
    assert len(first.context["page"]) == ANCHORS_PER_PAGE
    assert len(queries) < 20
    second = staff_client.get(url, {"page": "2"})
    assert len(second.context["page"]) == TrustAnchor.objects.count() - ANCHORS_PER_PAGE
    assert 'rel="next"' in first.content.decode()


def test_all_addresses_of_a_domain_are_those_of_that_domain_only(
    staff_client: Client, db: None
) -> None:
    from adminconsole.views.domains import ADDRESSES_SHOWN
    from hisp.models import Address

    short = Domain.objects.create(name="clinic.org")
    longer = Domain.objects.create(name="clinic.org.au")
    Address.objects.bulk_create(
        Address(address=f"a{i:04d}@{d.name}", domain=d, display_name="x")
        for d in (short, longer) for i in range(ADDRESSES_SHOWN + 1)
    )
    body = staff_client.get(
        reverse("adminconsole:domain-detail", kwargs={"pk": short.pk})
    ).content.decode()
    link = f'{reverse("adminconsole:address-list")}?domain={short.pk}'
    assert link in body
    listed = staff_client.get(link).context["page"]
    assert listed.paginator.count == ADDRESSES_SHOWN + 1
    assert all(a.domain_id == short.pk for a in listed)
