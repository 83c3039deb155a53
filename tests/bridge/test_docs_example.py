"""docs/bridges.md's runnable example, run as written: two ``midge broker`` processes with its
central.conf and edge.conf (free ports instead of 1884 and 1883), then its shell block with the
Mosquitto tools; each output it shows in comments must appear."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.docs_example import blocks, renumber, run_shell_block
from tests.procbroker import free_port

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto_sub") is None, reason="mosquitto-clients is not installed"
)


def test_the_runnable_example_of_bridges_md(tmp_path: Path) -> None:
    central, edge, shell, *_ = blocks("bridges.md", "A runnable example")
    ports = {1884: free_port(), 1883: free_port()}
    (tmp_path / "central.conf").write_text(renumber(central, ports))
    (tmp_path / "edge.conf").write_text(renumber(edge, ports))
    ready = {"mosquitto_sub": "received SUBACK"}
    with run_shell_block(renumber(shell, ports), tmp_path, ready) as ran:
        assert len(ran.brokers) == 2
    assert "factory1/sensors/temp 21.5" in ran.seen
    assert "commands/reboot now" in ran.seen
    assert (tmp_path / "edge-data").is_dir()
