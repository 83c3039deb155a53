"""The embeddable broker (midge.Broker, midge.run_broker_in_thread) and the pytest plugin's
fixtures (midge.pytest_plugin, registered as a pytest11 entry point)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import midge
from midge.client import Client

pytestmark = pytest.mark.timeout(60)

DOC = Path(__file__).resolve().parents[1] / "docs" / "testing.md"


def test_broker_in_the_current_loop() -> None:
    async def main() -> None:
        async with midge.Broker() as broker:
            assert broker.port > 0 and broker.url == f"mqtt://127.0.0.1:{broker.port}"
            async with Client.from_url(broker.url) as client:
                await client.subscribe("here", qos=1)
                await client.publish("here", b"now", qos=1)
                async for message in client.messages():
                    assert message.payload == b"now"
                    break
        with pytest.raises(OSError):  # stopped: nothing listens any more
            await asyncio.open_connection(broker.host, broker.port)

    asyncio.run(asyncio.wait_for(main(), 20))


def test_broker_in_a_thread_serves_paho() -> None:
    with midge.run_broker_in_thread() as broker:
        client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        assert client.connect(broker.host, broker.port) == 0
        client.loop_start()
        try:
            info = client.publish("sync", b"ok", qos=1)
            info.wait_for_publish(5)
            assert info.is_published()
        finally:
            client.loop_stop()
            client.disconnect()


def test_the_plugin_fixtures(mqtt_broker: Any, mqtt_client: Callable[..., Client]) -> None:
    assert mqtt_broker.url.startswith("mqtt://127.0.0.1:")

    async def main() -> int:
        async with mqtt_client(client_id="fixture") as client:
            return (await client.publish("fixture", b"", qos=1)).reason_code

    assert asyncio.run(asyncio.wait_for(main(), 10)) == 0x10  # no subscribers


def test_the_testing_guide_runs_under_pytest(tmp_path: Path) -> None:
    block = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), re.MULTILINE | re.DOTALL)[0]
    (tmp_path / "test_guide.py").write_text(block)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_guide.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


def test_client_from_url() -> None:
    c = Client.from_url("mqtts://us%40er:p%3Ass@example.com/some/topic", client_id="x")
    assert (c.host, c.port, c.username, c.password, c.client_id) == (
        "example.com",
        8883,
        "us@er",
        b"p:ss",
        "x",
    )
    assert c.tls is not None
    plain = Client.from_url("mqtt://[::1]:1884")
    assert (plain.host, plain.port, plain.tls) == ("::1", 1884, None)
    with pytest.raises(ValueError):
        Client.from_url("http://example.com")


@pytest.mark.parametrize("n", [1, 2])
def test_the_testing_guide_programs_run(n: int) -> None:
    """docs/testing.md's other ```python blocks are complete programs (run as scripts)."""
    blocks = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), re.MULTILINE | re.DOTALL)
    assert len(blocks) == 3
    done = subprocess.run(
        [sys.executable, "-c", blocks[n]], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    if n == 1:
        assert done.stdout.startswith("greetings b'hello'\nmqtt://127.0.0.1:"), done.stdout
