"""Running operator commands in-process, as scripts would run them through manage.py."""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from hisp.models import Domain
from hisp.services import identity


@pytest.fixture(autouse=True)
def _fast_keys(settings: Any) -> None:
    settings.HISP_CA_KEY_BITS = 2048


Run = Callable[..., tuple[str, str]]


@pytest.fixture
def run() -> Run:
    def _run(*args: str, stdin: str | None = None) -> tuple[str, str]:
        out, err = StringIO(), StringIO()
        extra: dict[str, Any] = {"stdin": StringIO(stdin)} if stdin is not None else {}
        call_command(*args, stdout=out, stderr=err, **extra)
        return out.getvalue(), err.getvalue()

    return _run


@pytest.fixture
def provider(db: None) -> Domain:
    return identity.add_domain("hospital.example.org")
