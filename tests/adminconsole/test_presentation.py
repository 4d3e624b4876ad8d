"""The console says where the operator is and what must be compared before trusting an anchor."""

from __future__ import annotations

import re

from django.test import Client


def test_the_console_menu_marks_the_current_section(staff_client: Client) -> None:
    body = staff_client.get("/console/trust/anchors/").content.decode()
    current = re.findall(r'<a href="([^"]+)" aria-current="page">', body)
    assert current == ["/console/trust/anchors/"]
