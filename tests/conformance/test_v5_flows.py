"""MQTT 5.0 QoS protocol flows (section 4.3), message ordering (4.6) and flow control (3.3.4,
4.9). The server plays both roles: receiver of a publisher's PUBLISH and sender to subscribers."""

from __future__ import annotations

from typing import Any

import pytest

from midge.codec.packets import (
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
)
from midge.codec.properties import Prop
from tests.conformance.test_v5_support import Clients, RawClient, frames, tap

SEI = Prop.SESSION_EXPIRY_INTERVAL
EXPIRY = Prop.MESSAGE_EXPIRY_INTERVAL
RECEIVE_MAXIMUM = Prop.RECEIVE_MAXIMUM


def _subscriber(clients: Clients, name: str, flt: str, **fields: Any) -> RawClient:
    sub = clients.connect(name, **fields)
    sub.sub(flt, qos=2)
    return sub


# -- 4.3.1 QoS 0 --------------------------------------------------------------------------------


def test_MQTT_4_3_1_1_qos0_sent_with_dup_0(clients: Clients) -> None:
    """MQTT-4.3.1-1: the server sends a QoS 0 message as a QoS 0 PUBLISH with DUP 0."""
    sub = clients.open()
    wire = tap(sub)
    sub.connect5("q0")
    sub.sub("q0/t", qos=2)
    pub = clients.connect("q0-pub")
    pub.pub("q0/t", b"x", qos=0)
    [msg] = sub.publishes(1)
    assert (msg.qos, msg.dup, msg.packet_id) == (0, False, None)
    sub.ping()
    assert [f[0] for f in frames(wire) if f[0] >> 4 == 3] == [0x30]


# -- 4.3.2 QoS 1 --------------------------------------------------------------------------------


def test_MQTT_4_3_2_1_qos1_unused_packet_identifiers(clients: Clients) -> None:
    """MQTT-4.3.2-1: each new QoS 1 message to a subscriber gets a Packet Identifier not in use."""
    sub = _subscriber(clients, "q1id", "q1id/t")
    pub = clients.connect("q1id-pub")
    for i in range(8):
        pub.pub("q1id/t", bytes([i]), qos=1)
    first = sub.publishes(8)
    assert len({p.packet_id for p in first}) == 8 and all(p.packet_id for p in first)
    for msg in first[:4]:
        sub.send(Puback(msg.packet_id or 0))
    still_used = {p.packet_id for p in first[4:]}
    for i in range(4):
        pub.pub("q1id/t", bytes([i]), qos=1)
    second = sub.publishes(4)
    assert not {p.packet_id for p in second} & still_used
    assert len({p.packet_id for p in second}) == 4


def test_MQTT_4_3_2_2_qos1_first_sent_with_dup_0(clients: Clients) -> None:
    """MQTT-4.3.2-2: the server sends a new QoS 1 message as a QoS 1 PUBLISH with DUP 0."""
    sub = _subscriber(clients, "q1dup", "q1dup/t")
    pub = clients.connect("q1dup-pub")
    pub.pub("q1dup/t", b"x", qos=1)
    [msg] = sub.publishes(1)
    assert (msg.qos, msg.dup) == (1, False) and msg.packet_id


def test_MQTT_4_3_2_3_qos1_unacknowledged_until_puback(clients: Clients) -> None:
    """MQTT-4.3.2-3: a QoS 1 PUBLISH stays unacknowledged until its PUBACK: on reconnect the one
    without PUBACK is re-sent, the acknowledged one is not."""
    sub = _subscriber(clients, "q1un", "q1un/t", clean_start=False, properties={SEI: 60})
    pub = clients.connect("q1un-pub")
    pub.pub("q1un/t", b"acked", qos=1)
    pub.pub("q1un/t", b"not acked", qos=1)
    acked, pending = sub.publishes(2)
    sub.send(Puback(acked.packet_id or 0))
    sub.ping()
    sub.close()
    again = clients.connect("q1un", clean_start=False, properties={SEI: 60})
    [msg] = again.publishes(1)
    assert (msg.payload, msg.packet_id) == (b"not acked", pending.packet_id)
    again.send(Puback(msg.packet_id or 0))
    again.no_publish()


