"""Hostile requests for the URL sweeps of the console and the webmail (no tests of its own).

Every URL of an app's URLconf is walked, as the resolver lists it, with ids that do not fit a
database integer, another user's ids, NUL bytes, lone surrogates and invalid UTF-8, 100 KB
values, repeated parameters, unexpected methods and bad file uploads. Any 500 or unhandled
exception fails the test (the test client re-raises it), and so does a page showing the
victim's data to the wrong user.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from django import forms
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import URLPattern, URLResolver, reverse

# Past PostgreSQL's integer, past its bigint, and past any integer column at all.
HUGE_IDS = (2**63, 10**20)
LONG = "a" * 100_000
NESTED = "[" * 30_000
# Raw query-string / form-body values: a NUL; a lone surrogate encoded as UTF-8 (not valid
# UTF-8), bytes that are no UTF-8 at all and an overlong "/".
RAW_VALUES = ("%00", "%ED%A0%80%FF%FEcaf%E9%C0%AF")
# A URL <str:...> segment: a NUL, a lone surrogate, 5,000 characters, a dot segment.
RAW_SEGMENTS = ("%00", "%ED%A0%80", "x" * 5000, "..", "%FF")
# Past any integer column; digits to str.isdigit() that int() refuses (superscripts).
NUMBERS = ("99999999999999999999", "\u00b2\u00b3")
METHODS = ("PUT", "DELETE", "OPTIONS")
# Parameters some views read straight from the request rather than through a form.
EXTRA_NAMES = ("page", "cursor", "next", "q", "draft", "download", "action", "to", "cc",
               "subject", "sender", "step", "section", "reply", "mode", "from", "field",
               "entry", "before", "back", "upload", "ids", "folder", "reason", "confirm")
FILE_NAMES = ("certificate", "key", "file", "upload", "attachments", "bundle", "anchor")
_NAME = re.compile(r"""<(?:input|select|textarea|button)\b[^>]*\bname="([^"]+)\"""")
_FILE = re.compile(r"""<input\b[^>]*\btype="file"[^>]*\bname="([^"]+)\"""")


@dataclass(frozen=True)
class Route:
    """One named URL of the URLconf, with the names and converters of its arguments."""

    name: str
    arguments: dict[str, str]  # argument -> converter class name ("IntConverter", ...)

    @property
    def id(self) -> str:
        return self.name


def routes_of(urlpatterns: list[Any], namespace: str) -> list[Route]:
    """Every named URL, as the resolver knows it: a URL added later is swept too."""
    found: list[Route] = []
    for entry in urlpatterns:
        if isinstance(entry, URLResolver):  # no includes today; walk them if they come
            found += routes_of(entry.url_patterns, namespace)
            continue
        assert isinstance(entry, URLPattern)
        if entry.name is None:
            continue
        converters = getattr(entry.pattern, "converters", {})
        found.append(Route(f"{namespace}:{entry.name}",
                           {k: type(v).__name__ for k, v in converters.items()}))
    return found


def _placeholder(index: int) -> str:
    return f"zzplaceholder{index}zz"


def url(route: Route, values: dict[str, Any]) -> str:
    """The route's URL with ``values``; string arguments are written raw (already quoted), so a
    NUL or an invalid UTF-8 sequence reaches the view as a browser would send it."""
    kwargs: dict[str, Any] = {}
    raw: dict[str, str] = {}
    for index, (name, value) in enumerate(values.items()):
        if route.arguments[name] == "IntConverter":
            kwargs[name] = value
        else:
            kwargs[name] = _placeholder(index)
            raw[_placeholder(index)] = str(value)
    path = reverse(route.name, kwargs=kwargs)
    for marker, value in raw.items():
        path = path.replace(marker, value)
    return path


def url_variants(route: Route, valid: dict[str, Any],
                 foreign: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(label, URL): the valid URL, then each argument in turn made hostile (the others kept
    valid): another user's id, ids no column can hold, raw hostile segments."""
    yield "valid", url(route, valid)
    for name, value in foreign.items():
        yield f"{name}=foreign", url(route, {**valid, name: value})
    for name, converter in route.arguments.items():
        if converter == "IntConverter":
            values: list[Any] = list(HUGE_IDS)
            # A negative or non-numeric id never reaches the view (the converter is \d+).
            yield f"{name}=-1", url(route, valid).replace(f"/{valid[name]}/", "/-1/", 1)
        else:
            values = list(RAW_SEGMENTS)
        for value in values:
            yield f"{name}={str(value)[:20]}", url(route, {**valid, name: value})


