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