def test_MQTT_4_3_2_4_server_pubacks_after_taking_ownership(clients: Clients) -> None:
    """MQTT-4.3.2-4: the server answers a QoS 1 PUBLISH with a PUBACK carrying its Packet
    Identifier, having accepted ownership: the message is delivered onward."""
    sub = _subscriber(clients, "q1own", "q1own/t")
    pub = clients.connect("q1own-pub")
    pub.send(Publish("q1own/t", b"owned", 1, packet_id=0x1357))
    assert pub.expect(Puback).packet_id == 0x1357
    pub.close()
    [msg] = sub.publishes(1)
    assert msg.payload == b"owned"


def test_MQTT_4_3_2_5_same_packet_id_after_puback_is_new(clients: Clients) -> None:
    """MQTT-4.3.2-5: after sending PUBACK the server treats a PUBLISH with the same Packet
    Identifier as a new message, DUP set or not: all three are delivered."""
    sub = _subscriber(clients, "q1new", "q1new/t")
    pub = clients.connect("q1new-pub")
    for payload, dup in [(b"1", False), (b"2", True), (b"3", False)]:
        pub.send(Publish("q1new/t", payload, 1, dup=dup, packet_id=7))
        assert pub.expect(Puback).packet_id == 7
    assert [p.payload for p in sub.publishes(3)] == [b"1", b"2", b"3"]


# -- 4.3.3 QoS 2 --------------------------------------------------------------------------------


def test_MQTT_4_3_3_1_qos2_unused_packet_identifiers(clients: Clients) -> None:
    """MQTT-4.3.3-1: each new QoS 2 message to a subscriber gets a Packet Identifier not in use,
    including while earlier ones wait for PUBREC or PUBCOMP."""
    sub = _subscriber(clients, "q2id", "q2id/t")
    pub = clients.connect("q2id-pub")
    for i in range(6):
        pub.pub("q2id/t", bytes([i]), qos=2)
    first = sub.publishes(6)
    for msg in first[:3]:
        sub.send(Pubrec(msg.packet_id or 0))  # these now wait for PUBCOMP: still in use
    for _ in range(3):
        sub.wait_for(Pubrel)
    for i in range(3):
        pub.pub("q2id/t", bytes([i]), qos=2)
    second = sub.publishes(3)
    ids = [p.packet_id for p in first + second]
    assert all(ids) and len(set(ids)) == 9, ids


def test_MQTT_4_3_3_2_qos2_first_sent_with_dup_0(clients: Clients) -> None:
    """MQTT-4.3.3-2: the server sends a new QoS 2 message as a QoS 2 PUBLISH with DUP 0."""
    sub = _subscriber(clients, "q2dup", "q2dup/t")
    pub = clients.connect("q2dup-pub")
    pub.pub("q2dup/t", b"x", qos=2)
    [msg] = sub.publishes(1)
    assert (msg.qos, msg.dup) == (2, False) and msg.packet_id


def test_MQTT_4_3_3_3_qos2_unacknowledged_until_pubrec(clients: Clients) -> None:
    """MQTT-4.3.3-3: a QoS 2 PUBLISH without PUBREC is re-sent (same Packet Identifier, DUP 1) when
    the Session resumes."""
    sub = _subscriber(clients, "q2un", "q2un/t", clean_start=False, properties={SEI: 60})
    pub = clients.connect("q2un-pub")
    pub.pub("q2un/t", b"x", qos=2)
    [first] = sub.publishes(1)
    sub.close()
    again = clients.connect("q2un", clean_start=False, properties={SEI: 60})
    [msg] = again.publishes(1)
    assert (msg.packet_id, msg.dup, msg.qos) == (first.packet_id, True, 2)
    again.ack(msg, others_stay_queued=True)


def test_MQTT_4_3_3_4_pubrel_after_pubrec(clients: Clients) -> None:
    """MQTT-4.3.3-4: on a PUBREC with a Reason Code below 0x80 the server sends a PUBREL with the
    PUBLISH's Packet Identifier (for 0x00 and 0x10)."""
    sub = _subscriber(clients, "q2rel", "q2rel/t")
    pub = clients.connect("q2rel-pub")
    pub.pub("q2rel/t", b"a", qos=2)
    pub.pub("q2rel/t", b"b", qos=2)
    a, b = sub.publishes(2)
    sub.send(Pubrec(a.packet_id or 0, 0x00))
    sub.send(Pubrec(b.packet_id or 0, 0x10))
    rels = [sub.wait_for(Pubrel), sub.wait_for(Pubrel)]
    assert a.packet_id is not None and b.packet_id is not None  # QoS 2 PUBLISHes
    assert sorted(r.packet_id for r in rels) == sorted([a.packet_id, b.packet_id])


