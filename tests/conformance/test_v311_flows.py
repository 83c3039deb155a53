"""MQTT 3.1.1 sections 4.3 (QoS flows), 4.6 (ordering) and 3.6 (PUBREL): server side.

The server is the receiver of its clients' PUBLISHes and the sender of their subscriptions'
messages; both halves of each flow are checked on the wire. Tests that also apply to MQTT 3.1 run
for protocol levels 3 and 4.
"""

from __future__ import annotations

import pytest

from midge.codec.packets import Puback, Pubcomp, Publish, Pubrec, Pubrel
from tests.rawclient import (
    Raw,
    accepted,
    complete_sent_publishes,
    expect_closed_silently,
    raw_publish,
    read_raw_packet,
    receive_publishes,
    subscriber,
)

BOTH = pytest.mark.parametrize("version", [3, 4], ids=["mqtt31", "mqtt311"])


@BOTH
@pytest.mark.parametrize("published_qos", [0, 1, 2])
def test_MQTT_4_3_1_1_qos0_sent_with_qos0_dup0(raw: Raw, version: int, published_qos: int) -> None:
    """MQTT-4.3.1-1: the server sends a QoS 0 message as a PUBLISH with QoS 0 and DUP 0 (and no
    Packet Identifier, MQTT-2.3.1-5), whatever QoS it was published with."""
    sub = subscriber(raw, "v311/q0/t", 0, version)
    pub = accepted(raw, "v311-q0-pub", version)
    pub.publish("v311/q0/t", b"payload", qos=published_qos)
    packet = read_raw_packet(sub, timeout=2)
    assert packet == b"\x30" + bytes([2 + 9 + 7]) + b"\x00\x09v311/q0/tpayload"


@BOTH
def test_MQTT_4_3_2_1_qos1_sender(raw: Raw, version: int) -> None:
    """MQTT-4.3.2-1: as a QoS 1 sender the server gives each new message an unused non-zero Packet
    Identifier, sends it with QoS 1 and DUP 0, and keeps it unacknowledged until the PUBACK
    (MQTT-2.3.1-4): identifiers of messages in flight never repeat."""
    sub = subscriber(raw, "v311/q1/t", 1, version)
    pub = accepted(raw, "v311-q1-pub", version)
    for n in range(5):
        pub.publish("v311/q1/t", f"m{n}".encode(), qos=1)
    inflight = [sub.expect(Publish, timeout=2) for _ in range(5)]
    assert all((p.qos, p.dup) == (1, False) for p in inflight)
    ids = [p.packet_id for p in inflight]
    assert all(ids) and len(set(ids)) == 5, ids
    sub.send(Puback(ids[0] or 0))
    for n in range(5, 8):
        pub.publish("v311/q1/t", f"m{n}".encode(), qos=1)
    more = [sub.expect(Publish, timeout=2) for _ in range(3)]
    still_unacked = set(ids[1:])
    assert not still_unacked & {p.packet_id for p in more}, "reused an unacknowledged identifier"
    assert len({p.packet_id for p in more}) == 3


@BOTH
def test_MQTT_4_3_2_2_qos1_receiver(raw: Raw, version: int) -> None:
    """MQTT-4.3.2-2: as a QoS 1 receiver the server answers with a PUBACK carrying the PUBLISH's
    Packet Identifier once it owns the message; afterwards a PUBLISH with the same identifier is a
    new publication, even with DUP 1, and is delivered again."""
    sub = subscriber(raw, "v311/q1r/t", 1, version)
    pub = accepted(raw, "v311-q1r-pub", version)
    pub.send_raw(raw_publish("v311/q1r/t", b"first", qos=1, packet_id=9))
    assert pub.expect(Puback, timeout=2).packet_id == 9
    pub.send_raw(raw_publish("v311/q1r/t", b"second", qos=1, dup=True, packet_id=9))
    assert pub.expect(Puback, timeout=2).packet_id == 9
    payloads = []
    for _ in range(2):
        message = sub.expect(Publish, timeout=2)
        payloads.append(message.payload)
        sub.ack(message)
    assert payloads == [b"first", b"second"]


