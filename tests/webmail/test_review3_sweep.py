"""Every webmail URL, as the resolver lists it, meets hostile input (see
test_review3_hostile_requests) from its owner alice and from charlie, an outsider holding
alice's ids: never a 500, never another user's mail, draft, contact or key on the page, and
nothing of alice's changed by charlie."""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from hisp.models import AddressGrant, AppPassword, Folder, Invitation, MailboxEntry
from tests.factories import MailboxEntryFactory, MessageFactory
from tests.webmail import test_review3_hostile_requests as hostile
from tests.webmail.personas import Persona, make_persona, signed_in
from webmail.models import Contact, Draft, WebAuthnDevice
from webmail.urls import urlpatterns

ROUTES = hostile.routes_of(urlpatterns, "webmail")
CCD = (Path(__file__).parent / "data" / "ccd.xml").read_bytes()


def _xdm() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("IHE_XDM/SUBSET01/METADATA.XML", b"<metadata/>")
        archive.writestr("IHE_XDM/SUBSET01/DOC0001.XML", CCD)
    return buffer.getvalue()


@dataclass
class Belongings:
    """One user's objects, each carrying ``marker`` where a page would show it."""

    marker: str
    ids: dict[str, Any]

    def counts(self) -> tuple[int, ...]:
        return tuple(model.objects.filter(pk=self.ids[name]).count() for name, model in (
            ("folder_id", Folder), ("entry_id", MailboxEntry), ("draft_id", Draft),
            ("contact_id", Contact), ("app_password_id", AppPassword),
            ("key_id", WebAuthnDevice), ("grant_id", AddressGrant)))


def _belongings(persona: Persona, delegate: Persona, marker: str) -> Belongings:
    entry = MailboxEntryFactory(
        address=persona.address, subject=f"{marker} subject", body_text=f"{marker} body",
        snippet=f"{marker} body", has_attachments=True,
        message=MessageFactory(to=[persona.address.address], subject=f"{marker} subject",
                               text=f"{marker} body",
                               attachments=[("xdm.zip", "application/zip", _xdm())]),
    )
    token = f"{marker}-invitation-token"
    Invitation.objects.create(address=persona.address,
                              token_hash=hashlib.sha256(token.encode()).hexdigest(),
                              expires_at=timezone.now() + timedelta(days=1))
    return Belongings(marker, {
        "address_id": persona.address.pk,
        "folder_id": Folder.objects.create(address=persona.address, name=f"{marker} folder").pk,
        "folder": "inbox",
        "entry_id": entry.pk,
        "index": 1,
        "member": 1,
        "draft_id": Draft.objects.create(author=persona.user, address=persona.address,
                                         subject=f"{marker} draft").pk,
        "contact_id": Contact.objects.create(owner=persona.user, address="x@friends.example",
                                             name=f"{marker} contact").pk,
        "app_password_id": AppPassword.objects.create(user=persona.user, name=f"{marker} app",
                                                      password_hash="!").pk,
        "key_id": WebAuthnDevice.objects.create(user=persona.user, name=f"{marker} key",
                                                credential_id=f"{marker}-key",
                                                public_key=b"\xa0").pk,
        "grant_id": AddressGrant.objects.create(user=delegate.user, address=persona.address,
                                                role=AddressGrant.Role.READ).pk,
        "token": token,
    })


@pytest.fixture
def cast(db: None) -> dict[str, Any]:
    alice = make_persona("alice", "clinic.example")
    bob = make_persona("bob", "clinic.example")
    charlie = make_persona("charlie", "elsewhere.example")
    return {
        "alice": signed_in(alice), "charlie": signed_in(charlie),
        "mine": _belongings(alice, bob, "ALICE-SECRET"),
        "theirs": _belongings(charlie, bob, "CHARLIE-SECRET"),
    }


def _arguments(route: hostile.Route, ids: dict[str, Any]) -> dict[str, Any]:
    return {name: ids[name] for name in route.arguments}


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.id)
def test_no_webmail_url_answers_hostile_input_with_a_500_or_another_users_data(
    route: hostile.Route, cast: dict[str, Any]
) -> None:
    alice: Client = cast["alice"]
    charlie: Client = cast["charlie"]
    mine: Belongings = cast["mine"]
    theirs: Belongings = cast["theirs"]
    valid = _arguments(route, mine.ids)
    # charlie first, with alice's ids: nothing of hers shown, nothing of hers changed.
    before = mine.counts()
    path = hostile.url(route, valid)
    for label, request in [("GET", lambda c: c.get(path)), ("POST empty", lambda c: c.post(path)),
                           *hostile.hostile_requests(path, set(), set())][:6]:
        hostile.check(request(charlie), f"charlie {label}", secrets=(mine.marker,))
    assert mine.counts() == before, "charlie changed alice's objects"
    # alice, with charlie's ids and ids no column holds: never charlie's things.
    foreign = {k: v for k, v in _arguments(route, theirs.ids).items()
               if k not in ("index", "member", "folder", "token")}  # a token is anyone's
    theirs_before = theirs.counts()
    for label, variant in hostile.url_variants(route, valid, foreign):
        got = alice.get(variant)
        hostile.check(got, f"GET {label}", secrets=(theirs.marker,))
        if label == "valid" or label.endswith("=foreign"):
            posted = alice.post(variant)
            hostile.check(posted, f"POST {label}", secrets=(theirs.marker,))
            if label.endswith("=foreign"):
                assert {got.status_code, posted.status_code} <= {404, 405}, label
    assert theirs.counts() == theirs_before, "alice changed charlie's objects"
    names, files = hostile.field_names(alice.get(path))
    more, more_files = hostile.field_names(alice.post(path, {}))
    for label, request in hostile.hostile_requests(path, names | more, files | more_files):
        hostile.check(request(alice), label, secrets=(theirs.marker,))
