"""Starting the listeners: backbone ingress, submission and POP3S retrieval (hisp/pop3), each on
its own thread."""

from __future__ import annotations

import contextlib
import logging
import resource
from dataclasses import dataclass, field
from typing import Any

from hisp.pop3 import server as pop3
from hisp.smtp.backbone import BackboneHandler
from hisp.smtp.protocol import HispController, smtp_options
from hisp.smtp.submission import SubmissionHandler
from hisp.tls import server_context


@dataclass
class Listeners:
    controllers: list[HispController] = field(default_factory=list)
    pop3: list[pop3.Pop3Listener] = field(default_factory=list)

    def stop(self) -> None:
        for listener in self.pop3:
            listener.stop()  # one that never started has nothing to stop
        self.pop3.clear()
        for controller in self.controllers:
            controller.stop(no_assert=True)  # one that never started has nothing to stop
        self.controllers.clear()


def backbone(*, bind: str, port: int, **overrides: Any) -> HispController:
    # STARTTLS offered, never required: other HISPs may not support it (RFC 3207 section 4).
    return HispController(
        BackboneHandler(),
        hostname=bind,
        port=port,
        **smtp_options(
            tls_context=server_context(), auth_exclude_mechanism=["LOGIN", "PLAIN"], **overrides
        ),
    )


def submission(*, bind: str, port: int, **overrides: Any) -> HispController:
    return HispController(
        SubmissionHandler(),
        hostname=bind,
        port=port,
        **smtp_options(
            tls_context=server_context(),
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            **overrides,
        ),
    )


class TooFewDescriptors(RuntimeError):
    """The process may not open a descriptor for every session the listeners may hold."""


# Descriptors the listener process needs besides its sessions: database connections (one per
# thread), the broker, the cache, logs, the TLS files.
DESCRIPTOR_MARGIN = 100


def ensure_descriptors(sessions: int) -> None:
    """Room for ``sessions`` sessions (a descriptor each) and :data:`DESCRIPTOR_MARGIN`: the
    soft limit is raised as far as the hard limit allows, and a limit still too low stops the
    start naming the setting. Past it accept() fails with EMFILE under load, and so does every
    database and broker connection the listener needs, mid-session (HISP_SMTP_MAX_SESSIONS
    raised, ``ulimit -n`` not)."""
    needed = sessions + DESCRIPTOR_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return
    with contextlib.suppress(ValueError, OSError):  # above what the kernel allows
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        return
    raise TooFewDescriptors(
        f"the listeners may hold {sessions} sessions (HISP_SMTP_MAX_SESSIONS per listener) and "
        f"need about {needed} file descriptors, but this process may open {soft} "
        f"(ulimit -n, hard limit {'unlimited' if hard == resource.RLIM_INFINITY else hard}): "
        "raise the limit or lower HISP_SMTP_MAX_SESSIONS"
    )


def start(
    *, bind: str, port: int, submission_port: int, pop3_port: int = 0, **overrides: Any
) -> Listeners:
    """Start the listeners whose port is not 0 (0 leaves that listener closed). ``overrides``
    are the SMTP listeners'; the POP3 listener takes its limits from the settings."""
    # aiosmtpd logs every envelope address at INFO; our own logs carry message ids instead.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    listeners = Listeners()
    try:
        if port:
            listeners.controllers.append(backbone(bind=bind, port=port, **overrides))
        if submission_port:
            listeners.controllers.append(
                submission(bind=bind, port=submission_port, **overrides)
            )
        if pop3_port:
            listeners.pop3.append(pop3.listener(bind=bind, port=pop3_port))
        ensure_descriptors(
            sum(c.connections.total for c in listeners.controllers)
            + sum(p.connections.total for p in listeners.pop3)
        )
        for controller in listeners.controllers:
            controller.start()
        for listener in listeners.pop3:
            listener.start()
    except BaseException:
        listeners.stop()
        raise
    return listeners