@BOTH
def test_MQTT_4_3_3_1_qos2_sender(raw: Raw, version: int) -> None:
    """MQTT-4.3.3-1: as a QoS 2 sender the server sends PUBLISH with QoS 2 and DUP 0, answers the
    PUBREC with a PUBREL with the same Packet Identifier (first byte 0x62) and, having sent the
    PUBREL, never sends that PUBLISH again; the flow ends with the client's PUBCOMP."""
    sub = subscriber(raw, "v311/q2s/t", 2, version)
    pub = accepted(raw, "v311-q2s-pub", version)
    pub.publish("v311/q2s/t", b"once", qos=2)
    message = sub.expect(Publish, timeout=2)
    assert (message.qos, message.dup, message.payload) == (2, False, b"once")
    pid = message.packet_id or 0
    assert pid
    sub.send(Pubrec(pid))
    assert read_raw_packet(sub, timeout=2) == b"\x62\x02" + pid.to_bytes(2, "big")
    sub.expect_nothing(0.5)
    sub.send(Pubcomp(pid))
    sub.expect_nothing(0.3)


@BOTH
def test_MQTT_4_3_3_2_qos2_receiver(raw: Raw, version: int) -> None:
    """MQTT-4.3.3-2: as a QoS 2 receiver the server answers PUBLISH with PUBREC, answers a repeat
    of it (same identifier, before PUBREL) with PUBREC again without delivering the message twice,
    answers PUBREL with PUBCOMP, and after PUBCOMP treats that identifier as a new publication."""
    sub = subscriber(raw, "v311/q2r/t", 2, version)
    pub = accepted(raw, "v311-q2r-pub", version)
    pub.send_raw(raw_publish("v311/q2r/t", b"one", qos=2, packet_id=11))
    assert pub.expect(Pubrec, timeout=2).packet_id == 11
    pub.send_raw(raw_publish("v311/q2r/t", b"one", qos=2, dup=True, packet_id=11))
    assert pub.expect(Pubrec, timeout=2).packet_id == 11
    pub.send(Pubrel(11))
    assert pub.expect(Pubcomp, timeout=2).packet_id == 11
    pub.send_raw(raw_publish("v311/q2r/t", b"two", qos=2, packet_id=11))
    assert pub.expect(Pubrec, timeout=2).packet_id == 11
    pub.send(Pubrel(11))
    assert pub.expect(Pubcomp, timeout=2).packet_id == 11
    assert [p.payload for p in receive_publishes(sub, 2)] == [b"one", b"two"]
    sub.expect_nothing(0.3)


@BOTH
def test_MQTT_4_3_3_2_pubrel_for_unknown_id_gets_pubcomp(raw: Raw, version: int) -> None:
    """MQTT-4.3.3-2: the server answers a PUBREL with a PUBCOMP carrying the same identifier, even
    for an identifier it no longer holds (a PUBREL re-sent after the PUBCOMP was lost)."""
    pub = accepted(raw, "v311-q2u-pub", version)
    pub.send(Pubrel(321))
    assert pub.expect(Pubcomp, timeout=2).packet_id == 321


@pytest.mark.parametrize("first_byte", [0x60, 0x61, 0x63, 0x6A])
def test_MQTT_3_6_1_1_pubrel_reserved_bits_close(raw: Raw, first_byte: int) -> None:
    """MQTT-3.6.1-1: PUBREL's fixed header flags must be 0010; the server treats anything else as
    malformed and closes the connection. (MQTT 3.1 had no such rule.)"""
    pub = accepted(raw, "v311-pubrel-flags")
    pub.send_raw(raw_publish("v311/prf/t", b"x", qos=2, packet_id=4))
    assert pub.expect(Pubrec, timeout=2).packet_id == 4
    pub.send_raw(bytes([first_byte, 2, 0, 4]))
    expect_closed_silently(pub)


# -- 4.6: message ordering -----------------------------------------------------------------


@BOTH
def test_MQTT_4_6_0_2_pubacks_in_publish_order(raw: Raw, version: int) -> None:
    """MQTT-4.6.0-2 (a server rule too, by MQTT-4.6.0-6): PUBACKs go out in the order the QoS 1
    PUBLISHes were received, here ten sent in one write."""
    pub = accepted(raw, "v311-ackorder", version)
    ids = [50, 3, 999, 7, 1, 65535, 20, 4, 300, 2]
    pub.send_raw(b"".join(raw_publish("v311/ao/t", b"x", qos=1, packet_id=i) for i in ids))
    assert [pub.expect(Puback, timeout=2).packet_id for _ in ids] == ids


