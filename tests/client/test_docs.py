"""docs/client.md runs: every ```python block is a complete program, run here (in this process,
each in a fresh namespace with its own event loop) against a midge broker; ``1883`` in the block
becomes the broker's port."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import RunningBroker

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), re.MULTILINE | re.DOTALL)

pytestmark = pytest.mark.timeout(60)


def test_the_guide_has_its_examples() -> None:
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("n", range(len(BLOCKS)))
def test_example_runs(broker: RunningBroker, n: int) -> None:
    code = compile(BLOCKS[n].replace("1883", str(broker.port)), f"{DOC.name} example {n}", "exec")
    exec(code, {"__name__": "__main__"})
