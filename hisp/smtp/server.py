"""Starting the two listeners: backbone ingress and submission, each on its own thread."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from hisp.smtp.backbone import BackboneHandler
from hisp.smtp.protocol import HispController, smtp_options
from hisp.smtp.submission import SubmissionHandler
from hisp.tls import server_context


@dataclass
class Listeners:
    controllers: list[HispController] = field(default_factory=list)

    def stop(self) -> None:
        for controller in self.controllers:
            controller.stop()
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


def start(*, bind: str, port: int, submission_port: int, **overrides: Any) -> Listeners:
    """Start the listeners whose port is not 0 (0 leaves that listener closed)."""
    # aiosmtpd logs every envelope address at INFO; our own logs carry message ids instead.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    listeners = Listeners()
    try:
        if port:
            listeners.controllers.append(backbone(bind=bind, port=port, **overrides))
            listeners.controllers[-1].start()
        if submission_port:
            listeners.controllers.append(
                submission(bind=bind, port=submission_port, **overrides)
            )
            listeners.controllers[-1].start()
    except BaseException:
        listeners.stop()
        raise
    return listeners
