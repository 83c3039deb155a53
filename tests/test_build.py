"""The build users get (issue 10, part 1): compiled by default, pure Python when asked or when
there is no C compiler, and ``midge --version`` and the start-up log say which one runs.

The wheel tests build from a copy of the sources (no stale ``build/`` directory can leak into
them) without build isolation, with the setuptools and mypy of the test environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from midge.build import build_kind

ROOT = Path(__file__).resolve().parent.parent


def _expected_kind() -> str:
    import midge.broker.connection

    return "pure" if midge.broker.connection.__file__.endswith(".py") else "compiled"


def test_version_names_the_build() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "midge", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    kind = _expected_kind()
    assert build_kind() == kind
    want = "compiled with mypyc" if kind == "compiled" else "pure Python"
    assert out.startswith("midge ") and out.endswith(f"({want})"), out


def test_startup_log_names_the_build(tmp_path: Path) -> None:
    conf = tmp_path / "midge.conf"
    conf.write_text("listener 0 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "midge", "broker", "-c", str(conf), "-v"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "listening on" in line:
                break
        kind = "compiled with mypyc" if _expected_kind() == "compiled" else "pure Python"
        assert any(f"({kind}) starting" in line for line in lines), lines
    finally:
        proc.terminate()
        proc.wait(10)


def _wheel(tmp_path: Path, env: dict[str, str]) -> tuple[list[str], str]:
    """Build a wheel of a fresh copy of the sources; its file names and the build's output."""
    src = tmp_path / "src-copy"
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v"]
    result = subprocess.run(
        [*pip, "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = out.glob("midge-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        # A wheel built for a platform keeps pure modules under .data/purelib/.
        names = [n.split(".data/purelib/", 1)[-1] for n in zf.namelist()]
    return names, result.stdout + result.stderr


@pytest.mark.timeout(300)
def test_midge_pure_forces_the_pure_build(tmp_path: Path) -> None:
    names, output = _wheel(tmp_path, {"MIDGE_PURE": "1"})
    assert "midge/broker/connection.py" in names
    assert not [n for n in names if n.endswith(".so")], names
    assert output.count("midge: MIDGE_PURE=1: installing the pure-Python build") == 1


@pytest.mark.timeout(300)
def test_without_a_c_compiler_the_install_falls_back_to_pure(tmp_path: Path) -> None:
    names, output = _wheel(tmp_path, {"CC": "/bin/false"})
    assert "midge/broker/connection.py" in names
    assert not [n for n in names if n.endswith(".so")], names
    said = [line for line in output.splitlines() if "midge: no working C compiler" in line]
    assert len(said) == 1 and said[0].rstrip().endswith("installing the pure-Python build"), said
