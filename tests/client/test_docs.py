"""docs/client.md runs: every ```python block is a complete program, run in a subprocess against
a midge broker (``1883`` in the block becomes the broker's port)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RunningBroker

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), re.MULTILINE | re.DOTALL)


def test_the_guide_has_its_examples() -> None:
    assert len(BLOCKS) >= 6


def test_every_example_runs(broker: RunningBroker, tmp_path: Path) -> None:
    """One broker, the examples in turn (a process each, bounded in time)."""
    for n, block in enumerate(BLOCKS):
        script = tmp_path / f"example{n}.py"
        script.write_text(block.replace("1883", str(broker.port)))
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode:
            pytest.fail(f"example {n} of {DOC.name} failed:\n{block}\n{done.stderr}")
