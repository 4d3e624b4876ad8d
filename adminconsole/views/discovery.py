"""Discovery: what each level (hosted, imported, DNS CERT, LDAP) finds for a recipient, and
whether a hosted domain could encrypt to it; flushing a cached answer."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from adminconsole import services
from adminconsole.access import needs, staff_required
from adminconsole.forms.operations import DiscoveryForm, FlushForm
from adminconsole.roles import Role
from agent import AgentError
from agent.trust import select_recipient_certificates
from hisp import discovery
from hisp.agent_env import build_environment
from hisp.certificates import fingerprint
from hisp.models import Domain
from hisp.services import audit


@dataclass(frozen=True)
class Verdict:
    """The agent's own selection, as it would run when sending: usable certificates or why not."""

    sender_domain: str
    usable: tuple[str, ...]  # SHA-256 fingerprints
    anchor: str | None
    code: str | None
    reasons: tuple[str, ...]


def _verdict(address: str, sender: Domain) -> Verdict:
    try:
        chosen, anchor = select_recipient_certificates(
            address, sender_domain=sender.name, env=build_environment(), at=timezone.now()
        )
    except AgentError as exc:
        # The detail lists every level and certificate with the reason it was not usable.
        return Verdict(sender.name, (), None, str(exc.code), tuple(exc.detail.split("; ")))
    return Verdict(
        sender.name,
        tuple(fingerprint(c) for c in chosen),
        anchor.subject.rfc4514_string(),
        None,
        (),
    )


@staff_required
@require_GET
def lookup(request: HttpRequest) -> HttpResponse:
    form = DiscoveryForm(request.GET or None)
    report = verdict = None
    error = ""
    if form.is_valid():
        address = form.cleaned_data["address"]
        try:
            report = discovery.lookup_report(address)
        except discovery.DiscoveryError as exc:
            error = str(exc)
        else:
            sender = form.cleaned_data["sender_domain"]
            if sender is not None:
                verdict = _verdict(report.address, sender)
            audit.record(
                action="discovery.lookup",
                obj=("discovery", report.address),
                request=request,
                levels=[f"{lv.source}/{lv.binding}:{len(lv.certificates)}" for lv in report.levels],
                sender_domain=sender.name if sender else None,
                verdict=(verdict.code or "usable") if verdict else None,
            )
    return render(
        request,
        "adminconsole/discovery.html",
        {
            "form": form,
            "flush_form": FlushForm(),
            "report": report,
            "verdict": verdict,
            "error": error,
        },
        status=400 if error else 200,
    )


@staff_required
@needs(Role.OPERATIONS)
@require_POST
def flush(request: HttpRequest) -> HttpResponse:
    form = FlushForm(request.POST)
    if form.is_valid():
        try:
            flushed = services.flush_discovery_cache(request=request, entry=form.cleaned_data["entry"])
        except discovery.DiscoveryError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Cached discovery answers for {flushed} were dropped.")
            return redirect("adminconsole:discovery")
    return render(
        request,
        "adminconsole/discovery.html",
        {"form": DiscoveryForm(), "flush_form": form, "report": None, "verdict": None},
        status=400,
    )