def test_MQTT_4_3_3_5_pubrel_unacknowledged_until_pubcomp(clients: Clients) -> None:
    """MQTT-4.3.3-5: the PUBREL stays unacknowledged until its PUBCOMP: on reconnect without
    PUBCOMP the server re-sends the PUBREL."""
    sub = _subscriber(clients, "q2comp", "q2comp/t", clean_start=False, properties={SEI: 60})
    pub = clients.connect("q2comp-pub")
    pub.pub("q2comp/t", b"x", qos=2)
    [msg] = sub.publishes(1)
    sub.send(Pubrec(msg.packet_id or 0))
    sub.wait_for(Pubrel)
    sub.close()
    again = clients.connect("q2comp", clean_start=False, properties={SEI: 60})
    pubrel = again.wait_for(Pubrel)
    assert pubrel.packet_id == msg.packet_id
    again.send(Pubcomp(msg.packet_id or 0))
    again.no_publish()


def test_MQTT_4_3_3_6_no_publish_resend_after_pubrel(clients: Clients) -> None:
    """MQTT-4.3.3-6: once the server has sent the PUBREL it does not re-send the PUBLISH: the
    resumed Session gets the PUBREL only."""
    sub = _subscriber(clients, "q2no", "q2no/t", clean_start=False, properties={SEI: 60})
    pub = clients.connect("q2no-pub")
    pub.pub("q2no/t", b"x", qos=2)
    [msg] = sub.publishes(1)
    sub.send(Pubrec(msg.packet_id or 0))
    sub.wait_for(Pubrel)
    sub.close()
    again = clients.connect("q2no", clean_start=False, properties={SEI: 60})
    assert again.recv().packet_id == msg.packet_id  # type: ignore[union-attr]
    again.send(Pubcomp(msg.packet_id or 0))
    again.no_publish()
    assert not again.pending


def test_MQTT_4_3_3_7_no_expiry_once_qos2_publish_sent(clients: Clients) -> None:
    """MQTT-4.3.3-7: the server does not apply message expiry to a QoS 2 message it has already
    sent: the unacknowledged PUBLISH (Message Expiry 1 s) is still re-sent 2.1 s later when the
    Session resumes, while one queued unsent for the same time has expired."""
    sub = _subscriber(clients, "q2exp", "q2exp/t", clean_start=False, properties={SEI: 60})
    pub = clients.connect("q2exp-pub")
    pub.pub("q2exp/t", b"x", qos=2, properties={EXPIRY: 1})
    [first] = sub.publishes(1)
    sub.close()
    # The control: one not yet sent (queued while the subscriber is away) does expire.
    pub.pub("q2exp/t", b"unsent", qos=2, properties={EXPIRY: 1})
    clients.advance(2.1)  # the Message Expiry Interval (1 s) has passed
    again = clients.connect("q2exp", clean_start=False, properties={SEI: 60})
    [msg] = again.publishes(1)
    assert (msg.packet_id, msg.payload, msg.dup) == (first.packet_id, b"x", True)
    again.ack(msg, others_stay_queued=True)
    again.no_publish()


def test_MQTT_4_3_3_8_server_pubrec_after_taking_ownership(clients: Clients) -> None:
    """MQTT-4.3.3-8: the server answers a QoS 2 PUBLISH with a PUBREC carrying its Packet
    Identifier, having accepted ownership: the message reaches the subscriber exactly once."""
    sub = _subscriber(clients, "q2own", "q2own/t")
    pub = clients.connect("q2own-pub")
    pub.send(Publish("q2own/t", b"owned", 2, packet_id=0x2468))
    assert pub.expect(Pubrec).packet_id == 0x2468
    pub.send(Pubrel(0x2468))
    assert pub.expect(Pubcomp).packet_id == 0x2468
    [msg] = sub.publishes(1)
    assert msg.payload == b"owned"
    sub.ack(msg, others_stay_queued=True)
    sub.no_publish()


