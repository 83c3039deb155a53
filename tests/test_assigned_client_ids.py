"""Assigned client identifiers have Mosquitto 2's form (issue 11): ``auto-`` (the
``auto_id_prefix``) and 16 random bytes as upper-case hex in 8-4-4-4-12 groups. The real
mosquitto is asked for one over the same raw CONNECT, and both must match the same pattern."""

from __future__ import annotations

import re

from midge.codec.packets import Connack, Connect
from midge.codec.properties import Prop
from midge.config import Config
from tests.differential.harness import mosquitto, needs_mosquitto
from tests.memory import MemoryBroker
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


@needs_mosquitto
def test_mosquitto_assigns_ids_of_that_form() -> None:
    with mosquitto(["allow_anonymous true"]) as port:
        client = RawClient("127.0.0.1", port, version=5)
        try:
            assert FORM.fullmatch(_assigned(client))
        finally:
            client.close()
