"""Assigned client identifiers have Mosquitto 2's form (issue 11): ``auto-`` (the
``auto_id_prefix``) and 16 random bytes as upper-case hex in 8-4-4-4-12 groups. The real
mosquitto is asked for one over the same raw CONNECT, and both must match the same pattern."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from midge.codec.packets import Connack, Connect
from midge.codec.properties import Prop
from midge.config import Config
from tests.memory import MemoryBroker
from tests.procbroker import free_port
from tests.rawclient import RawClient

FORM = re.compile(r"auto-[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}")


def _assigned(client: RawClient) -> str:
    client.send(Connect("", protocol_level=5, clean_start=True))
    connack = client.expect(Connack)
    assert connack.reason_code == 0
    assigned: str = connack.properties[Prop.ASSIGNED_CLIENT_IDENTIFIER]
    return assigned


def test_midge_assigns_ids_of_mosquittos_form() -> None:
    broker = MemoryBroker(Config())
    try:
        ids = {_assigned(RawClient.to(broker, 5)) for _ in range(20)}
    finally:
        broker.stop()
    assert len(ids) == 20
    for cid in ids:
        assert FORM.fullmatch(cid), cid


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[int]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        pytest.skip("mosquitto is not installed (make debs)")
    port = free_port()
    conf = tmp_path / "m.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                RawClient("127.0.0.1", port).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "mosquitto did not start"
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_mosquitto_assigns_ids_of_that_form(mosquitto: int) -> None:
    client = RawClient("127.0.0.1", mosquitto, version=5)
    try:
        assert FORM.fullmatch(_assigned(client))
    finally:
        client.close()
