"""The console says where the operator is and what must be compared before trusting an anchor."""

from __future__ import annotations

import re
from typing import Any

from django.contrib.messages import constants
from django.contrib.messages.storage.base import Message
from django.template.loader import render_to_string
from django.test import Client


def test_the_console_menu_marks_the_current_section(staff_client: Client) -> None:
    body = staff_client.get("/console/trust/anchors/").content.decode()
    current = re.findall(r'<a href="([^"]+)" aria-current="page">', body)
    assert current == ["/console/trust/anchors/"]


def test_an_error_notice_interrupts_and_a_success_waits_its_turn(sam: object, rf: Any) -> None:
    request = rf.get("/console/")
    request.user = sam
    page = render_to_string(
        "adminconsole/base.html",
        {"messages": [Message(constants.ERROR, "Nothing was revoked."),
                      Message(constants.SUCCESS, "Proofing recorded.")]},
        request=request,
    )
    items = re.findall(r'<li class="msg-(\w+)"><span role="(\w+)">([^<]*)</span></li>', page)
    assert items == [("error", "alert", "Nothing was revoked."),
                     ("success", "status", "Proofing recorded.")]
