"""Routes: a destination domain delivered to a fixed host:port instead of its MX records, or
through its MX records (target ``MX``) with per-domain policies (STARTTLS required, hold
without a certificate)."""

from __future__ import annotations

import ipaddress
import re

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from hisp.agent_env import cached_rows
from hisp.models import Domain, Route
from hisp.services import audit
from hisp.services.identity import normalise_domain
from hisp.services.mail import hosted_domain

Actor = AbstractBaseUser | str | None


class RouteError(ValueError):
    pass


class RouteChanged(RouteError):
    """The route is no longer what the staff member confirmed replacing."""


class HostedDomainRoute(RouteError):
    """A route was asked for a domain hosted here."""


def lookup(domain: str) -> Route | None:
    """The static route for ``domain``, if any. Egress asks for every message, so the answer is
    remembered per process while the directory stamp is unchanged (hisp.agent_env.cached_rows:
    at most a second behind a change). Read-only: callers must not change the row.

    A route left from before its domain was hosted here is not one: the domain's mail is
    delivered to its own mailboxes, and the route's policies (a hold) must not apply to it."""
    name = domain.lower().rstrip(".")
    if hosted_domain(name):
        return None
    return cached_rows(("route", name), lambda: Route.objects.filter(domain=name).first())


def refuse_hosted(domain: str) -> None:
    """Raise ``HostedDomainRoute`` when ``domain`` is a domain hosted here."""
    name = normalise_domain(domain)
    # Our own domains' mail goes to their mailboxes here: a route would send it elsewhere (or
    # back to us, a loop), and its hold policy would hold mail between our own users.
    if Domain.objects.filter(name=name).exists():
        raise HostedDomainRoute(
            f"{name} is hosted here: its mail is delivered to its own mailboxes, "
            "so it cannot have a route"
        )


MX = "MX"  # the target that keeps the domain's MX records


# A host name of letters, digits, hyphens (and underscores, seen in internal names) in dot-
# separated labels of at most 63 (RFC 1123 section 2.1), at most 253 in all.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*\.?\Z")


def parse_target(target: str) -> tuple[str, int]:
    """``HOST:PORT``, or ``MX`` (any case) as ``("", 25)``. HOST is an IP address (IPv6 in
    brackets or not) or a host name: anything else (a URL, a space, a typo'd separator) would
    be stored, and every message to the domain deferred for days before failing."""
    if target.strip().upper() == MX:
        return "", 25
    host, sep, port_text = target.strip().rpartition(":")
    host = host.strip("[]")
    if (
        not sep
        or not _valid_host(host)
        or not (port_text.isascii() and port_text.isdigit())
        or not 0 < int(port_text) <= 65535
    ):
        raise RouteError(f"expected HOST:PORT or MX, got {target!r}")
    return host, int(port_text)


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return _HOST_NAME.match(host) is not None
    return True


def set_route(
    domain: str,
    target: str,
    *,
    require_tls: bool | None = None,
    hold_pending_certificate: bool | None = None,
    actor: Actor = None,
    client: str | None = None,
) -> Route:
    name = normalise_domain(domain)
    host, port = parse_target(target)
    refuse_hosted(name)
    route, created = Route.objects.get_or_create(domain=name, defaults={"host": host, "port": port})
    route.host, route.port = host, port
    if require_tls is not None:
        route.require_tls = require_tls
    if hold_pending_certificate is not None:
        route.hold_pending_certificate = hold_pending_certificate
    route.save()
    _audit_set(route, created=created, actor=actor, client=client)
    return route


def _audit_set(
    route: Route,
    *,
    created: bool,
    actor: Actor,
    client: str | None,
    previous: dict[str, object] | None = None,
    reason: str = "",
) -> None:
    audit.record(
        action="route.set",
        obj=route,
        actor=actor,
        client=client,
        domain=route.domain,
        target=route.target,
        created=created,
        require_tls=route.require_tls,
        hold_pending_certificate=route.hold_pending_certificate,
        **({"previous": previous} if previous else {}),
        **({"reason": reason} if reason else {}),
    )


def delete_route(
    domain: str, *, actor: Actor = None, client: str | None = None, reason: str = ""
) -> None:
    name = normalise_domain(domain)
    route = Route.objects.filter(domain=name).first()
    if route is None:
        raise RouteError(f"no route for {name}")
    # What the route was goes into the log too: deleting it may drop a STARTTLS requirement,
    # or a hold (the deliveries held for a certificate then fail at their next re-check).
    target = f"{route.host}:{route.port}" if route.host else "MX"
    audit.record(
        action="route.delete",
        obj=route,
        actor=actor,
        client=client,
        domain=name,
        target=target,
        require_tls=route.require_tls,
        hold_pending_certificate=route.hold_pending_certificate,
        **({"reason": reason} if reason else {}),
    )
    route.delete()


NONE = "none"  # the state of a domain without a route


def state(route: Route | None) -> str:
    """A route as one string, for a confirmation to carry: the row and everything that decides
    where and how the domain's mail goes."""
    if route is None:
        return NONE
    return (
        f"{route.pk}:{route.target}:tls={int(route.require_tls)}"
        f":hold={int(route.hold_pending_certificate)}"
    )


def change_route(
    domain: str,
    target: str,
    *,
    expected: str,
    require_tls: bool,
    hold_pending_certificate: bool,
    reason: str = "",
    actor: Actor = None,
    client: str | None = None,
) -> Route:
    """Set the route of ``domain`` only if it is still in the ``expected`` state (``state()``
    of the route the staff member was shown, ``NONE`` for a new one): a route created, changed
    or deleted meanwhile raises ``RouteChanged`` and nothing is written."""
    name = normalise_domain(domain)
    host, port = parse_target(target)
    refuse_hosted(name)
    with transaction.atomic():
        # The row lock keeps a second confirmation of the same replacement waiting until this
        # one commits; it then sees the new state and is refused.
        current = Route.objects.select_for_update().filter(domain=name).first()
        if state(current) != expected:
            raise RouteChanged(f"the route for {name} was changed meanwhile")
        previous = None
        if current is None:
            try:
                with transaction.atomic():
                    route = Route.objects.create(
                        domain=name,
                        host=host,
                        port=port,
                        require_tls=require_tls,
                        hold_pending_certificate=hold_pending_certificate,
                    )
            except IntegrityError:  # created by someone else since the read above
                raise RouteChanged(f"a route for {name} was set meanwhile") from None
        else:
            previous = {
                "target": current.target,
                "require_tls": current.require_tls,
                "hold_pending_certificate": current.hold_pending_certificate,
            }
            route = current
            route.host, route.port = host, port
            route.require_tls = require_tls
            route.hold_pending_certificate = hold_pending_certificate
            route.save()
        _audit_set(
            route,
            created=current is None,
            actor=actor,
            client=client,
            previous=previous,
            reason=reason,
        )
    return route