def test_MQTT_4_3_3_9_after_failed_pubrec_same_id_is_new(make_broker: Any) -> None:
    """MQTT-4.3.3-9: after a PUBREC with a Reason Code of 0x80 or more (here: payload above
    message_size_limit), a PUBLISH with the same Packet Identifier is a new message."""
    with Clients(make_broker(message_size_limit=10)) as clients:
        sub = _subscriber(clients, "q2fail", "q2fail/t")
        pub = clients.connect("q2fail-pub")
        pub.send(Publish("q2fail/t", bytes(50), 2, packet_id=5))
        assert pub.expect(Pubrec).reason_code >= 0x80
        pub.send(Publish("q2fail/t", b"small", 2, packet_id=5))
        pubrec = pub.expect(Pubrec)
        assert pubrec.reason_code < 0x80
        pub.send(Pubrel(5))
        pub.expect(Pubcomp)
        [msg] = sub.publishes(1)
        assert msg.payload == b"small"


def test_MQTT_4_3_3_10_duplicate_before_pubrel_not_delivered_twice(clients: Clients) -> None:
    """MQTT-4.3.3-10: until the PUBREL, a PUBLISH with the same Packet Identifier is answered with
    PUBREC again and does not cause a duplicate delivery."""
    sub = _subscriber(clients, "q2d", "q2d/t")
    pub = clients.connect("q2d-pub")
    pub.send(Publish("q2d/t", b"once", 2, packet_id=9))
    assert pub.expect(Pubrec).packet_id == 9
    pub.send(Publish("q2d/t", b"once", 2, dup=True, packet_id=9))
    assert pub.expect(Pubrec).packet_id == 9
    pub.send(Pubrel(9))
    assert pub.expect(Pubcomp).packet_id == 9
    [msg] = sub.publishes(1)
    sub.ack(msg, others_stay_queued=True)
    sub.no_publish()


def test_MQTT_4_3_3_11_pubcomp_for_pubrel(clients: Clients) -> None:
    """MQTT-4.3.3-11: the server answers each PUBREL with a PUBCOMP with the same Packet
    Identifier (several flows interleaved)."""
    c = clients.connect("q2c")
    for pid in (1, 2, 3):
        c.send(Publish("q2c/t", b"x", 2, packet_id=pid))
    assert [c.expect(Pubrec).packet_id for _ in range(3)] == [1, 2, 3]
    for pid in (3, 1, 2):
        c.send(Pubrel(pid))
    assert [c.expect(Pubcomp).packet_id for _ in range(3)] == [3, 1, 2]


def test_MQTT_4_3_3_12_after_pubcomp_same_id_is_new(clients: Clients) -> None:
    """MQTT-4.3.3-12: after the PUBCOMP, a PUBLISH with the same Packet Identifier is a new
    message: both are delivered."""
    sub = _subscriber(clients, "q2n", "q2n/t")
    pub = clients.connect("q2n-pub")
    for payload in (b"first", b"second"):
        pub.send(Publish("q2n/t", payload, 2, packet_id=4))
        pub.expect(Pubrec)
        pub.send(Pubrel(4))
        pub.expect(Pubcomp)
    got = sub.publishes(2)
    assert [p.payload for p in got] == [b"first", b"second"]


def test_MQTT_4_3_3_13_qos2_sequence_continues_after_expiry(clients: Clients) -> None:
    """MQTT-4.3.3-13: the QoS 2 acknowledgement sequence continues even when message expiry has
    applied: as receiver, a PUBREL sent 2 s after the PUBREC of a message with Message Expiry 1 s
    still gets its PUBCOMP; as sender, a PUBREC sent 2 s after receiving such a message still gets
    its PUBREL."""
    sub = _subscriber(clients, "q2e", "q2e/t")
    pub = clients.connect("q2e-pub")
    pub.send(Publish("q2e/late", b"x", 2, packet_id=3, properties={EXPIRY: 1}))
    pub.expect(Pubrec)
    pub.pub("q2e/t", b"y", qos=2, properties={EXPIRY: 1})
    [msg] = sub.publishes(1)
    clients.advance(2.1)  # the Message Expiry Interval (1 s) of both messages has passed
    pub.send(Pubrel(3))
    assert pub.expect(Pubcomp).packet_id == 3
    sub.send(Pubrec(msg.packet_id or 0))
    assert sub.wait_for(Pubrel).packet_id == msg.packet_id
    sub.send(Pubcomp(msg.packet_id or 0))


