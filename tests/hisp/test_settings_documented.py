"""Every environment variable the settings read is documented for operators."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READ = re.compile(r'env(?:\.[a-z_]+)?\(\s*"([A-Z][A-Z0-9_]+)"')
VARIABLES = sorted(set(READ.findall((ROOT / "hisp" / "settings.py").read_text())))


def test_the_settings_read_variables_at_all() -> None:
    assert "DATABASE_URL" in VARIABLES and "HISP_KEY_ENCRYPTION_KEY" in VARIABLES


@pytest.mark.parametrize("name", VARIABLES)
def test_each_variable_is_in_the_readme_and_env_example(name: str) -> None:
    assert f"`{name}`" in (ROOT / "README.md").read_text(), f"{name} missing from README.md"
    assert re.search(rf"^#?\s*{name}=", (ROOT / "docker" / ".env.example").read_text(), re.M), (
        f"{name} missing from docker/.env.example"
    )
