"""Sending (``POST /api/v1/messages``) and following a sent message's delivery
(``GET /api/v1/messages/<id>``), in the webmail's words for delivery states (webmail/reasons.py,
webmail/listing.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse

from hisp.models import Delivery, Message
from hisp.services.compose import MessageTooLarge, SendingLimited, SubmissionError, submit
from webmail import access
from webmail.api import submissions
from webmail.api.auth import JSON, RFC822, api_view, json_body, media_type
from webmail.api.responses import ApiError, ok
from webmail.listing import summarise
from webmail.reasons import sentence
from webmail.uploads import max_request_bytes


def _submission(request: HttpRequest) -> Message:
    """Check, build and submit the request's message (no key handling here)."""
    client = request.META.get("REMOTE_ADDR") or None
    if media_type(request) == RFC822:
        raw = request.body
        address = submissions.sending_address(request.user, submissions.raw_sender(raw))
        recipients = None  # To, Cc and Bcc of the message, as on the submission port
    else:
        # The body holds base64 attachments: as large as the upload cap, not the 64 KB of
        # the API's other JSON bodies.
        composed = submissions.composed(json_body(request, limit=max_request_bytes()))
        address = submissions.sending_address(request.user, composed.sender)
        recipients = composed.recipients
        try:
            raw = composed.mime(address)
        except SubmissionError as exc:
            raise ApiError(422, "refused", str(exc)) from None
    try:
        return submit(address=address, raw=raw, actor=request.user, peer=submissions.PEER,
                      recipients=recipients, client=client)
    except MessageTooLarge as exc:
        raise ApiError(413, "too-large", str(exc)) from None
    except SendingLimited as exc:
        raise ApiError(429, "sending-limit", str(exc), Retry_After=str(exc.retry_after)) from None
    except SubmissionError as exc:
        raise ApiError(422, "refused", str(exc)) from None


def _sent(request: HttpRequest, message: Message) -> dict[str, Any]:
    return {
        "id": message.pk,
        "message_id": message.message_id,
        # Absolute, as every URL the API gives (next pages, attachments).
        "status_url": request.build_absolute_uri(reverse("api:status", args=[message.pk])),
        "recipients": list(message.envelope_to),
    }


@api_view("POST", body_types=(JSON, RFC822))
def send(request: HttpRequest) -> HttpResponse:
    key = submissions.idempotency_key(request.headers.get("Idempotency-Key"))
    message, replayed = submissions.submit_once(
        user=request.user,
        key=key,
        request_digest=submissions.digest(media_type(request), request.body),
        submit=lambda: _submission(request),
    )
    body = _sent(request, message)
    if replayed:
        return ok(body, 200, Location=body["status_url"], Idempotent_Replayed="true")
    return ok(body, 202, Location=body["status_url"])


def _visible(request: HttpRequest) -> QuerySet[Message]:
    """Regular outbound messages sent as an address the caller holds any active grant on."""
    return Message.objects.filter(
        direction=Message.Direction.OUTBOUND,
        kind=Message.Kind.REGULAR,
        envelope_from__in=access.grants(request.user).values("address__address"),
    ).defer("raw", "content")


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _recipient(delivery: Delivery) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "address": delivery.recipient,
        "state": delivery.state,
        "description": sentence(delivery.state, delivery.detail),
        "updated_at": _time(delivery.updated_at),
        "sent_at": _time(delivery.sent_at),
        "processed_at": _time(delivery.processed_at),
        "dispatched_at": _time(delivery.dispatched_at),
    }
    if delivery.state == Delivery.State.FAILED:
        answer["reason"] = delivery.detail  # an agent or flow code, or the partner's reply
    return answer


@api_view("GET")
def status(request: HttpRequest, message_id: int) -> HttpResponse:
    message = get_object_or_404(_visible(request), pk=message_id)
    deliveries = list(message.deliveries.order_by("recipient").defer("wire"))
    return ok({
        **_sent(request, message),
        "state": summarise([d.state for d in deliveries]),
        "created_at": _time(message.created_at),
        "deliveries": [_recipient(d) for d in deliveries],
    })
