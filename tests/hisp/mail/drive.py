"""Running the pipeline in the test process: what the workers would do, step by step, calling
the same services the Celery tasks call (the worker tests run the real worker)."""

from __future__ import annotations

from hisp.models import Delivery, Message
from hisp.services import inbound, outbound


def drain(max_rounds: int = 20) -> int:
    """Process everything that is ready until nothing is; returns the steps taken."""
    steps = 0
    for _ in range(max_rounds):
        progressed = False
        for pk in Message.objects.filter(
            direction=Message.Direction.INBOUND, state=Message.State.RECEIVED
        ).values_list("pk", flat=True):
            inbound.process(pk)
            progressed = True
        for pk in Message.objects.filter(
            direction=Message.Direction.OUTBOUND, state=Message.State.QUEUED
        ).values_list("pk", flat=True):
            outbound.process(pk)
            progressed = True
        for pk in Delivery.objects.filter(
            message__direction=Message.Direction.OUTBOUND,
            state=Delivery.State.QUEUED,
            wire__isnull=False,
            claimed_at__isnull=True,
        ).values_list("pk", flat=True):
            outbound.deliver(pk, only_due=True)
            progressed = True
        if not progressed:
            return steps
        steps += 1
    raise AssertionError("the pipeline did not settle")
