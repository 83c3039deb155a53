"""The wire where the specification leaves a choice (issue 11), and state that changes only for
packets actually written: driven in memory."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from midge.codec.encode import encode
from midge.codec.packets import Connack, Connect, Pubcomp, Publish, Pubrec, Pubrel
from midge.codec.properties import Prop
from midge.config import Config, parse_mosquitto_conf
from tests.differential.harness import mosquitto, needs_mosquitto
from tests.memory import MemoryBroker
from tests.rawclient import Closed, RawClient, read_raw_packet, tap

#: What both brokers are given (:func:`pair`), so that every optional CONNACK property is sent.
LIMITS = [
    "max_keepalive 60",
    "retain_available false",
    "max_packet_size 2000",
    "max_qos 1",
    "max_inflight_messages 7",
]


class Pair:
    """The real Mosquitto 2.0.11 (on a socket) and midge (in memory), given the same
    mosquitto.conf: :meth:`both` sends the same bytes to each and returns what each answered."""

    def __init__(self, conf: str, port: int) -> None:
        self.port = port
        self.midge = MemoryBroker(parse_mosquitto_conf(conf))

    def client(self, real: bool, version: int = 5) -> RawClient:
        """A client to the real mosquitto (``real``) or to midge."""
        if real:
            return RawClient("127.0.0.1", self.port, version=version)
        return RawClient(self.midge.link(), version=version)

    def answer(self, client: RawClient, data: bytes) -> tuple[bytes, Any]:
        received = tap(client)
        client.send_raw(data)
        packet = client.recv()
        return bytes(received), packet

    def both(self, data: bytes, version: int) -> tuple[tuple[bytes, Any], tuple[bytes, Any]]:
        with self.client(True, version) as mosq:
            theirs = self.answer(mosq, data)
        with self.client(False, version) as ours:
            mine = self.answer(ours, data)
        return theirs, mine


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    yield from start_pair(LIMITS)


@pytest.fixture(scope="module")
def plain_pair() -> Iterator[Pair]:
    yield from start_pair([])


def start_pair(extra: list[str]) -> Iterator[Pair]:
    """The real mosquitto and midge (in memory) with the same configuration lines."""
    lines = ["allow_anonymous true", *extra]
    with mosquitto(lines) as port:
        yield Pair("\n".join([f"listener {port} 127.0.0.1", *lines]) + "\n", port)


@needs_mosquitto
@pytest.mark.parametrize(
    ("client_id", "keep_alive", "properties"),
    [
        ("c1", 30, {}),
        ("c2", 30, {Prop.SESSION_EXPIRY_INTERVAL: 100}),
        ("c3", 100, {}),
        ("c4", 0, {Prop.RECEIVE_MAXIMUM: 5, Prop.TOPIC_ALIAS_MAXIMUM: 3}),
        ("", 30, {}),
        ("", 0, {Prop.SESSION_EXPIRY_INTERVAL: 100}),
    ],
)
def test_connack_properties_in_mosquittos_order(
    pair: Pair, client_id: str, keep_alive: int, properties: dict[int, Any]
) -> None:
    """The CONNACK properties (their order is the server's choice, MQTT 5 3.2.2.3) come in the
    order Mosquitto 2.0.11 sends them, byte for byte but for the Assigned Client Identifier."""
    connect = Connect(
        protocol_level=5, client_id=client_id, keep_alive=keep_alive, properties=properties
    )
    (theirs, their_ack), (mine, my_ack) = pair.both(encode(connect, 5), 5)
    assert isinstance(their_ack, Connack) and isinstance(my_ack, Connack)
    if client_id:
        assert mine == theirs
    else:
        assert list(my_ack.properties) == list(their_ack.properties)
        their_ack.properties.pop(Prop.ASSIGNED_CLIENT_IDENTIFIER)
        my_ack.properties.pop(Prop.ASSIGNED_CLIENT_IDENTIFIER)
        assert my_ack == their_ack


def test_topic_alias_of_a_publish_too_large_to_send_is_not_registered() -> None:
    """MQTT-3.1.2-25 v5 drops the PUBLISH (gmqtt: Maximum Packet Size 1024); the Topic Alias it
    would have set (MQTT 5 3.3.2.3.4) is unknown to the client, so it must not be sent alone
    afterwards, and the dropped PUBLISH takes no packet id."""
    broker = MemoryBroker(Config())
    sub = RawClient(broker.link(), version=5)
    sub.connect5(
        "gmqtt-like",
        properties={Prop.TOPIC_ALIAS_MAXIMUM: 5, Prop.MAXIMUM_PACKET_SIZE: 1024},
    )
    sub.subscribe("a/t", 1)
    pub = RawClient(broker.link(), version=5)
    pub.connect5("pub")
    pub.publish("a/t", b"x" * 2000, qos=1)
    sub.no_publish()
    pub.publish("a/t", b"small", qos=1)
    got = sub.expect(Publish)
    assert got.topic == "a/t"
    assert got.properties.get(Prop.TOPIC_ALIAS) == 1
    assert got.payload == b"small"
    assert got.packet_id == 1  # the dropped PUBLISH took no packet id either
    sub.ack(got)
    pub.publish("a/t", b"again", qos=1)
    again = sub.expect(Publish)
    assert again.topic == "" and again.properties.get(Prop.TOPIC_ALIAS) == 1
    assert again.packet_id == 2


def _unacknowledged(
    client_id: str, qos: int, count: int
) -> tuple[MemoryBroker, RawClient, RawClient, list[Publish]]:
    """A persistent v5 subscriber to ``r/#`` that received ``count`` QoS ``qos`` messages and
    acknowledged none yet: (broker, subscriber, publisher, what it received)."""
    broker = MemoryBroker(Config())
    sub = RawClient(broker.link(), version=5)
    sub.connect5(client_id, properties={Prop.SESSION_EXPIRY_INTERVAL: 300})
    sub.subscribe("r/#", qos)
    pub = RawClient(broker.link(), version=5)
    pub.connect5("pub")
    for i in range(count):
        pub.publish("r/t", b"%d" % i, qos=qos)
    return broker, sub, pub, sub.publishes(count)


def _resume(broker: MemoryBroker, client_id: str, receive_maximum: int) -> RawClient:
    """The subscriber back, with Receive Maximum ``receive_maximum``; its session is present."""
    again = RawClient(broker.link(), version=5)
    connack = again.connect5(
        client_id,
        clean_start=False,
        properties={Prop.SESSION_EXPIRY_INTERVAL: 300, Prop.RECEIVE_MAXIMUM: receive_maximum},
    )
    assert connack.session_present
    return again


def test_resumed_session_resends_within_a_smaller_receive_maximum() -> None:
    """MQTT-3.3.4-9 v5: never more unacknowledged QoS 1/2 PUBLISH than the client's Receive
    Maximum, also when a session resumes with a smaller one (MQTT-4.4.0-1: re-sent in original
    order, DUP set); the rest follow as the client acknowledges, then the queue."""
    broker, sub, pub, first = _unacknowledged("resumed", 1, 10)
    assert [p.packet_id for p in first] == list(range(1, 11))
    sub.close()
    pub.publish("r/t", b"queued", qos=1)

    again = _resume(broker, "resumed", 2)
    window = again.publishes(2)
    again.no_publish()
    assert [(p.packet_id, p.dup, p.payload) for p in window] == [(1, True, b"0"), (2, True, b"1")]
    seen = [p.payload for p in window]
    outstanding = list(window)
    while len(seen) < 11:
        again.ack(outstanding.pop(0))
        (next_one,) = again.publishes(1)
        again.no_publish()
        outstanding.append(next_one)
        seen.append(next_one.payload)
        if next_one.payload != b"queued":
            assert next_one.dup and next_one.packet_id == int(next_one.payload) + 1
    assert seen == [b"%d" % i for i in range(10)] + [b"queued"]
    assert outstanding[-1].dup is False


def qos_flow_bytes(sub: RawClient, pub: RawClient, qos: int) -> tuple[bytes, bytes]:
    """``pub`` publishes at ``qos`` to ``sub`` (subscribed at ``qos``) and each completes its
    flow: the raw bytes each received from the broker meanwhile."""
    to_sub, to_pub = tap(sub), tap(pub)
    pub.publish("f", b"m", qos=qos)
    sub.ack(sub.expect(Publish))
    return bytes(to_sub), bytes(to_pub)


@needs_mosquitto
@pytest.mark.parametrize("qos", [1, 2])
def test_successful_acks_are_sent_short_as_by_mosquitto(plain_pair: Pair, qos: int) -> None:
    """MQTT 5 3.4.2.1: a PUBACK/PUBREC/PUBREL/PUBCOMP with reason Success and no properties may
    omit both (remaining length 2); Mosquitto does, and so does midge: the same bytes."""
    answers = []
    for real in (True, False):
        with plain_pair.client(real) as sub, plain_pair.client(real) as pub:
            sub.connect5("sub")
            sub.subscribe("f", qos)
            pub.connect5("pub")
            answers.append(qos_flow_bytes(sub, pub, qos))
    theirs, mine = answers
    assert mine == theirs
    to_sub, to_pub = mine
    if qos == 1:
        assert to_pub == b"\x40\x02\x00\x01"
    else:
        assert to_pub == b"\x50\x02\x00\x01\x70\x02\x00\x01"
        assert to_sub.endswith(b"\x62\x02\x00\x01")


def test_resumed_session_resends_pubrel_and_publish_in_order_within_the_window() -> None:
    """MQTT-4.4.0-1 with MQTT-3.3.4-9 v5: the PUBRELs and PUBLISHes of a resumed session go out
    in their original order, one at a time under Receive Maximum 1."""
    broker, sub, _, first = _unacknowledged("q2", 2, 4)
    for p in first[:2]:
        sub.send(Pubrec(p.packet_id or 0))
        assert sub.expect(Pubrel).packet_id == p.packet_id
    sub.close()

    again = _resume(broker, "q2", 1)
    assert again.expect(Pubrel).packet_id == 1
    again.expect_nothing(0.1)
    again.send(Pubcomp(1))
    assert again.expect(Pubrel).packet_id == 2
    again.expect_nothing(0.1)
    again.send(Pubcomp(2))
    for pid in (3, 4):
        resent = again.expect(Publish)
        assert (resent.packet_id, resent.dup, resent.payload) == (pid, True, b"%d" % (pid - 1))
        again.expect_nothing(0.1)
        again.ack(resent)
    again.expect_nothing(0.1)


@pytest.fixture(scope="module")
def memory_pair() -> Iterator[Pair]:
    yield from start_pair(["memory_limit 60000"])


def _after_publish(client: RawClient, version: int, publish: bytes) -> list[bytes]:
    """CONNECT, then ``publish``: every packet received after the CONNACK, ``b""`` for the close."""
    client.send(Connect("mem", protocol_level=version, keep_alive=60))
    read_raw_packet(client)  # the CONNACK
    client.send_raw(publish)
    received: list[bytes] = []
    while True:
        try:
            received.append(read_raw_packet(client, 1.0))
        except (Closed, ConnectionError):
            return [*received, b""]
        except TimeoutError:
            return received


@needs_mosquitto
@pytest.mark.parametrize("version", [4, 5])
def test_memory_limit_refuses_a_publish_that_does_not_fit(memory_pair: Pair, version: int) -> None:
    """A PUBLISH bigger than ``memory_limit``: Mosquitto cannot allocate it and disconnects the
    publisher (v5 with DISCONNECT 0x80); midge does the same to a v3.1.1 client, byte for byte,
    and answers a v5 one with PUBACK 0x97 Quota exceeded, keeping it connected (the deliberate
    difference docs/mosquitto.md records)."""
    publish = encode(Publish("big", bytes(100_000), 1, packet_id=1), version)
    with memory_pair.client(True, version) as mosq:
        theirs = _after_publish(mosq, version, publish)
    stats = memory_pair.midge.broker.stats
    dropped = stats.messages_dropped
    with memory_pair.client(False, version) as ours:
        mine = _after_publish(ours, version, publish)
    if version == 4:
        assert mine == theirs == [b""]
    else:
        # Mosquitto closes while the PUBLISH is still coming in: the reset may lose its
        # DISCONNECT 0x80.
        assert theirs in ([bytes((0xE0, 1, 0x80)), b""], [b""])
        assert mine == [bytes((0x40, 3, 0, 1, 0x97))]
    assert stats.messages_dropped == dropped + 1
