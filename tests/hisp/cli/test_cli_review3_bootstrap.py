"""bin/bootstrap installs only what the venv lacks: the quick start after bin/test (which
installed the dev extra, a superset of the runtime) reinstalled everything and needed the
network. The script runs in a copy of the project whose venv python only records what it was
asked, so no test reaches PyPI or touches the real .venv."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

_RECORDING_PYTHON = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/../calls"
"""


def _project(tmp_path: Path) -> Path:
    (tmp_path / "bin").mkdir()
    shutil.copy2(ROOT / "bin" / "bootstrap", tmp_path / "bin" / "bootstrap")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "hisp"\n')
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(_RECORDING_PYTHON)
    python.chmod(0o755)
    return tmp_path


def _stamp(project: Path, extra: str, *, current: bool = True) -> None:
    digest = hashlib.sha256((project / "pyproject.toml").read_bytes()).hexdigest()
    (project / ".venv" / f".installed-{extra}").write_text(
        (digest if current else "0" * 64) + "\n"
    )


def _bootstrap(project: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    result = subprocess.run(
        ["bash", str(project / "bin" / "bootstrap"), *args],
        capture_output=True, text=True, timeout=30,
    )
    calls = project / ".venv" / "calls"
    return result, calls.read_text().splitlines() if calls.exists() else []


def test_the_runtime_needs_nothing_once_bin_test_installed_the_dev_extra(tmp_path: Path) -> None:
    project = _project(tmp_path)
    _stamp(project, "dev")
    for args in [("runtime",), ()]:
        result, calls = _bootstrap(project, *args)
        assert result.returncode == 0, result.stderr
        assert calls == [] and result.stderr == ""
    assert not (project / ".venv" / ".installed-runtime").exists()


def test_the_dev_extra_is_installed_over_a_runtime_venv(tmp_path: Path) -> None:
    project = _project(tmp_path)
    _stamp(project, "runtime")
    result, calls = _bootstrap(project, "dev")
    assert result.returncode == 0, result.stderr
    assert calls[-1] == "-m pip install -q -e .[dev]"
    assert (project / ".venv" / ".installed-dev").read_text() == (
        project / ".venv" / ".installed-runtime").read_text()
    result, calls_again = _bootstrap(project, "dev")
    assert calls_again == calls  # nothing more to do


@pytest.mark.parametrize("extra", ["runtime", "dev"])
def test_a_changed_pyproject_is_installed_again(tmp_path: Path, extra: str) -> None:
    project = _project(tmp_path)
    _stamp(project, "dev", current=False)
    _stamp(project, "runtime", current=False)
    result, calls = _bootstrap(project, extra)
    assert result.returncode == 0, result.stderr
    assert calls[-1] == f"-m pip install -q -e {'.[dev]' if extra == 'dev' else '.'}"


def test_an_unknown_extra_is_refused_before_anything_is_installed(tmp_path: Path) -> None:
    project = _project(tmp_path)
    result, calls = _bootstrap(project, "everything")
    assert result.returncode == 2
    assert result.stderr == "error: usage: bin/bootstrap [runtime|dev]\n"
    assert calls == []
