"""A post longer than any message we send is refused before its body is read (webmail.uploads),
with a page the clinician can act on: the compose page again, with the last autosaved draft and
the error at the attachments field, or a plain 413 page elsewhere; never a bare 400 or a 500."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from hisp.models import Message
from webmail.forms import attachment_allowance
from webmail.models import Draft

MB = 1024 * 1024


@pytest.fixture
def small_limit(settings, tmp_path):
    settings.HISP_MAX_MESSAGE_BYTES = 512 * 1024  # refused: any body over 1.5 MB
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 10
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    return tmp_path


def _scan() -> SimpleUploadedFile:
    return SimpleUploadedFile("scan.pdf", b"x" * (2 * MB), content_type="application/pdf")


def _post_compose(client, sender, url="/mail/compose/", **fields):
    data = {"sender": sender.pk, "to": "dana@partner.example", "subject": "Imaging",
            "body": "typed after the last autosave", "delivery_notification": "on",
            "attachments": _scan()}
    data.update(fields)
    return client.post(url, data)


def _autosave(client, sender, **fields) -> Draft:
    data = {"sender": sender.pk, "to": "dana@partner.example", "subject": "Imaging",
            "body": "Dear Dana, please see the attached scan of Mrs Jones.",
            "delivery_notification": "on"}
    data.update(fields)
    assert client.post("/mail/compose/draft/", data).status_code == 200
    return Draft.objects.first()  # the newest


def test_an_oversized_compose_post_shows_the_page_again_with_the_autosaved_draft(
    alice, alice_client, small_limit
):
    draft = _autosave(alice_client, alice.address, cc="eve@partner.example")
    response = _post_compose(alice_client, alice.address)
    assert response.status_code == 413
    form = response.context["form"]
    [error] = form.errors["attachments"]
    assert "The files you chose, about 2 MB in all, are too large to send" in error
    assert "Send them in several messages, or share a smaller file." in error
    assert form["body"].value() == "Dear Dana, please see the attached scan of Mrs Jones."
    assert form["cc"].value() == "eve@partner.example"
    assert form["draft"].value() == draft.pk  # later autosaves go on updating the same draft
    page = response.content.decode()
    assert "The text below is from the last autosave of your draft" in page
    assert "Dear Dana, please see the attached scan of Mrs Jones." in page
    assert "typed after the last autosave" not in page  # the body was never read
    assert 'aria-invalid="true"' in page and 'id="id_attachments_error"' in page
    assert "no-store" in response["Cache-Control"]
    assert not Message.objects.exists()
    assert list(small_limit.iterdir()) == []  # not a byte of the upload was stored


def test_the_draft_the_page_was_resumed_from_is_restored(alice, alice_client, small_limit):
    resumed = _autosave(alice_client, alice.address, body="the resumed draft")
    _autosave(alice_client, alice.address, body="another, newer draft")
    response = _post_compose(alice_client, alice.address, url=f"/mail/compose/?draft={resumed.pk}")
    assert response.status_code == 413
    assert response.context["form"]["body"].value() == "the resumed draft"


def test_without_an_autosave_the_page_says_nothing_was_kept(alice, alice_client, small_limit):
    response = _post_compose(alice_client, alice.address, url="/mail/compose/?to=dana@partner.example")
    assert response.status_code == 413
    assert "attachments" in response.context["form"].errors
    assert response.context["form"]["to"].value() == "dana@partner.example"
    assert "Nothing had been autosaved yet" in response.content.decode()


def test_outsider_gets_404_for_another_users_draft(alice, charlie, charlie_client, small_limit):
    private = Draft.objects.create(author=alice.user, address=alice.address, body="alice's PHI")
    response = _post_compose(charlie_client, charlie.address, url=f"/mail/compose/?draft={private.pk}")
    assert response.status_code == 404
    assert "alice's PHI" not in response.content.decode()


def test_an_outsiders_own_draft_is_restored_never_another_users(alice, charlie, charlie_client,
                                                                small_limit):
    private = Draft.objects.create(author=alice.user, address=alice.address, body="alice's PHI")
    _autosave(charlie_client, charlie.address, body="charlie's own draft")
    response = _post_compose(charlie_client, charlie.address, url=f"/mail/compose/?draft={private.pk}")
    assert response.status_code == 413
    assert "alice's PHI" not in response.content.decode()
    assert response.context["form"]["body"].value() == "charlie's own draft"


def test_an_oversized_compose_post_when_signed_out_goes_to_sign_in(alice, client, small_limit):
    response = _post_compose(client, alice.address)
    assert response.status_code == 302
    assert response["Location"].startswith("/mail/login/")


def test_another_oversized_post_gets_the_413_page(alice, alice_client, small_limit):
    response = alice_client.post("/mail/account/contacts/", {"name": "Dana", "file": _scan()},
                                 HTTP_REFERER="http://testserver/mail/account/contacts/")
    assert response.status_code == 413
    page = response.content.decode()
    assert "That was too large to send" in page
    assert "What you sent was about 2 MB" in page
    assert 'href="http://testserver/mail/account/contacts/"' in page
    assert list(small_limit.iterdir()) == []


def test_an_oversized_post_when_signed_out_gets_the_413_page(client, small_limit):
    response = client.post("/mail/login/", {"username": "x", "file": _scan()},
                           HTTP_REFERER="https://elsewhere.example/")
    assert response.status_code == 413
    page = response.content.decode()
    assert "That was too large to send" in page
    assert 'href="/mail/login/"' in page  # not back to another site


def test_an_oversized_form_without_files_gets_the_413_page(alice_client, small_limit):
    response = alice_client.post("/mail/account/contacts/", {"name": "x" * (2 * MB)})
    assert response.status_code == 413


def test_a_post_within_the_limit_is_answered_as_before(alice, alice_client, small_limit):
    response = alice_client.post("/mail/account/contacts/", {"name": "Dana", "address": "nope"})
    assert response.status_code == 200


def test_the_compose_page_states_the_allowance_for_its_script(alice_client, settings):
    settings.HISP_MAX_MESSAGE_BYTES = 2 * MB
    page = alice_client.get("/mail/compose/").content.decode()
    assert f'data-allowance="{attachment_allowance()}"' in page
    assert 'data-allowance-text="1 MB"' in page
    assert 'src="/static/webmail/attachments.js"' in page
    # Autosave and the field checks post the form in the background: never its files.
    assert 'hx-params="not attachments"' in page


@pytest.mark.parametrize(("signed_in", "size_in_caps", "read"), [
    (True, 2, True),  # read and thrown away: the browser then shows our page
    (False, 2, False),  # a stranger's body is not worth a worker's time
    (True, 5, False),  # past four times the cap the browser would see a reset anyway
])
def test_an_oversized_body_is_drained_only_for_someone_signed_in(
    small_limit, alice, signed_in, size_in_caps, read
):
    import io

    from django.contrib.auth.models import AnonymousUser
    from django.http import HttpResponse
    from django.test import RequestFactory

    from webmail.uploads import UploadLimitMiddleware, max_request_bytes

    size = size_in_caps * max_request_bytes()
    stream = io.BytesIO(b"x" * size)
    request = RequestFactory().post("/mail/account/contacts/", data=b"", content_type="text/plain")
    request.META["CONTENT_LENGTH"] = str(size)
    request.META["wsgi.input"] = stream
    request._stream = stream  # what Django reads the body from
    request.user = alice.user if signed_in else AnonymousUser()
    middleware = UploadLimitMiddleware(lambda r: HttpResponse("not reached"))
    response = middleware(request)
    assert response.status_code == 413
    assert stream.tell() == (size if read else 0)
