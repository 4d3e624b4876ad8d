"""What one discovery level found, in a shape both the resolver and the cache understand."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509


class Outcome(StrEnum):
    FOUND = "found"  # the lookup worked and returned records (maybe none that parsed)
    NOTHING = "nothing"  # the lookup worked: no such name / no records / no entry
    # The lookup itself failed (time-out, unreachable, malformed answer) or was incomplete (an
    # IPKIX URL could not be read): certificates may still hold what was read before that.
    FAILED = "failed"


@dataclass(frozen=True)
class Found:
    outcome: Outcome
    certificates: tuple[x509.Certificate, ...] = ()
    error: str | None = None  # set when outcome is FAILED
    notes: tuple[str, ...] = ()  # skipped records, unparsable certificates, ignored servers
    ttl: float = 0.0  # how long the publisher lets us keep it (DNS TTL), 0 when it did not say

    @classmethod
    def failed(cls, reason: str, *, notes: tuple[str, ...] = ()) -> Found:
        return cls(Outcome.FAILED, error=reason, notes=notes)