def field_names(response: Any) -> tuple[set[str], set[str]]:
    """(all field names, file field names) of the forms a page shows and its context holds."""
    names: set[str] = set(EXTRA_NAMES)
    files: set[str] = set()
    content_type = response.get("Content-Type", "")
    if response.status_code == 200 and content_type.startswith("text/html"):
        text = response.content.decode(errors="replace")
        names |= set(_NAME.findall(text))
        files |= set(_FILE.findall(text))
    for context in response.context or []:
        for item in context.flatten().values():
            fields = getattr(item, "fields", None)
            if isinstance(item, forms.BaseForm) and isinstance(fields, dict):
                names |= set(fields)
                files |= {n for n, f in fields.items() if isinstance(f, forms.FileField)}
    names.discard("csrfmiddlewaretoken")
    return names, files


def _chunks(names: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(names), size):
        yield names[start:start + size]


@cache
def wrong_password_pkcs12() -> bytes:
    """A PKCS#12 of a small certificate and key, under a password the sweep never sends."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sweep@elsewhere.example")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return pkcs12.serialize_key_and_certificates(
        b"sweep", key, certificate, None,
        serialization.BestAvailableEncryption(b"the right password"),
    )


def bad_uploads() -> list[tuple[str, bytes]]:
    return [
        ("empty.pem", b""),
        ("garbage.der", b"\x30\x82\xff\xff\x02\x01\x00" + b"\xa0" * 64),
        ("garbage.pem", b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"),
        ("nul\x00name.txt", b"\x00" * 32),
        ("huge.bin", b"\x30" * (3 * 1024 * 1024)),
        ("wrong-password.p12", wrong_password_pkcs12()),
    ]


Request = Callable[[Client], Any]


def hostile_requests(path: str, names: set[str], files: set[str]) -> Iterator[tuple[str, Request]]:
    """(label, request) pairs of hostile GETs, POSTs and methods for one URL."""
    ordered = sorted(names)
    for raw in RAW_VALUES:
        query = "&".join(f"{quote(n)}={raw}" for n in ordered)
        yield f"GET {raw}", lambda c, q=query: c.get(f"{path}?{q}")
        body = "&".join(f"{quote(n)}={raw}" for n in ordered)
        yield f"POST raw {raw}", lambda c, b=body: c.post(
            path, data=b, content_type="application/x-www-form-urlencoded")
    for number in NUMBERS:
        yield f"GET {number}", lambda c, n=number: c.get(path, {k: n for k in ordered})
        yield f"POST {number}", lambda c, n=number: c.post(path, {k: n for k in ordered})
    # Repeated parameters, with values of different kinds (a view reading one gets the last).
    repeated = {n: ["x", "on", "-1"] for n in ordered}
    yield "GET duplicates", lambda c: c.get(path, repeated)
    yield "POST duplicates", lambda c: c.post(path, repeated)
    yield "POST empty", lambda c: c.post(path, {})
    # JSON nested past the parser's stack, for fields that carry JSON (a security key's answer).
    yield "POST nested", lambda c: c.post(path, {n: NESTED for n in ordered})
    yield "GET long", lambda c: c.get(path, {n: LONG for n in ordered[:8]})
    for group in _chunks(ordered, 20):  # 2 MB a request, under DATA_UPLOAD_MAX_MEMORY_SIZE
        yield "POST long", lambda c, g=group: c.post(path, {n: LONG for n in g})
    upload_names = sorted(files or set(FILE_NAMES))
    # Every bad file where the page takes files; one elsewhere (a view that never reads it).
    for filename, data in bad_uploads() if files else bad_uploads()[1:2]:
        def post_file(c: Client, f: str = filename, d: bytes = data) -> Any:
            payload: dict[str, Any] = {n: "wrong password" for n in ordered if n not in files}
            for name in upload_names:
                payload[name] = SimpleUploadedFile(f, d, content_type="application/octet-stream")
            return c.post(path, payload)
        yield f"POST file {filename[:16]}", post_file
    for method in METHODS:
        yield method, lambda c, m=method: c.generic(m, path)


def check(response: Any, label: str, *, secrets: tuple[str, ...] = ()) -> None:
    """No 500, and none of ``secrets`` (the victim's data) on the page or in its headers."""
    assert response.status_code < 500, f"{label}: {response.status_code}"
    if not secrets:
        return
    shown = b"".join(getattr(response, "streaming_content", None) or [response.content])
    headers = " ".join(f"{k}: {v}" for k, v in response.items())
    for secret in secrets:
        assert secret.encode() not in shown and secret not in headers, f"{label}: leaks {secret}"
