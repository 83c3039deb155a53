"""The wire where the specification leaves a choice (issue 11), and state that changes only for
packets actually written: driven in memory."""

from __future__ import annotations

from midge.codec.packets import Publish
from midge.codec.properties import Prop
from midge.config import Config
from tests.memory import MemoryBroker
from tests.rawclient import RawClient


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


def test_resumed_session_resends_within_a_smaller_receive_maximum() -> None:
    """MQTT-3.3.4-9 v5: never more unacknowledged QoS 1/2 PUBLISH than the client's Receive
    Maximum, also when a session resumes with a smaller one (MQTT-4.4.0-1: re-sent in original
    order, DUP set); the rest follow as the client acknowledges, then the queue."""
    broker = MemoryBroker(Config())
    sub = RawClient(broker.link(), version=5)
    sub.connect5("resumed", properties={Prop.SESSION_EXPIRY_INTERVAL: 300})
    sub.subscribe("r/#", 1)
    pub = RawClient(broker.link(), version=5)
    pub.connect5("pub")
    for i in range(10):
        pub.publish("r/t", b"%d" % i, qos=1)
    first = sub.publishes(10)
    assert [p.packet_id for p in first] == list(range(1, 11))
    sub.close()
    pub.publish("r/t", b"queued", qos=1)

    again = RawClient(broker.link(), version=5)
    connack = again.connect5(
        "resumed",
        clean_start=False,
        properties={Prop.SESSION_EXPIRY_INTERVAL: 300, Prop.RECEIVE_MAXIMUM: 2},
    )
    assert connack.session_present
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
