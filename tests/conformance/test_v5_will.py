"""MQTT 5.0 Will Messages: sections 3.1.2.5-3.1.2.7, 3.1.3.2 and 3.1.3.3.

A "watcher" subscribes to the Will Topic (with Retain As Published, so the RETAIN flag is seen as
the server published it) before the client with the Will goes away.
"""

from __future__ import annotations

from typing import Any

from midge.codec.packets import Subscription
from midge.codec.properties import Prop
from tests.conformance.test_v5_support import MALFORMED, Clients, RawClient
from tests.rawclient import Will, raw_connect

SEI = Prop.SESSION_EXPIRY_INTERVAL
DELAY = Prop.WILL_DELAY_INTERVAL


def _watch(clients: Clients, topic: str) -> RawClient:
    watcher = clients.connect(f"watch-{topic.replace('/', '-')}")
    watcher.sub(Subscription(topic, 2, retain_as_published=True))
    return watcher


def test_MQTT_3_1_2_7_will_is_stored_with_the_session(clients: Clients) -> None:
    """MQTT-3.1.2-7: with the Will Flag set, the Will Message is stored on the server and
    published when the connection is lost: topic, payload and QoS as given in the CONNECT."""
    watcher = _watch(clients, "will7/t")
    c = clients.connect("will7", will=Will("will7/t", b"bye", qos=1))
    c.close()
    [will] = watcher.publishes(1)
    assert (will.topic, will.payload, will.qos) == ("will7/t", b"bye", 1)


def test_MQTT_3_1_2_8_will_published_when_connection_closes(clients: Clients) -> None:
    """MQTT-3.1.2-8: the Will Message is published after the connection is closed without a
    DISCONNECT 0x00 (Will Delay Interval absent, i.e. 0)."""
    watcher = _watch(clients, "will8/a")
    c = clients.connect("will8a", will=Will("will8/a", b"lost"))
    c.close()
    [will] = watcher.publishes(1)
    assert will.payload == b"lost"


def test_MQTT_3_1_2_8_will_not_published_after_normal_disconnect(clients: Clients) -> None:
    """MQTT-3.1.2-8: a DISCONNECT with Reason Code 0x00 deletes the Will Message: nothing is
    published, not even when the Session (Session Expiry 1 s) ends later."""
    watcher = _watch(clients, "will8/b")
    c = clients.connect("will8b", properties={SEI: 1}, will=Will("will8/b", b"no"))
    c.disconnect(0x00)
    clients.advance(1.6)
    watcher.no_publish()


def test_MQTT_3_1_2_8_will_published_after_disconnect_with_will(clients: Clients) -> None:
    """MQTT-3.1.2-8: only Reason Code 0x00 deletes the Will; DISCONNECT 0x04 (Disconnect with Will
    Message) closes the connection and the Will is published."""
    watcher = _watch(clients, "will8/c")
    c = clients.connect("will8c", will=Will("will8/c", b"with will"))
    c.disconnect(0x04)
    [will] = watcher.publishes(1)
    assert will.payload == b"with will"


def test_MQTT_3_1_2_8_will_published_after_will_delay(clients: Clients) -> None:
    """MQTT-3.1.2-8: with a Will Delay Interval of 1 s (and a longer Session Expiry) the Will is
    published once the delay has elapsed, not at the close."""
    watcher = _watch(clients, "will8/d")
    c = clients.connect(
        "will8d", properties={SEI: 30}, will=Will("will8/d", b"late", properties={DELAY: 1})
    )
    c.close()
    clients.advance(0.9)
    watcher.no_publish()
    clients.advance(0.2)
    [will] = watcher.publishes(1)
    assert will.payload == b"late"


def test_MQTT_3_1_2_8_will_published_when_session_ends_first(clients: Clients) -> None:
    """MQTT-3.1.2-8: the Will is published when the Will Delay Interval elapses *or the Session
    ends*, whichever is first: Will Delay 30 s, Session Expiry 1 s -> published after ~1 s."""
    watcher = _watch(clients, "will8/e")
    c = clients.connect(
        "will8e", properties={SEI: 1}, will=Will("will8/e", b"session over", properties={DELAY: 30})
    )
    c.close()
    clients.advance(0.9)
    watcher.no_publish()
    clients.advance(0.2)
    [will] = watcher.publishes(1)
    assert will.payload == b"session over"


def test_MQTT_3_1_2_10_will_removed_once_published(clients: Clients) -> None:
    """MQTT-3.1.2-10: once published (at the close, Will Delay 0) the Will Message is removed from
    the Session State: it is not published a second time when the Session ends (Session Expiry
    1 s)."""
    watcher = _watch(clients, "will10/a")
    c = clients.connect("will10a", properties={SEI: 1}, will=Will("will10/a", b"once"))
    c.close()
    [will] = watcher.publishes(1)
    assert will.payload == b"once"
    clients.advance(1.8)
    watcher.no_publish()


