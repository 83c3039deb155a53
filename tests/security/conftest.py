"""Fixtures for the security tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the real mosquitto can read: started as root it drops to the 'mosquitto'
    user, and pytest's tmp_path (under a 0700 directory) is out of its reach."""
    path = Path(tempfile.mkdtemp(prefix="midge-sec-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
