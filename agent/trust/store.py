"""An in-memory ``TrustStore``: anchors per domain and direction (tests, the CLI)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cryptography import x509

from agent.types import Direction


class StaticTrustStore:
    """``incoming``/``outgoing`` map a domain to its anchors; domains compare case-insensitively.

    The Direct trust model is per domain and per direction (Applicability Statement 4.0): the
    anchors a domain accepts signers under need not be those it encrypts to.
    """

    def __init__(
        self,
        *,
        incoming: Mapping[str, Sequence[x509.Certificate]] | None = None,
        outgoing: Mapping[str, Sequence[x509.Certificate]] | None = None,
    ) -> None:
        self._anchors: dict[tuple[str, Direction], tuple[x509.Certificate, ...]] = {}
        for direction, mapping in ((Direction.INCOMING, incoming), (Direction.OUTGOING, outgoing)):
            for domain, anchors in (mapping or {}).items():
                key = (domain.rstrip(".").lower(), direction)
                self._anchors[key] = (*self._anchors.get(key, ()), *anchors)

    @classmethod
    def both_ways(cls, anchors: Mapping[str, Sequence[x509.Certificate]]) -> StaticTrustStore:
        return cls(incoming=anchors, outgoing=anchors)

    def anchors(self, domain: str, direction: Direction) -> tuple[x509.Certificate, ...]:
        return self._anchors.get((domain.rstrip(".").lower(), Direction(direction)), ())