def test_MQTT_3_1_2_10_will_removed_on_normal_disconnect(clients: Clients) -> None:
    """MQTT-3.1.2-10: a DISCONNECT 0x00 removes the Will from the Session State: with Will Delay 5 s
    and Session Expiry 1 s, the end of the Session publishes nothing."""
    watcher = _watch(clients, "will10/b")
    c = clients.connect(
        "will10b", properties={SEI: 1}, will=Will("will10/b", b"no", properties={DELAY: 5})
    )
    c.disconnect(0x00)
    clients.advance(1.8)
    watcher.no_publish()
    clients.advance(5.0)
    watcher.no_publish()


def test_MQTT_3_1_2_14_will_retain_0_published_not_retained(clients: Clients) -> None:
    """MQTT-3.1.2-14: Will Retain 0: the Will is published as a non-retained message (RETAIN 0 for a
    Retain As Published subscriber; nothing retained for a later subscriber)."""
    watcher = _watch(clients, "will14/t")
    c = clients.connect("will14", will=Will("will14/t", b"not kept", retain=False))
    c.close()
    [will] = watcher.publishes(1)
    assert will.retain is False
    late = clients.connect("will14-late")
    late.sub("will14/t")
    late.no_publish()


def test_MQTT_3_1_2_15_will_retain_1_published_retained(clients: Clients) -> None:
    """MQTT-3.1.2-15: Will Retain 1: the Will is published as a retained message (RETAIN 1 for a
    Retain As Published subscriber, and delivered as retained to a later subscriber)."""
    watcher = _watch(clients, "will15/t")
    c = clients.connect("will15", will=Will("will15/t", b"kept", retain=True))
    c.close()
    [will] = watcher.publishes(1)
    assert will.retain is True
    late = clients.connect("will15-late")
    late.sub("will15/t")
    [retained] = late.publishes(1)
    assert retained.payload == b"kept" and retained.retain is True


def test_MQTT_3_1_3_9_no_will_if_reconnected_within_will_delay(clients: Clients) -> None:
    """MQTT-3.1.3-9: a new connection to the Session before the Will Delay Interval (2 s) has passed
    means the Will Message is not sent."""
    watcher = _watch(clients, "will39/t")
    c = clients.connect(
        "will39", properties={SEI: 30}, will=Will("will39/t", b"no", properties={DELAY: 2})
    )
    c.close()
    clients.advance(0.3)
    again = clients.connect("will39", clean_start=False, properties={SEI: 30})
    assert again.connack is not None and again.connack.session_present
    clients.advance(2.5)
    watcher.no_publish()


def test_MQTT_3_1_3_10_will_user_properties_keep_their_order(clients: Clients) -> None:
    """MQTT-3.1.3-10: the server keeps the order of the Will's User Properties when publishing it
    (repeated names included); the other Will properties are forwarded too."""
    watcher = _watch(clients, "will310/t")
    pairs = [("z", "1"), ("a", "2"), ("z", "3"), ("m", ""), ("a", "0")]
    properties: dict[int, Any] = {
        Prop.USER_PROPERTY: pairs,
        Prop.CONTENT_TYPE: "text/plain",
        Prop.RESPONSE_TOPIC: "will310/reply",
        Prop.CORRELATION_DATA: b"\x00\x01",
        Prop.PAYLOAD_FORMAT_INDICATOR: 1,
    }
    c = clients.connect("will310", will=Will("will310/t", b"ordered", properties=properties))
    c.close()
    [will] = watcher.publishes(1)
    assert will.properties[Prop.USER_PROPERTY] == pairs
    assert will.properties[Prop.CONTENT_TYPE] == "text/plain"
    assert will.properties[Prop.RESPONSE_TOPIC] == "will310/reply"
    assert will.properties[Prop.CORRELATION_DATA] == b"\x00\x01"
    assert will.properties[Prop.PAYLOAD_FORMAT_INDICATOR] == 1


def test_MQTT_3_1_3_11_will_topic_must_be_utf8(clients: Clients) -> None:
    """MQTT-3.1.3-11: the Will Topic is a UTF-8 Encoded String; invalid UTF-8 makes the CONNECT a
    Malformed Packet: refused (at most CONNACK 0x81) and closed."""
    c = clients.open()
    c.send_raw(raw_connect("will311", version=5, will_topic=b"w/\xff", will_payload=b"x"))
    c.expect_refused({MALFORMED})
