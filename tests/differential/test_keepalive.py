"""max_keepalive (issue 11): a v3.1/3.1.1 client asking for more is refused with CONNACK return
code 2 (identifier rejected) and the connection closes, as mosquitto.conf(5) documents for
Mosquitto 2.0.12 and later; a v5 client is sent a Server Keep Alive instead. Mosquitto 2.0.11,
installed here, does not apply the limit to v3 clients yet (its ChangeLog, 2.0.12: "Fix
max_keepalive not applying to MQTT v3.1.1 and v3.1 connections"): docs/mosquitto.md."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from midge.codec.encode import encode
from midge.codec.packets import Connect
from midge.codec.properties import Prop
from midge.config import Config
from tests.differential.harness import needs_mosquitto
from tests.differential.test_wire import Pair, start_pair
from tests.memory import MemoryBroker
from tests.rawclient import RawClient, raw_until_closed, tap

ACCEPTED = b"\x20\x02\x00\x00"
REFUSED = b"\x20\x02\x00\x02"  # return code 2: identifier rejected


def _v3_connect(version: int, keep_alive: int) -> Connect:
    return Connect(
        protocol_level=version,
        protocol_name="MQIsdp" if version == 3 else "MQTT",
        client_id="ka",
        keep_alive=keep_alive,
    )


def _answer(client: RawClient, connect: Connect) -> tuple[bytes, bool]:
    """The CONNACK's bytes and whether the broker then closed the connection."""
    received = tap(client)
    client.send(connect)
    client.recv()
    return bytes(received), not client.is_open(0.2)


@pytest.fixture(scope="module")
def limited() -> Iterator[Pair]:
    yield from start_pair(["max_keepalive 60"])


@needs_mosquitto
@pytest.mark.parametrize("version", [3, 4])
@pytest.mark.parametrize("keep_alive", [0, 1, 60, 61, 65535])
def test_v3_keep_alive_above_max_keepalive_is_refused(
    limited: Pair, version: int, keep_alive: int
) -> None:
    """Keep Alive 1..60 is accepted by both; above 60, or 0 (no keep alive at all), midge refuses
    with return code 2 and closes, as Mosquitto 2.0.12+ does, where 2.0.11 still accepts."""
    connect = _v3_connect(version, keep_alive)
    with limited.client(True, version) as mosq:
        theirs = _answer(mosq, connect)
    with limited.client(False, version) as ours:
        mine = _answer(ours, connect)
    assert theirs == (ACCEPTED, False)  # Mosquitto 2.0.11
    if 1 <= keep_alive <= 60:
        assert mine == theirs
    else:
        assert mine == (REFUSED, True)


@needs_mosquitto
@pytest.mark.parametrize(("keep_alive", "server_keep_alive"), [(0, 60), (30, None), (61, 60)])
def test_v5_keep_alive_above_max_keepalive_gets_a_server_keep_alive(
    limited: Pair, keep_alive: int, server_keep_alive: int | None
) -> None:
    """MQTT-3.2.2-21 v5: a v5 client is not refused but told max_keepalive (also for Keep Alive
    0); the same CONNACK bytes as Mosquitto."""
    connect = Connect(protocol_level=5, client_id="ka5", keep_alive=keep_alive)
    (theirs, _), (mine, my_ack) = limited.both(encode(connect, 5), 5)
    assert mine == theirs
    assert my_ack.properties.get(Prop.SERVER_KEEP_ALIVE) == server_keep_alive


@pytest.mark.parametrize("version", [3, 4])
def test_v3_keep_alive_limits_in_memory(version: int) -> None:
    """The default max_keepalive (65535, Mosquitto 2.0.11's) refuses no keep alive, 0 included;
    max_keepalive 0 means no limit; a refused client gets return code 2 and the close."""
    for config, keep_alive in [(Config(), 0), (Config(), 65535), (Config(max_keepalive=0), 0)]:
        client = RawClient(MemoryBroker(config).link(), version=version)
        assert _answer(client, _v3_connect(version, keep_alive)) == (ACCEPTED, False)
    client = RawClient(MemoryBroker(Config(max_keepalive=10)).link(), version=version)
    client.send(_v3_connect(version, 11))
    assert raw_until_closed(client) == REFUSED
    client = RawClient(MemoryBroker(Config(max_keepalive=10)).link(), version=version)
    client.send(_v3_connect(version, 0))
    assert raw_until_closed(client) == REFUSED
