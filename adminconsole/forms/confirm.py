"""The explicit confirmation that every destructive console action asks for.

The box's label is set by the page from ``adminconsole.impact`` (it names the object), so what is
ticked is never a generic "OK"; a missing tick is a form error and nothing is done.
"""

from __future__ import annotations

from django import forms

from adminconsole.forms.fields import PlainTextField

CONFIRM_REQUIRED = "Tick the box to confirm. Nothing was changed."


def confirm_field() -> forms.BooleanField:
    return forms.BooleanField(
        label="I understand what happens now.", error_messages={"required": CONFIRM_REQUIRED}
    )


def reason_field(*, required: bool = True) -> PlainTextField:
    return PlainTextField(
        label="Reason", max_length=200, required=required,
        help_text="Kept in the audit log with this action.",
        error_messages={"required": "Say why: the reason is kept in the audit log."},
    )


class ConfirmForm(forms.Form):
    confirm = confirm_field()


class ReasonConfirmForm(forms.Form):
    reason = reason_field()
    confirm = confirm_field()
