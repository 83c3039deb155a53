"""Mosquitto's bridge marker (bit 0x80 of the CONNECT protocol level, sent by bridges with
``try_private true``), against the real Mosquitto: a client so marked gets none of its own
messages back and sees the retain flag as published; the same bytes to midge (in memory) give
the same packets, byte for byte."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from midge.codec import encode
from midge.codec.packets import Connect, Publish, Subscribe, Subscription
from tests.differential.harness import needs_mosquitto
from tests.differential.test_wire import Pair, start_pair
from tests.rawclient import Closed, read_raw_packet


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    yield from start_pair([])


def _session(pair: Pair, real: bool, level: int, bridge: bool) -> list[bytes]:
    client = pair.client(real, version=level)
    try:
        name = "MQIsdp" if level == 3 else "MQTT"
        client.send(Connect("b1", level, name, keep_alive=60, bridge=bridge))
        got = [read_raw_packet(client)]
        data = encode(Subscribe(1, [Subscription("bm/#", 1)]), level)
        data += encode(Publish("bm/x", b"mine", 1, False, False, 2), level)
        client.send_raw(data)
        while True:
            try:
                got.append(read_raw_packet(client, 0.5))
            except (TimeoutError, Closed, ConnectionError):
                return got
    finally:
        client.close()


@needs_mosquitto
@pytest.mark.parametrize("level", [3, 4])
@pytest.mark.parametrize("bridge", [False, True], ids=["client", "bridge"])
def test_a_bridge_gets_none_of_its_own_messages(pair: Pair, level: int, bridge: bool) -> None:
    theirs = _session(pair, True, level, bridge)
    mine = _session(pair, False, level, bridge)
    assert mine == theirs
    # CONNACK, SUBACK, PUBACK, and the message itself only when not a bridge
    assert len(mine) == (3 if bridge else 4)


def _retained_live(pair: Pair, real: bool, bridge: bool) -> list[bytes]:
    """A bridge (or a plain client) subscribed when another client publishes a retained
    message: what it receives, byte for byte."""
    client = pair.client(real, version=4)
    other = pair.client(real, version=4)
    try:
        client.send(Connect("b2", keep_alive=60, bridge=bridge))
        read_raw_packet(client)
        client.send(Subscribe(1, [Subscription("rap/#", 0)]))
        read_raw_packet(client)
        other.send(Connect("b3", keep_alive=60))
        read_raw_packet(other)
        other.send_raw(
            encode(Publish("rap/x", b"kept", 0, True), 4)
            + encode(Publish("rap/x", b"", 0, True), 4)
        )
        got = []
        while True:
            try:
                got.append(read_raw_packet(client, 0.5))
            except (TimeoutError, Closed, ConnectionError):
                return got
    finally:
        client.close()
        other.close()


@needs_mosquitto
@pytest.mark.parametrize("bridge", [False, True], ids=["client", "bridge"])
def test_a_bridge_sees_the_retain_flag_as_published(pair: Pair, bridge: bool) -> None:
    theirs = _retained_live(pair, True, bridge)
    mine = _retained_live(pair, False, bridge)
    assert mine == theirs
    assert bool(mine[0][0] & 0x01) == bridge
