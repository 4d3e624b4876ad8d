"""The form staff fill in to invite a patient to set up their portal mailbox."""

from __future__ import annotations

from django import forms


class InvitationForm(forms.Form):
    # EmailField refuses control characters, spaces and overlong input with its own message.
    email = forms.EmailField(
        label="Patient's email address",
        max_length=254,  # RFC 5321 4.5.3.1.3 path limit, less the angle brackets
        required=False,
        help_text=(
            "Optional: the link is emailed there (no health information in the text). Leave "
            "empty to hand the link over on paper instead."
        ),
    )
