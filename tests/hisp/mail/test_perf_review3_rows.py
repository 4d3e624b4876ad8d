"""The hot paths' INSERT text (hisp.services.rows.insert_sql) takes a plain field's value in one
attribute read and one get_prep_value, not through Django's three generic layers per value,
and still stores what bulk_create stores for the values those layers treat specially."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from django.db.models import Field
from django.utils.functional import lazy

from hisp.models import Message
from hisp.services import rows


def _message(**fields: Any) -> Message:
    return Message(**{
        "direction": Message.Direction.OUTBOUND,
        "kind": Message.Kind.MDN,
        "raw": b"\x00raw",
        "envelope_from": "sender@h.example",
        "envelope_to": ["doc@partner.example.net"],
        "subject": "Referral",
        **fields,
    })


@contextmanager
def _fields_through(*methods: Any) -> Iterator[dict[str, list[str]]]:
    """For each of ``methods`` (Field methods), the names of the fields it ran for meanwhile."""
    codes = {method.__code__: method.__name__ for method in methods}
    seen: dict[str, list[str]] = {name: [] for name in codes.values()}

    def watch(frame: FrameType, event: str, _arg: object) -> None:
        if event == "call" and frame.f_code in codes:
            seen[codes[frame.f_code]].append(frame.f_locals["self"].name)

    sys.setprofile(watch)
    try:
        yield seen
    finally:
        sys.setprofile(None)


def test_it_converts_plain_text_fields_without_djangos_generic_layers(db: None) -> None:
    with _fields_through(Field.get_db_prep_save, Field.pre_save) as seen:
        rows.insert_sql(Message, [_message()])
    # Only the fields whose classes change those steps (JSON, bytes, keys, clocks) take them.
    assert "raw" in seen["get_db_prep_save"]
    for name in ("direction", "kind", "state", "subject", "envelope_from", "signer"):
        assert name not in seen["get_db_prep_save"]
        assert name not in seen["pre_save"]


def test_its_update_converts_plain_text_fields_without_djangos_generic_layers(db: None) -> None:
    with _fields_through(Field.get_db_prep_save) as seen:
        rows.update_sql(Message, {"subject": "s", "state": "delivered", "header_to": ["a"]},
                        where={"pk": 1})
    assert seen["get_db_prep_save"] == ["header_to"]


def test_it_stores_lazy_text_as_bulk_create_does(db: None) -> None:
    subject = lazy(lambda: "Referral \N{SNOWMAN}", str)()
    [ours] = rows.insert(Message, [_message(subject=subject)])
    [django] = Message.objects.bulk_create([_message(subject=subject)])
    stored = dict(Message.objects.filter(pk__in=[ours.pk, django.pk]).values_list("pk", "subject"))
    assert stored == {ours.pk: "Referral \N{SNOWMAN}", django.pk: "Referral \N{SNOWMAN}"}


def test_it_passes_a_value_with_as_sql_through_as_django_does(db: None) -> None:
    class Compiled:
        """A value that compiles itself (not an expression): Field.get_db_prep_save keeps it."""

        def as_sql(self, *_: object) -> tuple[str, list[object]]:
            return "%s", ["x"]

    value = Compiled()
    _sql, params = rows.insert_sql(Message, [_message(subject=value)])
    assert any(p is value for p in params)
