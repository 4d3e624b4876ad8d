"""Routes: destination domains delivered to a fixed host instead of their MX records, or
through them with per-domain policies."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from adminconsole import access, impact
from adminconsole.access import staff_required
from adminconsole.forms.confirm import ReasonConfirmForm
from adminconsole.forms.operations import RouteForm
from adminconsole.views.common import confirm_page
from hisp.models import Route
from hisp.services import audit, identity, routes


def _list(request: HttpRequest, form: RouteForm, *, status: int = 200) -> HttpResponse:
    return render(
        request,
        "adminconsole/route_list.html",
        {"routes": Route.objects.all(), "form": form},
        status=status,
    )


@staff_required
@require_GET
def route_list(request: HttpRequest) -> HttpResponse:
    return _list(request, RouteForm())


@staff_required
@require_POST
def route_set(request: HttpRequest) -> HttpResponse:
    """Create or replace the route of one destination domain."""
    form = RouteForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            route = routes.set_route(
                data["domain"],
                f"{data['host']}:{data['port']}" if data["host"] else routes.MX,
                require_tls=data["require_tls"],
                hold_pending_certificate=data["hold_pending_certificate"],
                actor=request.user,
                client=audit.client_address(request),
            )
        except (routes.RouteError, identity.IdentityError) as exc:
            form.add_error(None, str(exc))
        else:
            where = (f"now goes to {route.host}:{route.port}" if route.host
                     else "goes through its MX records with these settings")
            messages.success(request, f"Mail for {route.domain} {where}.")
            return redirect("adminconsole:route-list")
    return _list(request, form, status=400)


@staff_required
@require_http_methods(["GET", "POST"])
def route_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Deleting a route shows where mail goes instead, and acts only once confirmed."""
    route = access.get_route(pk)
    form = ReasonConfirmForm(request.POST if request.method == "POST" else None)
    if form.is_valid():
        try:
            routes.delete_route(
                route.domain, actor=request.user, client=audit.client_address(request),
                reason=form.cleaned_data["reason"],
            )
        except routes.RouteError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Mail for {route.domain} goes through its MX records "
                                      "again, with the default settings.")
            return redirect("adminconsole:route-list")
    return confirm_page(
        request, impact.route_deletion(route), form, cancel_url=reverse("adminconsole:route-list")
    )
