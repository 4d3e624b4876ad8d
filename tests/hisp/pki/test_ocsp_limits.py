"""The open OCSP endpoint judges a request's size before reading it."""

from __future__ import annotations

from django.test import Client


def test_an_oversized_ocsp_post_is_refused_unread(db):
    response = Client().post("/pki/ocsp", b"\x30" * 100_000,
                             content_type="application/ocsp-request")
    assert response.status_code == 400
    assert b"too large" in response.content
    assert not response.wsgi_request._read_started  # the body was never read into memory
