"""The mailboxes the caller may open: owned ones first, then those delegated to them."""

from __future__ import annotations

from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse

from hisp.models import MailboxEntry
from webmail import access
from webmail.api.auth import api_view
from webmail.api.responses import ok


@api_view("GET")
def mailboxes(request: HttpRequest) -> HttpResponse:
    grants = list(access.grants(request.user))
    unread = dict(
        MailboxEntry.objects.filter(address_id__in=[g.address_id for g in grants])
        .values_list("address_id")
        .annotate(n=Count("pk", filter=Q(read=False, folder=MailboxEntry.SystemFolder.INBOX)))
    )
    return ok({"mailboxes": [
        {
            "id": grant.address_id,  # names the mailbox in /api/v1/mailboxes/<id>/messages
            "address": grant.address.address,
            "display_name": grant.address.display_name,
            "role": grant.role,
            "may_send": grant.may_send,
            "unread": unread.get(grant.address_id, 0),
        }
        for grant in grants
    ]})
