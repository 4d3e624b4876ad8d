"""One of every object the console shows, for tests that walk every page."""

from __future__ import annotations

from dataclasses import dataclass

from hisp.models import (
    Address,
    AddressGrant,
    Certificate,
    Delivery,
    DeliveryEvent,
    Domain,
    Message,
    Route,
    TrustAnchor,
    TrustBundle,
    TrustBundleEvent,
)
from tests.adminconsole import pkitools


@dataclass
class World:
    domain: Domain
    address: Address
    grant: AddressGrant
    certificate: Certificate
    anchor: TrustAnchor
    bundle: TrustBundle
    route: Route
    message: Message
    delivery: Delivery


def build(domain: Domain, address: Address, delegate: object) -> World:
    ca = pkitools.make_ca("Example Direct CA 2")
    leaf = pkitools.make_leaf(ca, address.address)
    certificate = pkitools.store(
        leaf,
        source=Certificate.Source.HOSTED,
        binding=Certificate.Binding.ADDRESS,
        bound_name=address.address,
        address=address,
        domain=domain,
        issued_by=domain.issuing_ca,
    )
    partner = pkitools.store(pkitools.make_ca("Partner HISP CA"), source=Certificate.Source.ANCHOR)
    bundle = TrustBundle.objects.create(
        name="Community bundle",
        url="https://bundles.example.net/community.p7b",
        domain=domain,
        last_result=TrustBundle.Result.FETCH_ERROR,
        last_error="connection refused",
    )
    TrustBundleEvent.objects.create(
        bundle=bundle, result=TrustBundle.Result.OK, digest="ab" * 32, added=["cd" * 32]
    )
    anchor = TrustAnchor.objects.create(
        certificate=partner, domain=domain, confirmed_fingerprint=partner.fingerprint_sha256
    )
    message = Message.objects.create(
        direction=Message.Direction.OUTBOUND,
        state=Message.State.SENT,
        message_id="<m1@direct.example.org>",
        envelope_from=address.address,
        envelope_to=["zoe@partner.example.net"],
        subject="Patient Jane Roe DOB 1970-01-01",
        raw=b"Subject: Patient Jane Roe DOB 1970-01-01\r\n\r\nSECRET-BODY-TEXT\r\n",
    )
    delivery = Delivery.objects.create(
        message=message,
        recipient="zoe@partner.example.net",
        state=Delivery.State.DEFERRED,
        detail="451 4.3.0 try later",
        attempts=2,
    )
    DeliveryEvent.objects.create(delivery=delivery, state=Delivery.State.QUEUED)
    DeliveryEvent.objects.create(
        delivery=delivery, state=Delivery.State.DEFERRED, detail="451 4.3.0 try later"
    )
    grant = AddressGrant.objects.create(user=delegate, address=address, role=AddressGrant.Role.READ)
    route = Route.objects.create(domain="partner.example.net", host="mx.partner.example.net")
    return World(
        domain=domain,
        address=address,
        grant=grant,
        certificate=certificate,
        anchor=anchor,
        bundle=bundle,
        route=route,
        message=message,
        delivery=delivery,
    )