# -- 4.6 Message ordering -----------------------------------------------------------------------


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_MQTT_4_6_0_5_ordered_topic(clients: Clients, qos: int) -> None:
    """MQTT-4.6.0-5: messages published to an Ordered Topic by one Client are sent to subscribers
    (same topic and QoS) in the order they were received."""
    sub = _subscriber(clients, f"ord{qos}", "ord/t")
    pub = clients.connect(f"ord{qos}-pub")
    count = 40
    for i in range(count):
        if qos == 2:  # complete each flow: unreleased QoS 2 messages would exceed Receive Maximum
            pub.pub("ord/t", i.to_bytes(2, "big"), qos=2)
        else:
            pub.send(Publish("ord/t", i.to_bytes(2, "big"), qos, packet_id=i + 1 if qos else None))
    got = []
    for _ in range(count):
        msg = sub.wait_for(Publish)
        got.append(int.from_bytes(msg.payload, "big"))
        sub.ack(msg, others_stay_queued=True)
    assert got == list(range(count))


def test_MQTT_4_6_0_6_every_topic_ordered_by_default(clients: Clients) -> None:
    """MQTT-4.6.0-6: by default every Topic is an Ordered Topic on non-shared subscriptions: two
    publishers interleaving on three topics; per publisher and topic the order is kept."""
    sub = _subscriber(clients, "ordall", "ordall/#")
    pubs = [clients.connect("ordall-p1"), clients.connect("ordall-p2")]
    for i in range(30):
        for n, pub in enumerate(pubs):
            pub.send(Publish(f"ordall/{i % 3}", bytes([n, i]), 1, packet_id=i + 1))
    seen: dict[tuple[int, str], list[int]] = {}
    for _ in range(60):
        msg = sub.wait_for(Publish)
        seen.setdefault((msg.payload[0], msg.topic), []).append(msg.payload[1])
        sub.ack(msg, others_stay_queued=True)
    assert len(seen) == 6
    for sequence in seen.values():
        assert sequence == sorted(sequence)


# -- 3.3.4 / 4.9 Flow control -------------------------------------------------------------------


def test_MQTT_3_3_4_7_receive_maximum_exceeded_by_client(clients: Clients) -> None:
    """MQTT-3.3.4-7 (the Client must not exceed the server's Receive Maximum) seen from the server:
    with Receive Maximum 20 in its CONNACK, a 21st QoS 2 PUBLISH without PUBREL for the earlier
    ones gets DISCONNECT 0x93 (Receive Maximum exceeded, section 3.3.4)."""
    c = clients.connect("rmx")
    assert c.connack is not None
    maximum = c.connack.properties.get(RECEIVE_MAXIMUM, 65535)
    assert maximum == 20
    for pid in range(1, maximum + 1):
        c.send(Publish("rmx/t", b"x", 2, packet_id=pid))
    for _ in range(maximum):
        c.wait_for(Pubrec)
    c.send(Publish("rmx/t", b"x", 2, packet_id=maximum + 1))
    c.expect_disconnect(0x93)


def test_MQTT_3_3_4_9_server_respects_client_receive_maximum(clients: Clients) -> None:
    """MQTT-3.3.4-9: the server never has more than the Client's Receive Maximum (2) QoS 1 and 2
    PUBLISHes unacknowledged; each PUBACK/PUBCOMP lets one more through."""
    sub = _subscriber(clients, "rm", "rm/t", properties={RECEIVE_MAXIMUM: 2})
    pub = clients.connect("rm-pub")
    for i in range(6):
        pub.pub("rm/t", bytes([i]), qos=1 + i % 2)
    first = sub.publishes(2)
    sub.no_publish(0.5)
    delivered = list(first)
    outstanding = list(first)
    while len(delivered) < 6:
        sub.ack(outstanding.pop(0))
        [msg] = sub.publishes(1)
        delivered.append(msg)
        outstanding.append(msg)
        sub.no_publish(0.2)
    assert [p.payload[0] for p in delivered] == list(range(6))


