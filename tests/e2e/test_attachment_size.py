"""In Chromium: files over the attachment allowance are caught on the page, before anything is
uploaded (attachments.js, with the allowance the server renders), and without the script the
server's 413 compose page brings back the autosaved draft."""

from __future__ import annotations

import pytest

from hisp.models import Message
from tests.e2e.test_webmail import sign_in
from tests.webmail.personas import make_persona
from webmail.forms import attachment_allowance
from webmail.models import Draft

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
MB = 1024 * 1024


@pytest.fixture
def small_limit(settings):
    settings.HISP_MAX_MESSAGE_BYTES = 2 * MB  # about 1 MB of attachments


def test_files_over_the_allowance_are_stopped_before_upload_and_a_smaller_one_is_sent(
    page, tmp_path, small_limit
):
    alice = make_persona("alice", "clinic.example")
    scan, letter = tmp_path / "scan.pdf", tmp_path / "letter.pdf"
    scan.write_bytes(b"%PDF-1.7 " + b"x" * (3 * MB // 2))
    letter.write_bytes(b"%PDF-1.7 referral letter")
    sign_in(page, alice)
    page.get_by_role("link", name="Write a message").click()
    page.get_by_label("To", exact=True).fill("dana@partner.example")
    page.get_by_label("Subject").fill("Imaging")
    page.get_by_label("Body").fill("Please see the attached scan.")
    sent: list[tuple[str, str, int]] = []
    page.on("request", lambda r: sent.append((r.method, r.url, len(r.post_data_buffer or b""))))

    page.get_by_label("Attachments").set_input_files(str(scan))
    message = page.locator("#attachments-size .notice")
    message.wait_for()
    assert message.inner_text() == (
        "This file is 1.6 MB; secure messages can carry about 1 MB of attachments. "
        "Send them in several messages, or share a smaller file.")
    page.get_by_role("button", name="Send securely").click()
    page.wait_for_timeout(4000)  # autosave's delay has passed too
    assert page.get_by_label("Body").input_value() == "Please see the attached scan."
    field = page.get_by_label("Attachments")
    assert page.evaluate("document.activeElement.id") == "id_attachments"
    assert field.get_attribute("aria-invalid") == "true"
    assert "attachments-size-message" in field.get_attribute("aria-describedby")
    assert page.locator("#attachments-size").get_attribute("aria-live") == "polite"
    # Not sent, and the file went nowhere: background posts (autosave) leave the files out.
    assert not [r for r in sent if r[0] == "POST" and r[1].endswith("/mail/compose/")]
    assert all(size < attachment_allowance() for _method, _url, size in sent)
    assert not Message.objects.exists()

    page.get_by_role("button", name="Remove the chosen files").click()
    assert message.count() == 0
    assert not page.get_by_role("button", name="Remove the chosen files").is_visible()
    assert field.get_attribute("aria-invalid") is None
    field.set_input_files(str(letter))
    assert message.count() == 0
    page.get_by_role("button", name="Send securely").click()
    page.get_by_role("heading", name="Delivery").wait_for()
    assert b"letter.pdf" in bytes(Message.objects.get().raw)
    assert page.csp_problems == []


def test_without_the_script_the_413_page_restores_the_autosaved_draft(
    browser, live_server, tmp_path, small_limit
):
    alice = make_persona("alice", "clinic.example")
    draft = Draft.objects.create(author=alice.user, address=alice.address,
                                 to="dana@partner.example", subject="Imaging",
                                 body="Autosaved text of the referral.")
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(b"%PDF-1.7 " + b"x" * (4 * MB))
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        sign_in(page, alice)
        page.goto(f"/mail/compose/?draft={draft.pk}")
        page.get_by_label("Attachments").set_input_files(str(scan))
        with page.expect_navigation() as navigation:
            page.get_by_role("button", name="Send securely").click()
        assert navigation.value.status == 413
        assert "too large to send" in page.locator("#id_attachments_error").inner_text()
        assert "from the last autosave" in page.locator("#restored-notice").inner_text()
        assert page.get_by_label("Body").input_value() == "Autosaved text of the referral."
        assert not page.get_by_role("button", name="Remove the chosen files").is_visible()
        assert not Message.objects.exists()
    finally:
        context.close()
