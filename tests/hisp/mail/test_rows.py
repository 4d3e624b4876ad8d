"""The hot paths' INSERTs (hisp.services.rows) store exactly what Django's bulk_create stores for
the same objects, give each object its own key, and hand what they do not cover to Django."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.models import Model
from django.db.models.functions import Now
from django.utils import timezone

from hisp.models import Address, AuditEvent, Delivery, DeliveryEvent, MailboxEntry, Message
from hisp.services import identity, rows

# Columns a row gets from the clock when it is written: compared for presence, not value.
CLOCK = {"created_at", "updated_at", "at"}


def _message(n: int = 0, **fields: Any) -> Message:
    return Message(**{
        "direction": Message.Direction.OUTBOUND,
        "kind": Message.Kind.MDN,
        "raw": b"\x00\xffraw bytes %d" % n,
        "content": b"inner\r\n" * n,
        "envelope_from": f"sender{n}@h.example",
        "envelope_to": ["doc@partner.example.net", f"other{n}@partner.example.net"],
        "header_to": ["Doc <doc@partner.example.net>"],
        "subject": f"Referral {n} \N{SNOWMAN}",
        **fields,
    })


def _stored(model: type[Model], pk: int) -> dict[str, object]:
    values = model._default_manager.filter(pk=pk).values().get()
    values.pop("id")
    # Each of the two rows compared names its own message (one delivery, or one mailbox entry,
    # per recipient and message).
    values.pop("message_id", None)
    for name in CLOCK & values.keys():
        assert values[name] is not None
        values[name] = "clock"
    return values


def _same_as_bulk_create(model: type[Model], build: Any) -> None:
    ours = rows.insert(model, [build()])
    django = model._default_manager.bulk_create([build()])
    assert ours[0].pk is not None and not ours[0]._state.adding
    assert ours[0]._state.db == "default"
    assert _stored(model, ours[0].pk) == _stored(model, django[0].pk)


@pytest.fixture
def address(db: None) -> Address:
    identity.add_domain("h.example")
    return identity.add_address("alice@h.example", name="Alice")


def test_each_hot_path_model_is_stored_as_bulk_create_stores_it(address: Address) -> None:
    message = Message.objects.create(
        direction=Message.Direction.INBOUND, raw=b"x", envelope_from="doc@partner.example.net",
        envelope_to=["alice@h.example"],
    )
    delivery = Delivery.objects.create(message=message, recipient="alice@h.example")
    received = timezone.now() - timedelta(minutes=3)

    _same_as_bulk_create(Message, lambda: _message(3))
    other = rows.insert(Message, [_message(4)])[0]
    messages = iter([message, other])
    _same_as_bulk_create(
        Delivery,
        lambda: Delivery(message=next(messages), recipient="doc@partner.example.net",
                         state=Delivery.State.QUEUED, wire=b"\x00wire", claimed_at=received),
    )
    _same_as_bulk_create(
        DeliveryEvent,
        lambda: DeliveryEvent(delivery=delivery, state=Delivery.State.DELIVERED, detail="d"),
    )
    _same_as_bulk_create(
        AuditEvent,
        lambda: AuditEvent(actor_label="system", action="message.delivered",
                           object_type="hisp.delivery", object_id=str(delivery.pk),
                           detail={"reason": None, "message": message.pk, "words": ["ü", 1]}),
    )
    messages = iter([message, other])
    _same_as_bulk_create(
        MailboxEntry,
        lambda: MailboxEntry(address=address, message=next(messages), sender="Doc <d@p.example>",
                             recipients=["alice@h.example", "Ünïcode <u@h.example>"],
                             subject="s", snippet="snip", body_text="body " * 50,
                             has_attachments=True, received_at=received),
    )


def test_every_object_gets_its_own_key_in_order(db: None) -> None:
    objs = rows.insert(Message, [_message(n) for n in range(40)])
    assert len({m.pk for m in objs}) == 40
    for n, obj in enumerate(objs):
        assert Message.objects.get(pk=obj.pk).envelope_from == f"sender{n}@h.example"


def test_a_related_object_saved_after_it_was_assigned_gives_its_key(db: None) -> None:
    message = _message(1)
    delivery = Delivery(message=message, recipient="doc@partner.example.net")
    rows.insert(Message, [message])  # saved after the delivery was built
    [stored] = rows.insert(Delivery, [delivery])
    assert Delivery.objects.get(pk=stored.pk).message_id == message.pk


def test_an_unsaved_related_object_or_an_existing_row_is_refused(db: None) -> None:
    with pytest.raises(ValueError, match="unsaved related object"):
        rows.insert(Delivery, [Delivery(message=_message(1), recipient="x@p.example")])
    [saved] = rows.insert(Message, [_message(2)])
    with pytest.raises(ValueError, match="already has a key"):
        rows.insert(Message, [saved])
    assert Delivery.objects.count() == 0 and Message.objects.count() == 1


def test_an_expression_value_goes_through_djangos_compiler(db: None) -> None:
    [message] = rows.insert(Message, [_message(1)])
    sql, _params = rows.insert_sql(
        Delivery, [Delivery(message=message, recipient="x@p.example", next_attempt_at=Now())]
    )
    if connection.vendor == "postgresql":
        assert "STATEMENT_TIMESTAMP()" in sql
    [delivery] = rows.insert(
        Delivery, [Delivery(message=message, recipient="x@p.example", next_attempt_at=Now())]
    )
    assert Delivery.objects.get(pk=delivery.pk).next_attempt_at is not None


def test_a_field_wanting_its_own_placeholder_goes_through_djangos_compiler(
    db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Oracle's binary placeholder is not a plain %s: the cached text must not be used then.
    monkeypatch.setattr(connection.ops, "binary_placeholder_sql", lambda value: "(%s)")
    sql, params = rows.insert_sql(Message, [_message(1)], returning_pk=True)
    assert "(%s)" in sql
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        (pk,) = cursor.fetchone()
    assert bytes(Message.objects.get(pk=pk).raw) == b"\x00\xffraw bytes 1"


def test_the_text_is_one_per_shape(db: None) -> None:
    one, _ = rows.insert_sql(Message, [_message(1)])
    again, _ = rows.insert_sql(Message, [_message(2)])
    two, params = rows.insert_sql(Message, [_message(1), _message(2)], returning_pk=True)
    assert one is again
    assert two.count("(%s") == 2 and two.endswith('RETURNING "id"')
    assert len(params) == 2 * len(rows._columns(Message)[0])


def _finished(n: int) -> dict[str, object]:
    return {
        "state": Message.State.DELIVERED, "reason": "", "content": b"\x00inner %d" % n,
        "message_id": f"<m{n}@partner.example.net>", "header_from": "Doc <d@p.example>",
        "header_to": ["alice@h.example", "Ünïcode <u@h.example>"], "subject": "s \N{SNOWMAN}",
        "signer": "doc@partner.example.net", "claimed_at": None,
    }


def test_an_update_stores_what_the_querysets_update_stores(db: None) -> None:
    claimed = timezone.now()
    received = {"direction": Message.Direction.INBOUND, "state": Message.State.PROCESSING,
                "claimed_at": claimed}
    ours, django = rows.insert(Message, [_message(1, **received), _message(1, **received)])
    lease = {"state": Message.State.PROCESSING, "claimed_at": claimed}
    sql, params = rows.update_sql(Message, _finished(1), where={"pk": ours.pk, **lease})
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        assert cursor.rowcount == 1
    assert Message.objects.filter(pk=django.pk, **lease).update(**_finished(1)) == 1
    assert _stored(Message, ours.pk) == _stored(Message, django.pk)
    assert bytes(Message.objects.get(pk=ours.pk).content) == b"\x00inner 1"


def test_an_update_whose_lease_is_gone_changes_nothing(db: None) -> None:
    claimed = timezone.now()
    [message] = rows.insert(
        Message, [_message(2, state=Message.State.PROCESSING, claimed_at=claimed)]
    )
    later = claimed + timedelta(seconds=1)  # another worker's lease
    sql, params = rows.update_sql(
        Message, _finished(2),
        where={"pk": message.pk, "state": Message.State.PROCESSING, "claimed_at": later},
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        assert cursor.rowcount == 0
    assert Message.objects.get(pk=message.pk).state == Message.State.PROCESSING


def test_an_update_refuses_none_as_an_equality_and_hands_expressions_to_django(
    db: None,
) -> None:
    with pytest.raises(ValueError, match="not an equality"):
        rows.update_sql(Message, {"state": "x"}, where={"pk": 1, "claimed_at": None})
    [message] = rows.insert(Message, [_message(3)])
    sql, params = rows.update_sql(Message, {"claimed_at": Now()}, where={"pk": message.pk})
    if connection.vendor == "postgresql":
        assert "STATEMENT_TIMESTAMP()" in sql
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    assert Message.objects.get(pk=message.pk).claimed_at is not None