def test_MQTT_3_3_4_10_other_packets_not_delayed_by_receive_maximum(clients: Clients) -> None:
    """MQTT-3.3.4-10: while the Client's Receive Maximum (1) is used up, the server still sends
    every other packet at once: PINGRESP, SUBACK, UNSUBACK, PUBACK, PUBREC/PUBCOMP."""
    c = _subscriber(clients, "rmo", "rmo/t", properties={RECEIVE_MAXIMUM: 1})
    pub = clients.connect("rmo-pub")
    pub.pub("rmo/t", b"1", qos=1)
    pub.pub("rmo/t", b"2", qos=1)
    [first] = c.publishes(1)
    c.send(Pingreq())
    c.wait_for(Pingresp, 1.0)
    c.send(Subscribe(50, [Subscription("rmo/other", 1)]))
    assert c.wait_for(Suback, 1.0).packet_id == 50
    c.send(Unsubscribe(51, ["rmo/other"]))
    assert c.wait_for(Unsuback, 1.0).packet_id == 51
    c.send(Publish("rmo/elsewhere", b"x", 1, packet_id=52))
    assert c.wait_for(Puback, 1.0).packet_id == 52
    c.send(Publish("rmo/elsewhere", b"x", 2, packet_id=53))
    assert c.wait_for(Pubrec, 1.0).packet_id == 53
    c.send(Pubrel(53))
    assert c.wait_for(Pubcomp, 1.0).packet_id == 53
    c.no_publish(0.3)
    c.send(Puback(first.packet_id or 0))
    assert c.publishes(1)[0].payload == b"2"


def test_MQTT_4_9_0_1_initial_send_quota(clients: Clients) -> None:
    """MQTT-4.9.0-1: the server's initial send quota towards a Client is non-zero and not above the
    Client's Receive Maximum (3): of 6 waiting messages, 1 to 3 arrive before any acknowledgement,
    and with Receive Maximum absent (65535) all of them do."""
    sub = _subscriber(clients, "quota", "quota/t", properties={RECEIVE_MAXIMUM: 3})
    free = _subscriber(clients, "quota-free", "quota/t")
    pub = clients.connect("quota-pub")
    for i in range(6):
        pub.pub("quota/t", bytes([i]), qos=1)
    got = sub.publishes(1)
    try:
        while True:
            got.append(sub.wait_for(Publish, 0.5))
    except TimeoutError:
        pass
    assert 1 <= len(got) <= 3
    assert len(free.publishes(6)) == 6


def test_MQTT_4_9_0_2_no_qos_above_0_when_quota_is_0(clients: Clients) -> None:
    """MQTT-4.9.0-2: with the send quota at 0 (Receive Maximum 1, one QoS 2 message in flight) the
    server sends no QoS 1/2 PUBLISH; a PUBREC does not restore the quota, the PUBCOMP does."""
    sub = _subscriber(clients, "q0q", "q0q/t", properties={RECEIVE_MAXIMUM: 1})
    pub = clients.connect("q0q-pub")
    pub.pub("q0q/t", b"1", qos=2)
    pub.pub("q0q/t", b"2", qos=1)
    [first] = sub.publishes(1)
    sub.no_publish(0.4)
    sub.send(Pubrec(first.packet_id or 0))
    sub.wait_for(Pubrel)
    sub.no_publish(0.4)
    sub.send(Pubcomp(first.packet_id or 0))
    [second] = sub.publishes(1)
    assert second.payload == b"2"


def test_MQTT_4_9_0_3_other_packets_processed_when_quota_is_0(clients: Clients) -> None:
    """MQTT-4.9.0-3: with its send quota at 0 the server keeps processing and answering all other
    packets: the Client can subscribe, publish (QoS 1 and 2) and ping, and a QoS 1 PUBACK it
    sends restores the flow."""
    c = _subscriber(clients, "q0p", "q0p/t", properties={RECEIVE_MAXIMUM: 1})
    pub = clients.connect("q0p-pub")
    for i in range(3):
        pub.pub("q0p/t", bytes([i]), qos=1)
    [first] = c.publishes(1)
    assert c.sub("q0p/more", qos=1).reason_codes == [1]
    c.pub("q0p/elsewhere", b"x", qos=1)
    c.pub("q0p/elsewhere", b"y", qos=2)
    c.ping()
    c.no_publish(0.3)
    c.send(Puback(first.packet_id or 0))
    [second] = c.publishes(1)
    assert second.payload == b"\x01"
