"""First-run secrets of the quick start (hisp.bootstrap): never read half written."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path

import pytest

from hisp.bootstrap import MissingSecret, generated_secret, new_kek


def test_a_secret_file_that_exists_but_is_empty_is_an_error_not_an_empty_secret(
    tmp_path: Path,
) -> None:
    """What a process saw when it started while another had created the file and not yet
    written it: it went on with an empty key-encryption key (or another SECRET_KEY)."""
    path = tmp_path / "key_encryption_key"
    path.write_text("")
    with pytest.raises(MissingSecret, match="holds no HISP_KEY_ENCRYPTION_KEY"):
        generated_secret(path, name="HISP_KEY_ENCRYPTION_KEY", make=new_kek, require=False)
    assert path.read_text() == ""  # left for the operator: it may be theirs


def _generate(path: str) -> str:
    return generated_secret(Path(path), name="HISP_KEY_ENCRYPTION_KEY", make=new_kek, require=False)


def test_processes_starting_together_share_one_complete_private_secret(tmp_path: Path) -> None:
    path = tmp_path / "var" / "key_encryption_key"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        values = pool.map(_generate, [str(path)] * 16)
    assert len(set(values)) == 1 and len(values[0]) == 44
    assert path.read_text() == values[0] + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["key_encryption_key"]  # no temporaries
