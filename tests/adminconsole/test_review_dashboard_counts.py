"""Each dashboard count links to a list, and the list shows the rows counted: before, the
expiring-certificates list also showed renewed (superseded) and discovered certificates the
count leaves out, and the 24-hour message counts led to every message ever in that state."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.test import Client
from django.urls import reverse
from django.utils import timezone

from hisp.models import Certificate, Message
from tests.adminconsole import pkitools
from tests.adminconsole.world import World


def _expiring(world: World, name: str, *, source: str, **fields: Any) -> Certificate:
    made = pkitools.make_leaf(pkitools.make_ca(f"{name} CA"), name, days=10)
    return pkitools.store(made, source=source, binding=Certificate.Binding.ADDRESS,
                          bound_name=name, **fields)


def _expiring_link(body: str) -> str:
    found = re.search(r'<a href="(/console/certificates/[^"]+)">1</a>', body)
    assert found, "the expiring count's link"
    return found.group(1).replace("&amp;", "&")


def test_the_expiring_count_and_its_list_agree(staff_client: Client, world: World) -> None:
    renewed = _expiring(world, "old@direct.example.org", source=Certificate.Source.HOSTED)
    Certificate.objects.filter(pk=renewed.pk).update(superseded_by=world.certificate)
    _expiring(world, "them@partner.example.net", source=Certificate.Source.DISCOVERED)
    in_use = _expiring(world, "due@direct.example.org", source=Certificate.Source.HOSTED)
    dashboard = staff_client.get(reverse("adminconsole:dashboard"))
    assert dashboard.context["expiring_count"] == 1
    listed = staff_client.get(_expiring_link(dashboard.content.decode()))
    assert [c.pk for c in listed.context["page"]] == [in_use.pk]


def _message(state: str, direction: str, *, age: timedelta, n: int) -> Message:
    message = Message.objects.create(direction=direction, state=state, raw=b"x",
                                     message_id=f"<age{n}@direct.example.org>",
                                     envelope_from="alice@direct.example.org")
    Message.objects.filter(pk=message.pk).update(created_at=timezone.now() - age)
    return message


def test_the_24_hour_message_counts_lead_to_those_messages(
    staff_client: Client, world: World
) -> None:
    Message.objects.all().delete()
    recent = _message(Message.State.FAILED, Message.Direction.OUTBOUND, age=timedelta(hours=2), n=1)
    _message(Message.State.FAILED, Message.Direction.OUTBOUND, age=timedelta(days=3), n=2)
    _message(Message.State.FAILED, Message.Direction.INBOUND, age=timedelta(hours=1), n=3)
    body = staff_client.get(reverse("adminconsole:dashboard")).content.decode()
    row = re.search(r"<tr><th>Failed</th>.*?</tr>", body)
    assert row, "the Failed row"
    links = re.findall(r'<a href="([^"]+)">1<span', row.group(0))
    assert len(links) == 2  # in and out: one failed message each in the last 24 hours
    listed = staff_client.get(links[1].replace("&amp;", "&"))
    assert [m.pk for m in listed.context["page"]] == [recent.pk]


def test_the_message_list_filters_the_last_24_hours(staff_client: Client, world: World) -> None:
    Message.objects.all().delete()
    recent = _message(Message.State.SENT, Message.Direction.OUTBOUND, age=timedelta(hours=3), n=1)
    _message(Message.State.SENT, Message.Direction.OUTBOUND, age=timedelta(hours=30), n=2)
    listed = staff_client.get(reverse("adminconsole:message-list"), {"period": "24h"})
    assert [m.pk for m in listed.context["page"]] == [recent.pk]


def test_failed_deliveries_needing_attention_are_the_recent_ones(
    staff_client: Client, world: World
) -> None:
    from hisp.models import Delivery

    old = Delivery.objects.create(message=world.message, recipient="old@partner.example.net",
                                  state=Delivery.State.FAILED)
    Delivery.objects.filter(pk=old.pk).update(updated_at=timezone.now() - timedelta(days=40))
    recent = Delivery.objects.create(message=world.message, recipient="new@partner.example.net",
                                     state=Delivery.State.FAILED)
    dashboard = staff_client.get(reverse("adminconsole:dashboard"))
    assert dashboard.context["failed_count"] == 1
    found = re.search(r'<a href="([^"]+)">Failed[^<]*</a>', dashboard.content.decode())
    assert found, "the failed deliveries link"
    listed = staff_client.get(found.group(1).replace("&amp;", "&"))
    assert [d.pk for d in listed.context["page"]] == [recent.pk]
