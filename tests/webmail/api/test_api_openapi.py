"""The mail API's OpenAPI description (webmail/api/openapi.json) is valid OpenAPI 3.1, names
exactly the routes and methods the URLconf serves, and describes what the views really answer:
each endpoint is driven for real and its JSON body validated against the described schema,
which allows no field it does not name, so a field added to a view alone fails here."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.http import HttpResponse
from django.test import Client
from django.urls import URLPattern, resolve
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from hisp.models import AddressGrant, Delivery, MailboxEntry
from hisp.services import tracking
from hisp.smtp.credentials import FAILURE_LIMIT
from tests.factories import AddressGrantFactory, MailboxEntryFactory, MessageFactory
from tests.webmail.api.conftest import api_client, basic
from tests.webmail.personas import Persona
from webmail.api import urls

pytestmark = pytest.mark.django_db
FILE = Path(urls.__file__).resolve().parent / "openapi.json"
SPEC: dict[str, Any] = json.loads(FILE.read_text(encoding="utf-8"))
URI = "urn:hisp:openapi"  # the description as one schema resource, so its $refs resolve
REGISTRY = Registry().with_resource(
    URI, Resource.from_contents(SPEC, default_specification=DRAFT202012))
BASE = "/api/v1"
PDF = b"%PDF-1.4 lab results" * 20


# --- Looking things up in the description -----------------------------------------------------
def _pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _at(pointer: str) -> Any:
    node: Any = SPEC
    for part in pointer.lstrip("/").split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        node = node[int(key)] if isinstance(node, list) else node[key]
    return node


def _followed(pointer: str) -> tuple[str, dict[str, Any]]:
    """The object at ``pointer`` past any $ref, with where it really is."""
    node = _at(pointer)
    while "$ref" in node:
        pointer = node["$ref"].removeprefix("#")
        node = _at(pointer)
    return pointer, node


def _validator(pointer: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"{URI}#{pointer}"}, registry=REGISTRY,
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def _media(response: HttpResponse) -> str:
    return response["Content-Type"].partition(";")[0].strip().lower()


def check(response: HttpResponse, path: str, method: str) -> Any:
    """Assert ``response`` is one the description gives for ``path`` and ``method``; its JSON."""
    responses = SPEC["paths"][path][method]["responses"]
    status = str(response.status_code)
    assert status in responses, f"{method.upper()} {path} answered {status}: {response.content!r}"
    where, described = _followed(_pointer("paths", path, method, "responses", status))
    for name in described.get("headers", {}):
        _, header = _followed(f"{where}/headers/{_pointer(name)[1:]}")
        if header.get("required"):
            assert response.has_header(name), f"{method.upper()} {path} {status}: no {name}"
    content = described.get("content", {})
    media = _media(response)
    key = media if media in content else "*/*"
    assert key in content, f"{method.upper()} {path} {status} answered {media}"
    if media != "application/json":
        return None
    body = json.loads(response.content)
    validator = _validator(f"{where}/content/{_pointer(key)[1:]}/schema")
    validator.validate(body)
    if isinstance(body, dict) and path != "/openapi.json":
        # The schema must be closed: a field the description does not name is refused.
        assert not validator.is_valid({**body, "not-described": 1}), f"{path} {status} is open"
    return body


def check_request(body: Any, path: str, method: str, media: str = "application/json") -> bool:
    """Whether ``body`` is a request body the description allows."""
    pointer = _pointer("paths", path, method, "requestBody", "content", media, "schema")
    return bool(_validator(pointer).is_valid(body))


def _error_code(response: HttpResponse, path: str, method: str, status: int) -> str:
    assert response.status_code == status, response.content
    return str(check(response, path, method)["error"]["code"])


# --- The routes -------------------------------------------------------------------------------
def _routes() -> Iterator[tuple[str, URLPattern]]:
    """The API's routes, without the last, unnamed one: every other path's JSON 404."""
    assert urls.urlpatterns[-1].name is None
    for pattern in urls.urlpatterns[:-1]:
        assert isinstance(pattern, URLPattern)
        yield "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(pattern.pattern)), pattern


def _filled(path: str) -> str:
    return BASE + re.sub(r"\{\w+\}", "7", path)


def _methods(path: str) -> set[str]:
    return {m.upper() for m in SPEC["paths"][path] if m in {"get", "put", "post", "delete",
                                                            "options", "head", "patch", "trace"}}


def test_it_is_valid_openapi_3_1() -> None:
    validate(SPEC)
    assert SPEC["openapi"].startswith("3.1.")
    assert SPEC["servers"] == [{"url": "/api/v1"}]
    assert SPEC["components"]["securitySchemes"]["basic"] == {
        **SPEC["components"]["securitySchemes"]["basic"], "type": "http", "scheme": "basic"}


def test_every_route_is_described_and_every_described_path_is_routed() -> None:
    routed = dict(_routes())
    assert set(routed) == set(SPEC["paths"])
    for path, pattern in routed.items():
        assert resolve(_filled(path)).url_name == pattern.name, path
        names = {p["name"] for p in _parameters(path) if p["in"] == "path"}
        assert names == set(re.findall(r"\{(\w+)\}", path)), path


def _parameters(path: str) -> Iterator[dict[str, Any]]:
    for method in _methods(path):
        for index, _ in enumerate(SPEC["paths"][path][method.lower()].get("parameters", [])):
            yield _followed(_pointer("paths", path, method.lower(), "parameters", str(index)))[1]


@pytest.mark.parametrize("path", sorted(SPEC["paths"]))
def test_each_path_is_described_with_exactly_the_methods_its_view_takes(
    client: Client, path: str
) -> None:
    # No route takes PUT: every view answers it 405 with the methods it does take, before
    # any credentials are asked for.
    response = client.put(_filled(path))
    assert response.status_code == 405
    assert {m.strip() for m in response["Allow"].split(",")} == _methods(path)
    if _media(response) == "application/json":
        where, _ = _followed("/components/responses/MethodNotAllowed")
        _validator(f"{where}/content/application~1json/schema").validate(response.json())


def test_every_object_in_an_answer_is_closed() -> None:
    def walk(node: Any, at: str) -> Iterator[str]:
        if isinstance(node, dict):
            if node.get("type") == "object" and node.get("additionalProperties") is not False:
                yield at
            for key, value in node.items():
                yield from walk(value, f"{at}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from walk(value, f"{at}/{index}")

    found = list(walk(SPEC["components"], "/components"))
    # The description itself is any object: it is not built by the views.
    found += [at for at in walk(SPEC["paths"], "/paths")
              if not at.startswith("/paths//openapi.json")]
    assert found == []


def _codes(described: dict[str, Any]) -> list[str]:
    schema = described.get("content", {}).get("application/json", {}).get("schema", {})
    error = schema.get("properties", {}).get("error", {}).get("properties", {})
    return list(error.get("code", {}).get("enum", []))


def _described_codes() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for path, operations in SPEC["paths"].items():
        for method, operation in operations.items():
            for status in operation["responses"]:
                _, described = _followed(_pointer("paths", path, method, "responses", status))
                found |= {(status, code) for code in _codes(described)}
    # Answered for a method no operation takes, so described once, outside any operation.
    not_allowed = SPEC["components"]["responses"]["MethodNotAllowed"]
    return found | {("405", code) for code in _codes(not_allowed)}


def test_every_error_code_the_api_raises_is_described_with_its_status() -> None:
    # The views, their decorator and helpers raise errors as ApiError(status, "code", ...) or
    # error(status, "code", ...); a new one must be described too.
    raised: set[tuple[str, str]] = set()
    for source in Path(urls.__file__).resolve().parent.rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        raised |= set(re.findall(r'(?:ApiError|error)\(\s*([0-9]{3}),\s*"([a-z-]+)"', text))
    assert ("400", "bad-field") in raised and ("503", "busy") in raised  # the pattern still finds
    assert raised - _described_codes() == set()


# --- The description served -------------------------------------------------------------------
def test_the_description_is_served_without_credentials_as_the_file(client: Client) -> None:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert _media(response) == "application/json"
    assert response.content == FILE.read_bytes()
    assert "max-age" in response["Cache-Control"]
    check(response, "/openapi.json", "get")


# --- Real answers -----------------------------------------------------------------------------
def _entry(persona: Persona, **message_fields: Any) -> MailboxEntry:
    return MailboxEntryFactory(address=persona.address, message=MessageFactory(**message_fields))


def _outgoing(**fields: Any) -> dict[str, Any]:
    return {"from": "alice@clinic.example", "to": ["dana@partner.example"],
            "subject": "Referral", "text": "Please see.", **fields}


def _send(client: Client, key: str | None = None, **fields: Any) -> HttpResponse:
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    return client.post(f"{BASE}/messages", _outgoing(**fields), content_type="application/json",
                       **headers)


def test_mailboxes_validate(alice: Persona, bob: Persona, alice_api: Client) -> None:
    AddressGrantFactory(user=alice.user, address=bob.address, role=AddressGrant.Role.READ_SEND)
    _entry(alice)
    body = check(alice_api.get(f"{BASE}/mailboxes"), "/mailboxes", "get")
    assert len(body["mailboxes"]) == 2


def test_a_list_with_next_validates_and_so_does_each_page(
    alice: Persona, alice_api: Client
) -> None:
    for _ in range(3):
        _entry(alice)
    path = "/mailboxes/{mailbox_id}/messages"
    url = f"{BASE}/mailboxes/{alice.address.pk}/messages?limit=2&unread=true&folder=inbox"
    first = check(alice_api.get(url), path, "get")
    assert first["next"] is not None and len(first["messages"]) == 2
    last = check(alice_api.get(first["next"]), path, "get")
    assert last["next"] is None and len(last["messages"]) == 1


def test_an_entry_with_attachments_its_rfc822_and_attachment_validate(
    alice: Persona, alice_api: Client
) -> None:
    entry = _entry(alice, signer="dr.who@partner.example",
                   attachments=[("lab results.pdf", "application/pdf", PDF)])
    body = check(alice_api.get(f"{BASE}/entries/{entry.pk}"), "/entries/{entry_id}", "get")
    assert body["attachments"] and body["signer"] == "dr.who@partner.example"
    check(alice_api.get(f"{BASE}/entries/{entry.pk}/rfc822"), "/entries/{entry_id}/rfc822", "get")
    response = alice_api.get(body["attachments"][0]["url"])
    assert response.status_code == 200 and response.content == PDF
    check(response, "/entries/{entry_id}/attachments/{index}", "get")


def test_patch_validates(alice: Persona, alice_api: Client) -> None:
    entry = _entry(alice)
    change = {"read": True, "flagged": True, "folder": "archive"}
    assert check_request(change, "/entries/{entry_id}", "patch")
    response = alice_api.patch(f"{BASE}/entries/{entry.pk}", change,
                               content_type="application/json")
    body = check(response, "/entries/{entry_id}", "patch")
    assert (body["read"], body["flagged"], body["folder"]) == (True, True, "archive")


def test_sending_json_and_raw_a_replay_and_the_status_validate(
    alice: Persona, alice_api: Client
) -> None:
    attachment = {"filename": "a.pdf", "content_type": "application/pdf",
                  "content_base64": base64.b64encode(PDF).decode()}
    every_field = {"cc": ["erin@partner.example"], "bcc": ["frank@elsewhere.example"],
                   "attachments": [attachment], "delivery_notification": False}
    assert check_request(_outgoing(**every_field), "/messages", "post")
    first = _send(alice_api, key="referral-1", **every_field)
    assert first.status_code == 202
    sent = check(first, "/messages", "post")
    again = _send(alice_api, key="referral-1", **every_field)
    assert again.status_code == 200 and check(again, "/messages", "post") == sent
    raw = (b"From: alice@clinic.example\r\nTo: dana@partner.example\r\nSubject: Raw\r\n"
           b"Message-ID: <raw-1@clinic.example>\r\n\r\nHello.\r\n")
    response = alice_api.post(f"{BASE}/messages", raw, content_type="message/rfc822")
    assert response.status_code == 202
    check(response, "/messages", "post")
    delivery = Delivery.objects.get(message_id=sent["id"], recipient="dana@partner.example")
    tracking.fail(delivery, detail="550 5.1.1 No such user", status="5.1.1", why="no such user")
    status = check(alice_api.get(sent["status_url"]), "/messages/{message_id}", "get")
    assert status["state"] == "failed" and "reason" in status["deliveries"][0]


# --- Errors -----------------------------------------------------------------------------------
def test_401_and_429_validate(alice: Persona, client: Client) -> None:
    assert _error_code(client.get(f"{BASE}/mailboxes"), "/mailboxes", "get", 401) == "unauthorised"
    wrong = Client(HTTP_AUTHORIZATION=basic("alice", "not the password"), REMOTE_ADDR="192.0.2.9")
    for _ in range(FAILURE_LIMIT):
        wrong.get(f"{BASE}/mailboxes")
    response = wrong.get(f"{BASE}/mailboxes")
    assert _error_code(response, "/mailboxes", "get", 429) == "too-many-attempts"


def test_403s_validate(alice: Persona, bob: Persona, charlie_api: Client, settings: Any) -> None:
    entry = _entry(alice)
    AddressGrantFactory(user=bob.user, address=alice.address, role=AddressGrant.Role.READ)
    reader = api_client(bob)
    response = reader.patch(f"{BASE}/entries/{entry.pk}", {"read": True},
                            content_type="application/json")
    assert _error_code(response, "/entries/{entry_id}", "patch", 403) == "forbidden"
    response = _send(reader)
    assert _error_code(response, "/messages", "post", 403) == "sender-not-allowed"
    settings.SESSION_COOKIE_SECURE = True
    for path, method in (("/mailboxes", "get"), ("/entries/{entry_id}", "get")):
        response = charlie_api.generic(method.upper(), _filled(path))
        assert _error_code(response, path, method, 403) == "https-required"


def test_404s_validate(alice: Persona, charlie_api: Client) -> None:
    entry = _entry(alice, attachments=[("a.pdf", "application/pdf", PDF)])
    for path, url, method in (
        ("/mailboxes/{mailbox_id}/messages", f"/mailboxes/{alice.address.pk}/messages", "get"),
        ("/entries/{entry_id}", f"/entries/{entry.pk}", "get"),
        ("/entries/{entry_id}", f"/entries/{entry.pk}", "patch"),
        ("/entries/{entry_id}/rfc822", f"/entries/{entry.pk}/rfc822", "get"),
        ("/entries/{entry_id}/attachments/{index}", f"/entries/{entry.pk}/attachments/0", "get"),
        ("/messages/{message_id}", "/messages/999999", "get"),
    ):
        response = charlie_api.generic(method.upper(), BASE + url, '{"read": true}',
                                       content_type="application/json")
        assert _error_code(response, path, method, 404) == "not-found", url


def test_400s_validate(alice: Persona, alice_api: Client) -> None:
    entry = _entry(alice)
    path = "/mailboxes/{mailbox_id}/messages"
    for query in ("limit=0", "unread=maybe", "after=x", "folder=nowhere", "colour=red"):
        response = alice_api.get(f"{BASE}/mailboxes/{alice.address.pk}/messages?{query}")
        assert _error_code(response, path, "get", 400) == "bad-field", query
    for body, code in (('{"read": "yes"}', "bad-field"), ('{"subject": "x"}', "bad-field"),
                       ("{}", "bad-field"), ("[1]", "bad-json")):
        # What the view refuses, the description refuses too.
        assert not check_request(json.loads(body), "/entries/{entry_id}", "patch"), body
        response = alice_api.patch(f"{BASE}/entries/{entry.pk}", body,
                                   content_type="application/json")
        assert _error_code(response, "/entries/{entry_id}", "patch", 400) == code, body
    response = alice_api.patch(f"{BASE}/entries/{entry.pk}", "{", content_type="application/json")
    assert _error_code(response, "/entries/{entry_id}", "patch", 400) == "bad-json"
    for fields in ({"to": "dana@partner.example"}, {"colour": "red"}, {"to": []},
                   {"delivery_notification": "yes"}, {"attachments": [{"filename": "a"}]}):
        assert not check_request(_outgoing(**fields), "/messages", "post"), fields
        response = _send(alice_api, **fields)
        assert _error_code(response, "/messages", "post", 400) == "bad-field", fields
    response = _send(alice_api, key="\x7f")
    assert _error_code(response, "/messages", "post", 400) == "bad-idempotency-key"


def test_413_415_and_422_validate(alice: Persona, alice_api: Client) -> None:
    entry = _entry(alice)
    huge = json.dumps({"folder": "x" * 70_000})
    response = alice_api.patch(f"{BASE}/entries/{entry.pk}", huge, content_type="application/json")
    assert _error_code(response, "/entries/{entry_id}", "patch", 413) == "too-large"
    for path, url, method in (("/entries/{entry_id}", f"/entries/{entry.pk}", "patch"),
                              ("/messages", "/messages", "post")):
        response = alice_api.generic(method.upper(), BASE + url, "read=1",
                                     content_type="application/x-www-form-urlencoded")
        assert _error_code(response, path, method, 415) == "unsupported-media-type"
    no_from = b"To: dana@partner.example\r\nSubject: x\r\n\r\nHello.\r\n"
    response = alice_api.post(f"{BASE}/messages", no_from, content_type="message/rfc822")
    assert _error_code(response, "/messages", "post", 422) == "refused"
    assert _send(alice_api, key="k-1").status_code == 202
    response = _send(alice_api, subject="Another", key="k-1")
    assert _error_code(response, "/messages", "post", 422) == "idempotency-key-reused"
