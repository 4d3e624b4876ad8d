"""Console pages for patient invitations (the plain functions are in adminconsole/invitations.py)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from adminconsole import access
from adminconsole.access import needs, staff_required
from adminconsole.forms.invitations import InvitationForm
from adminconsole.invitations import issue, live_invitation, refusal, revoke
from adminconsole.roles import Role
from adminconsole.services import StaffActionError
from hisp.models import Invitation


@staff_required
@needs(Role.REGISTRATION)
@require_http_methods(["GET", "POST"])
def invite(request: HttpRequest, pk: int) -> HttpResponse:
    """The form is on the address page too; this page shows it again with any error."""
    address = access.get_address(pk)
    form = InvitationForm(request.POST if request.method == "POST" else None)
    if form.is_valid():
        try:
            issued = issue(request=request, address=address, email=form.cleaned_data["email"])
        except StaffActionError as exc:
            form.add_error(None, str(exc))
        else:
            # Rendered once, in this response only: the token is not kept anywhere readable.
            response = render(
                request, "adminconsole/invitation.html", {"address": address, "issued": issued}
            )
            response["Cache-Control"] = "no-store"
            return response
    status = 400 if form.errors else 200
    return render(
        request,
        "adminconsole/invitation.html",
        {
            "address": address,
            "form": form,
            "refused": refusal(address),
            "invitation": live_invitation(address),
        },
        status=status,
    )


@staff_required
@needs(Role.REGISTRATION)
@require_POST
def invitation_revoke(request: HttpRequest, pk: int, invitation_pk: int) -> HttpResponse:
    address = access.get_address(pk)
    invitation = get_object_or_404(Invitation, pk=invitation_pk, address=address)
    try:
        revoke(request=request, invitation=invitation)
    except StaffActionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Invitation revoked: its link no longer works.")
    return redirect("adminconsole:address-detail", pk=address.pk)
