"""Routes: destination domains delivered to a fixed host instead of their MX records, or
through them with per-domain policies."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from adminconsole import access, impact
from adminconsole.access import needs, staff_required
from adminconsole.forms.confirm import ReasonConfirmForm
from adminconsole.forms.operations import RouteForm, RouteReplaceForm
from adminconsole.roles import Role
from adminconsole.views.common import confirm_page
from hisp.models import Domain, Route
from hisp.services import audit, identity, routes

# The fields of step one, carried through the replacement's confirmation.
_ROUTE_FIELDS = ("domain", "host", "port", "require_tls", "hold_pending_certificate")


def _list(request: HttpRequest, form: RouteForm, *, status: int = 200) -> HttpResponse:
    listed = Route.objects.all()
    # A route set before its domain was hosted here is never used (routes.lookup): say so, so
    # that staff delete it rather than trust it.
    hosted = set(
        Domain.objects.filter(name__in=listed.values("domain")).values_list("name", flat=True)
    )
    return render(
        request,
        "adminconsole/route_list.html",
        {"routes": listed, "hosted": hosted, "form": form},
        status=status,
    )


@staff_required
@require_GET
def route_list(request: HttpRequest) -> HttpResponse:
    return _list(request, RouteForm())


def _new_route(data: dict[str, Any]) -> Route:
    """The route as typed (unsaved), for the confirmation page."""
    return Route(
        domain=data["domain"],
        host=data["host"],
        port=data["port"] if data["host"] else 25,  # routes.parse_target: MX is ("", 25)
        require_tls=data["require_tls"],
        hold_pending_certificate=data["hold_pending_certificate"],
    )


def _same(route: Route, new: Route) -> bool:
    return (route.target, route.require_tls, route.hold_pending_certificate) == (
        new.target, new.require_tls, new.hold_pending_certificate
    )


def _replace_page(
    request: HttpRequest, current: Route, new: Route, form: RouteReplaceForm, *, status: int
) -> HttpResponse:
    response = confirm_page(
        request, impact.route_replacement(current, new), form,
        cancel_url=reverse("adminconsole:route-list"),
    )
    # confirm_page answers a POST with 400 (it did not act); the first showing of this page
    # is the answer to step one's POST, and nothing is wrong with it.
    response.status_code = status
    return response


def _change(request: HttpRequest, data: dict[str, Any], *, expected: str, reason: str) -> Route:
    return routes.change_route(
        data["domain"],
        f"{data['host']}:{data['port']}" if data["host"] else routes.MX,
        expected=expected,
        require_tls=data["require_tls"],
        hold_pending_certificate=data["hold_pending_certificate"],
        reason=reason,
        actor=request.user,
        client=audit.client_address(request),
    )


def _done(request: HttpRequest, route: Route) -> HttpResponse:
    where = (f"now goes to {route.host}:{route.port}" if route.host
             else "goes through its MX records with these settings")
    messages.success(request, f"Mail for {route.domain} {where}.")
    return redirect("adminconsole:route-list")


def _changed_meanwhile(request: HttpRequest, data: dict[str, Any], reason: str) -> HttpResponse:
    """A stale confirmation: nothing is written; the staff member sees the route as it is now
    and decides again."""
    current = Route.objects.filter(domain=data["domain"]).first()
    new = _new_route(data)
    if current is None:
        form = RouteForm({k: v for k, v in data.items() if v is not False})
        form.is_valid()
        form.add_error(None, f"The route for {data['domain']} was deleted meanwhile: nothing was "
                             "changed. Save again to set it.")
        return _list(request, form, status=400)
    if _same(current, new):
        messages.info(request, f"The route for {data['domain']} was changed meanwhile, to what "
                               "you asked for: nothing more was changed.")
        return redirect("adminconsole:route-list")
    messages.error(request, f"The route for {data['domain']} was changed meanwhile: nothing was "
                            "changed. This is the route it replaces now.")
    form = RouteReplaceForm(
        initial={**data, "previous": routes.state(current), "reason": reason}
    )
    return _replace_page(request, current, new, form, status=400)


@staff_required
@needs(Role.OPERATIONS)
@require_POST
def route_set(request: HttpRequest) -> HttpResponse:
    """Create a route at once, or replace one only after confirming what changes (with a
    reason, as deleting one)."""
    if "previous" in request.POST:
        return _confirm_replacement(request)
    form = RouteForm(request.POST)
    if not form.is_valid():
        return _list(request, form, status=400)
    data = form.cleaned_data
    try:
        # Before any replacement page: no confirmation can make such a route acceptable.
        routes.refuse_hosted(data["domain"])
    except routes.HostedDomainRoute as exc:
        form.add_error("domain", str(exc))
        return _list(request, form, status=400)
    current = Route.objects.filter(domain=data["domain"]).first()
    new = _new_route(data)
    if current is not None:
        if _same(current, new):
            messages.info(request, f"The route for {current.domain} is already set so: nothing "
                                   "was changed.")
            return redirect("adminconsole:route-list")
        replace = RouteReplaceForm(initial={**data, "previous": routes.state(current)})
        return _replace_page(request, current, new, replace, status=200)
    try:
        route = _change(request, data, expected=routes.NONE, reason="")
    except routes.RouteChanged:
        return _changed_meanwhile(request, data, "")
    except (routes.RouteError, identity.IdentityError) as exc:
        form.add_error(None, str(exc))
        return _list(request, form, status=400)
    return _done(request, route)


def _confirm_replacement(request: HttpRequest) -> HttpResponse:
    form = RouteReplaceForm(request.POST)
    valid = form.is_valid()
    data = {name: form.cleaned_data[name] for name in _ROUTE_FIELDS if name in form.cleaned_data}
    if len(data) != len(_ROUTE_FIELDS) or "previous" not in form.cleaned_data:
        # The hidden fields were not what step one sent: nothing trustworthy to confirm.
        restart = RouteForm(request.POST)
        restart.is_valid()
        restart.add_error(None, "The confirmation was not complete: nothing was changed. "
                                "Set the route again.")
        return _list(request, restart, status=400)
    reason = form.cleaned_data.get("reason", "")
    current = Route.objects.filter(domain=data["domain"]).first()
    if routes.state(current) != form.cleaned_data["previous"] or current is None:
        return _changed_meanwhile(request, data, reason)
    if valid:
        try:
            route = _change(request, data, expected=form.cleaned_data["previous"], reason=reason)
        except routes.RouteChanged:
            return _changed_meanwhile(request, data, reason)
        except (routes.RouteError, identity.IdentityError) as exc:
            form.add_error(None, str(exc))
        else:
            return _done(request, route)
    return _replace_page(request, current, _new_route(data), form, status=400)


@staff_required
@needs(Role.OPERATIONS)
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
