"""Does a subject look like it carries PHI? Subjects travel outside the encryption on the wire
(Direct Applicability Statement 2.3: only the body is protected), so we warn before sending.

Heuristics, tuned to flag rather than miss: dates (a date of birth looks like any date), long
digit runs and MRN-like tokens, and personal names written as "Surname, Given" or after a title
or a word like "patient".
"""

from __future__ import annotations

import re

_CHECKS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a date (dates of birth are PHI)",
     re.compile(r"\b(\d{1,2}[/.-]\d{1,2}[/.-](\d{2}|\d{4})|\d{4}-\d{2}-\d{2})\b")),
    ("a date of birth", re.compile(r"\b(DOB|D\.O\.B\.?|born)\b", re.IGNORECASE)),
    ("a record number", re.compile(r"\b(MRN|SSN|record\s*(no|number|#))\b[:#\s]*\w*", re.IGNORECASE)),
    ("a long number (record or account numbers are PHI)", re.compile(r"\b[A-Z]{0,3}\d{6,}\b")),
    ("a social security number", re.compile(r"\b\d{3}-\d{2}-\d{4}\b")),
    ("a personal name", re.compile(r"\b[A-Z][a-z'’-]+,\s*[A-Z][a-z'’-]+\b")),
    ("a personal name",
     re.compile(r"\b(Mr|Mrs|Ms|Miss|Dr|patient|pt)\.?:?\s+[A-Z][a-z'’-]+", re.IGNORECASE)),
)


def phi_reasons(subject: str) -> list[str]:
    """Why the subject may contain PHI, each reason once; empty when nothing was found."""
    reasons: list[str] = []
    for reason, pattern in _CHECKS:
        if pattern.search(subject) and reason not in reasons:
            reasons.append(reason)
    return reasons
