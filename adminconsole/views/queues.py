"""Queues: messages and deliveries by state, with a per-delivery timeline.

Metadata only: ids, Message-IDs, addresses, states, reason codes and times. The stored bytes
(``raw``, ``content``, ``wire``) are deferred so they are never even read, and subjects are not
shown (they may carry PHI).
"""

from __future__ import annotations

from django.contrib import messages
from django.db.models import Q, TextField
from django.db.models.functions import Cast
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from adminconsole import access, impact, services
from adminconsole.access import needs, staff_required
from adminconsole.forms.operations import (
    PERIODS,
    DeliveryFilterForm,
    FailDeliveryForm,
    MessageFilterForm,
)
from adminconsole.roles import Role
from adminconsole.views.common import (
    audit_mail_listing,
    confirm_page,
    paginate,
    query_without_page,
)
from hisp.certificates import display_fingerprint
from hisp.models import Delivery, Message
from hisp.services import audit

MESSAGE_METADATA = (
    "id", "direction", "kind", "state", "reason", "message_id", "envelope_from", "envelope_to",
    "peer", "attempts", "created_at", "updated_at",
)


@staff_required
@needs(Role.OPERATIONS, Role.AUDIT)
@require_GET
def message_list(request: HttpRequest) -> HttpResponse:
    form = MessageFilterForm(request.GET or None)
    found = Message.objects.only(*MESSAGE_METADATA)
    if form.is_valid():
        data = form.cleaned_data
        if data["direction"]:
            found = found.filter(direction=data["direction"])
        if data["state"]:
            found = found.filter(state=data["state"])
        if data["period"]:
            found = found.filter(created_at__gte=timezone.now() - PERIODS[data["period"]])
        if data["q"]:
            # An address is looked for among the recipients too: "did the message to X arrive?"
            # is the usual question. envelope_to is a JSON list; its text form is searched.
            found = found.alias(recipients=Cast("envelope_to", TextField())).filter(
                Q(message_id__icontains=data["q"]) | Q(envelope_from__icontains=data["q"])
                | Q(recipients__icontains=data["q"])
            )
    page = paginate(request, found)
    audit_mail_listing(request, form, page, search="message.console-search",
                       action="message.console-list", listing="messages")
    return render(
        request,
        "adminconsole/message_list.html",
        {"form": form, "page": page, "query": query_without_page(request)},
    )


@staff_required
@needs(Role.OPERATIONS, Role.AUDIT)
@require_GET
def delivery_list(request: HttpRequest) -> HttpResponse:
    form = DeliveryFilterForm(request.GET or None)
    found = (
        Delivery.objects.defer("wire")
        .select_related("message")
        .only(
            "id", "recipient", "state", "detail", "attempts", "next_attempt_at", "updated_at",
            "message__id", "message__direction", "message__message_id",
            "message__envelope_from",
        )
        .order_by("-updated_at", "-id")
    )
    if form.is_valid():
        data = form.cleaned_data
        if data["state"]:
            found = found.filter(state=data["state"])
        if data["period"]:
            found = found.filter(updated_at__gte=timezone.now() - PERIODS[data["period"]])
        if data["q"]:
            found = found.filter(recipient__icontains=data["q"])
    page = paginate(request, found)
    audit_mail_listing(request, form, page, search="delivery.console-search",
                       action="delivery.console-list", listing="deliveries")
    return render(
        request,
        "adminconsole/delivery_list.html",
        {"form": form, "page": page, "query": query_without_page(request)},
    )


@staff_required
@needs(Role.OPERATIONS, Role.AUDIT)
@require_GET
def message_detail(request: HttpRequest, pk: int) -> HttpResponse:
    message = access.get_message(pk)
    deliveries = message.deliveries.defer("wire").order_by("recipient")
    # Staff reading who wrote to whom is message access: audited like a user opening mail.
    audit.record(action="message.console-view", obj=message, request=request)
    return render(
        request,
        "adminconsole/message_detail.html",
        {"message": message, "deliveries": deliveries,
         "signer_fingerprint": display_fingerprint(message.signer_fingerprint)
         if message.signer_fingerprint else "",
         # The Received stamp a line per clause, as folded (who sent it over which TLS).
         "trace_lines": message.trace.removeprefix("Received: ").split("\r\n\t")
         if message.trace else []},
    )


@staff_required
@needs(Role.OPERATIONS, Role.AUDIT)
@require_GET
def delivery_detail(request: HttpRequest, pk: int) -> HttpResponse:
    delivery = access.get_delivery(pk)
    audit.record(action="delivery.console-view", obj=delivery, request=request,
                 message=delivery.message_id)
    outbound = delivery.message.direction == Message.Direction.OUTBOUND
    return render(
        request,
        "adminconsole/delivery_detail.html",
        {
            "delivery": delivery,
            "events": delivery.events.all(),
            "may_retry": outbound and delivery.state in services.RETRYABLE,
            "may_fail": outbound and delivery.state in services.FAILABLE
            and not services.in_flight(delivery),
        },
    )


@staff_required
@needs(Role.OPERATIONS)
@require_POST
def delivery_retry(request: HttpRequest, pk: int) -> HttpResponse:
    delivery = access.get_delivery(pk)
    try:
        services.retry_delivery_now(request=request, delivery=delivery)
    except services.StaffActionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Queued for delivery now.")
    return redirect("adminconsole:delivery-detail", pk=delivery.pk)


@staff_required
@needs(Role.OPERATIONS)
@require_http_methods(["GET", "POST"])
def delivery_fail(request: HttpRequest, pk: int) -> HttpResponse:
    """Failing a delivery by hand needs a reason (audited) and an explicit confirmation."""
    delivery = access.get_delivery(pk)
    if request.method == "GET":
        # The page shows who wrote to whom, as the delivery's own page does: audited alike.
        audit.record(action="delivery.console-view", obj=delivery, request=request,
                     message=delivery.message_id)
    form = FailDeliveryForm(request.POST if request.method == "POST" else None)
    if form.is_valid():
        try:
            services.fail_delivery_now(
                request=request, delivery=delivery, note=form.cleaned_data["note"]
            )
        except services.StaffActionError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "Delivery failed; the sender gets a failure notice.")
            return redirect("adminconsole:delivery-detail", pk=delivery.pk)
    return confirm_page(
        request,
        impact.delivery_failure(delivery),
        form,
        cancel_url=reverse("adminconsole:delivery-detail", kwargs={"pk": delivery.pk}),
    )