@BOTH
def test_MQTT_4_6_0_3_pubrecs_in_publish_order(raw: Raw, version: int) -> None:
    """MQTT-4.6.0-3 (a server rule too, by MQTT-4.6.0-6): PUBRECs go out in the order the QoS 2
    PUBLISHes were received."""
    pub = accepted(raw, "v311-recorder", version)
    ids = [8, 1, 500, 2, 77]
    pub.send_raw(b"".join(raw_publish("v311/ro/t", b"x", qos=2, packet_id=i) for i in ids))
    assert [pub.expect(Pubrec, timeout=2).packet_id for _ in ids] == ids
    pub.send_raw(b"".join(bytes([0x62, 2]) + i.to_bytes(2, "big") for i in ids))
    assert [pub.expect(Pubcomp, timeout=2).packet_id for _ in ids] == ids


@BOTH
def test_MQTT_4_6_0_4_pubrels_in_pubrec_order(raw: Raw, version: int) -> None:
    """MQTT-4.6.0-4 (a server rule too, by MQTT-4.6.0-6): the server sends PUBRELs in the order it
    received the PUBRECs, here the reverse of the PUBLISH order."""
    sub = subscriber(raw, "v311/relorder/t", 2, version)
    pub = accepted(raw, "v311-relorder-pub", version)
    for n in range(5):
        pub.publish("v311/relorder/t", f"m{n}".encode(), qos=2)
    ids = [sub.expect(Publish, timeout=2).packet_id or 0 for _ in range(5)]
    reversed_ids = list(reversed(ids))
    sub.send_raw(b"".join(bytes([0x50, 2]) + i.to_bytes(2, "big") for i in reversed_ids))
    assert [sub.expect(Pubrel, timeout=2).packet_id for _ in ids] == reversed_ids
    for i in reversed_ids:
        sub.send(Pubcomp(i))


def test_MQTT_4_6_0_5_topics_ordered_by_default(raw: Raw) -> None:
    """MQTT-4.6.0-5: by default every topic is an Ordered Topic: messages from one client on one
    topic reach a subscriber in publication order, at every QoS, with no configuration needed."""
    sub = subscriber(raw, "v311/ordered/+", 2)
    pub = accepted(raw, "v311-ordered-pub")
    batch = b""
    for n in range(30):
        qos = n % 3
        pid = n + 1 if qos else None
        batch += raw_publish(f"v311/ordered/q{qos}", f"{n}".encode(), qos=qos, packet_id=pid)
    pub.send_raw(batch)
    complete_sent_publishes(pub, 20, timeout=3)
    received: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for message in receive_publishes(sub, 30, timeout=3):
        received[message.qos].append(int(message.payload))
    for qos, numbers in received.items():
        assert numbers == sorted(numbers), f"QoS {qos} messages out of order: {numbers}"
        assert numbers == list(range(qos, 30, 3))


@BOTH
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_MQTT_4_6_0_6_same_topic_and_qos_in_order(raw: Raw, version: int, qos: int) -> None:
    """MQTT-4.6.0-6: for an Ordered Topic the server sends PUBLISH packets to each subscriber (for
    the same topic and QoS) in the order it received them from a given client: 20 messages sent in
    one write, to two subscribers, one acknowledging as it goes and one acknowledging in bursts.
    (20: Mosquitto 2.0.11 drops pipelined QoS 2 messages beyond its 20 in flight.)"""
    fast = subscriber(raw, "v311/order6/t", 2, version)
    slow = accepted(raw, "v311-order6-slow", version)
    slow.subscribe("v311/order6/#", 2)
    pub = accepted(raw, "v311-order6-pub", version)
    batch = b"".join(
        raw_publish("v311/order6/t", f"{n}".encode(), qos=qos, packet_id=n + 1 if qos else None)
        for n in range(20)
    )
    pub.send_raw(batch)
    if qos:
        assert complete_sent_publishes(pub, 20, timeout=3) == list(range(1, 21))
    for client, ack_every in ((fast, 1), (slow, 5)):
        got = receive_publishes(client, 20, ack_every=ack_every, timeout=3)
        assert [int(p.payload) for p in got] == list(range(20))
        assert {p.qos for p in got} == {qos}
