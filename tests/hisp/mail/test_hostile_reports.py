"""MDNs and DSNs from a trusted but hostile (or broken) HISP: whatever MIME is inside a valid
signature, parsing fails only with ReportError, so the report is rejected as malformed instead
of failing on every attempt (found by fuzzing the parsers)."""

from __future__ import annotations

import pytest

from hisp import dsn, mdn
from hisp.reports import ReportError


def _nested_report(report_type: str, depth: int) -> bytes:
    """A multipart/report whose first part is ``depth`` multiparts deep (about 50 bytes a level)."""
    head = (
        f"Content-Type: multipart/report; report-type={report_type}; boundary=r\r\n\r\n--r\r\n"
    ).encode()
    levels = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(depth)
    )
    return head + levels


@pytest.mark.parametrize(("parse", "report_type"), [
    (mdn.parse, "disposition-notification"), (dsn.parse, "delivery-status"),
])
def test_a_report_nested_too_deeply_is_malformed(parse, report_type):
    """The email package recursed once per level: RecursionError, not ReportError."""
    with pytest.raises(ReportError, match="nested too deeply"):
        parse(_nested_report(report_type, 3000))
