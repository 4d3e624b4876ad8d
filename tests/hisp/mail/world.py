"""Our HISP hosting alice and bob, and a partner HISP (openssl) reached through a static route
to a real SMTP sink. Used by the mail tests and the mail CLI tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hisp.models import Address
from hisp.services import identity, routes
from tests.hisp.mail.partner import PARTNER, Partner, Sink

HOSTED = "hospital.example.org"


@dataclass
class World:
    alice: Address
    bob: Address
    partner: Partner
    sink: Sink


@contextmanager
def make_world(folder: Path) -> Iterator[World]:
    identity.add_domain(HOSTED)
    alice = identity.add_address(
        f"alice@{HOSTED}", name="Alice", password="correct horse battery", address_cert=True
    )
    bob = identity.add_address(f"bob@{HOSTED}", name="Bob", address_cert=True)
    partner = Partner.create(folder / "partner")
    partner.exchange_with(HOSTED)
    with Sink() as sink:
        routes.set_route(PARTNER, sink.target)
        yield World(alice, bob, partner, sink)
