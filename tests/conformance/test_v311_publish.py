"""MQTT 3.1.1 section 3.3 (PUBLISH) and 4.5: flags, retained messages, topic names, delivery.

One test per normative statement, named after its id. Tests that also apply to MQTT 3.1 run for
protocol levels 3 and 4. Where the spec leaves the server a choice, the expected behaviour is
Mosquitto 2.0.11's.
"""

from __future__ import annotations

import pytest

from midge.codec.packets import (
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
)
from tests.rawclient import (
    Raw,
    RawClient,
    accepted,
    complete_sent_publishes,
    expect_closed_silently,
    mqtt_string,
    raw_packet,
    raw_publish,
    raw_subscribe,
    read_raw_packet,
    subscribe_collecting,
    subscriber,
)

BOTH = pytest.mark.parametrize("version", [3, 4], ids=["mqtt31", "mqtt311"])


def retained_after_subscribe(client: RawClient, topic_filter: str, qos: int) -> list[Publish]:
    """Subscribe and return the PUBLISHes that follow (retained ones), wherever the SUBACK falls."""
    _, before = subscribe_collecting(client, (topic_filter, qos))
    return [p for p in before + client.recv_all(0.5) if isinstance(p, Publish)]


# -- 3.3.1: fixed header flags -------------------------------------------------------------


@pytest.mark.parametrize("published_qos", [1, 2])
def test_MQTT_3_3_1_2_qos0_delivery_has_dup_0(raw: Raw, published_qos: int) -> None:
    """MQTT-3.3.1-2: DUP is 0 on every QoS 0 message: a QoS 1/2 message published with DUP 1 and
    delivered at QoS 0 (the subscription's maximum) goes out with first byte 0x30 exactly."""
    sub = subscriber(raw, "v311/dup0/t", 0)
    pub = accepted(raw, "v311-dup0-pub")
    pub.send_raw(raw_publish("v311/dup0/t", b"x", qos=published_qos, dup=True, packet_id=5))
    assert complete_sent_publishes(pub, 1, timeout=2) == [5]
    packet = read_raw_packet(sub, timeout=2)
    assert packet == raw_packet(0x30, mqtt_string("v311/dup0/t") + b"x")


@BOTH
@pytest.mark.parametrize("qos", [1, 2])
def test_MQTT_3_3_1_3_incoming_dup_not_propagated(raw: Raw, version: int, qos: int) -> None:
    """MQTT-3.3.1-3: the DUP flag of an incoming PUBLISH is not propagated: the subscriber's copy
    is a first delivery attempt, so DUP 0."""
    sub = subscriber(raw, "v311/dupfwd/t", 2, version)
    pub = accepted(raw, "v311-dupfwd-pub", version)
    pub.send_raw(raw_publish("v311/dupfwd/t", b"x", qos=qos, dup=True, packet_id=9))
    assert complete_sent_publishes(pub, 1, timeout=2) == [9]
    message = sub.expect(Publish, timeout=2)
    assert (message.qos, message.dup) == (qos, False)


@BOTH
def test_MQTT_3_3_1_4_qos_3_closes(raw: Raw, version: int) -> None:
    """MQTT-3.3.1-4: a PUBLISH with both QoS bits set makes the server close the connection; the
    message goes nowhere."""
    sub = subscriber(raw, "v311/qos3/#", 0, version)
    pub = accepted(raw, "v311-qos3-pub", version)
    pub.send_raw(raw_publish("v311/qos3/t", b"x", qos=3, packet_id=1))
    expect_closed_silently(pub)
    sub.expect_nothing(0.3)


@BOTH
@pytest.mark.parametrize(("published_qos", "sub_qos"), [(1, 2), (1, 0), (2, 1), (0, 2)])
def test_MQTT_3_3_1_5_retained_message_stored_with_qos(
    raw: Raw, version: int, published_qos: int, sub_qos: int
) -> None:
    """MQTT-3.3.1-5: a PUBLISH with RETAIN 1 is stored with its QoS and delivered to future
    subscribers at the lower of that QoS and the subscription's (MQTT-3.8.4-6)."""
    pub = accepted(raw, "v311-ret-pub", version)
    pub.publish("v311/retqos/t", b"stored", qos=published_qos, retain=True)
    later = accepted(raw, "v311-ret-later", version)
    got = retained_after_subscribe(later, "v311/retqos/t", sub_qos)
    assert [(p.payload, p.qos, p.retain) for p in got] == [
        (b"stored", min(published_qos, sub_qos), True)
    ]


@BOTH
def test_MQTT_3_3_1_6_retained_sent_on_new_subscription(raw: Raw, version: int) -> None:
    """MQTT-3.3.1-6: a new subscription receives the last retained message of every matching
    topic, and only of matching topics."""
    pub = accepted(raw, "v311-retmany-pub", version)
    pub.publish("v311/retmany/a/1", b"old a1", retain=True)
    pub.publish("v311/retmany/a/1", b"a1", retain=True)
    pub.publish("v311/retmany/a/2", b"a2", retain=True)
    pub.publish("v311/retmany/b/1", b"b1", retain=True)
    later = accepted(raw, "v311-retmany-later", version)
    got = retained_after_subscribe(later, "v311/retmany/a/+", 0)
    assert sorted((p.topic, p.payload) for p in got) == [
        ("v311/retmany/a/1", b"a1"),
        ("v311/retmany/a/2", b"a2"),
    ]


@BOTH
def test_MQTT_3_3_1_7_qos0_retained_replaces_previous(raw: Raw, version: int) -> None:
    """MQTT-3.3.1-7: a retained QoS 0 message discards the message retained before it on that
    topic; the new one is kept (Mosquitto keeps it, as the spec recommends)."""
    pub = accepted(raw, "v311-ret0-pub", version)
    pub.publish("v311/ret0/t", b"old qos1", qos=1, retain=True)
    pub.publish("v311/ret0/t", b"new qos0", qos=0, retain=True)
    later = accepted(raw, "v311-ret0-later", version)
    got = retained_after_subscribe(later, "v311/ret0/t", 2)
    assert [(p.payload, p.qos) for p in got] == [(b"new qos0", 0)]


@BOTH
def test_MQTT_3_3_1_8_retain_1_on_delivery_to_new_subscription(raw: Raw, version: int) -> None:
    """MQTT-3.3.1-8: a message sent because a new subscription was made has RETAIN 1 (first byte
    0x31 for QoS 0)."""
    pub = accepted(raw, "v311-ret8-pub", version)
    pub.publish("v311/ret8/t", b"r", retain=True)
    later = accepted(raw, "v311-ret8-later", version)
    later.send_raw(raw_subscribe(7, ("v311/ret8/t", 0)))
    packets = [read_raw_packet(later, timeout=2), read_raw_packet(later, timeout=2)]
    assert b"\x90\x03\x00\x07\x00" in packets
    publish = next(p for p in packets if p[0] >> 4 == 3)
    assert publish == raw_packet(0x31, mqtt_string("v311/ret8/t") + b"r")


@BOTH
def test_MQTT_3_3_1_9_retain_0_on_delivery_to_existing_subscription(raw: Raw, version: int) -> None:
    """MQTT-3.3.1-9: a message sent because it matches an established subscription has RETAIN 0,
    however the publisher set the flag."""
    sub = subscriber(raw, "v311/ret9/t", 1, version)
    pub = accepted(raw, "v311-ret9-pub", version)
    pub.publish("v311/ret9/t", b"retained", qos=1, retain=True)
    pub.publish("v311/ret9/t", b"plain", qos=1, retain=False)
    first, second = sub.expect(Publish, timeout=2), sub.expect(Publish, timeout=2)
    assert [(p.payload, p.retain) for p in (first, second)] == [
        (b"retained", False),
        (b"plain", False),
    ]


@BOTH
def test_MQTT_3_3_1_10_empty_retained_delivered_and_clears(raw: Raw, version: int) -> None:
    """MQTT-3.3.1-10: a retained PUBLISH with an empty payload is delivered as normal (RETAIN 0)
    to current subscribers and removes the retained message: future subscribers get none."""
    pub = accepted(raw, "v311-ret10-pub", version)
    pub.publish("v311/ret10/t", b"to be cleared", qos=1, retain=True)
    sub = accepted(raw, "v311-ret10-sub", version)
    assert [p.payload for p in retained_after_subscribe(sub, "v311/ret10/t", 1)] == [
        b"to be cleared"
    ]
    pub.publish("v311/ret10/t", b"", qos=1, retain=True)
    cleared = sub.expect(Publish, timeout=2)
    assert (cleared.topic, cleared.payload, cleared.retain) == ("v311/ret10/t", b"", False)
    sub.ack(cleared)
    later = accepted(raw, "v311-ret10-later", version)
    assert retained_after_subscribe(later, "v311/ret10/#", 1) == []


@BOTH
def test_MQTT_3_3_1_11_empty_retained_not_stored(raw: Raw, version: int) -> None:
    """MQTT-3.3.1-11: a zero-byte retained message is never stored as a retained message, also
    when nothing was retained on the topic before."""
    pub = accepted(raw, "v311-ret11-pub", version)
    pub.publish("v311/ret11/t", b"", qos=0, retain=True)
    pub.publish("v311/ret11/u", b"", qos=2, retain=True)
    later = accepted(raw, "v311-ret11-later", version)
    assert retained_after_subscribe(later, "v311/ret11/#", 2) == []


@BOTH
def test_MQTT_3_3_1_12_retain_0_leaves_retained_alone(raw: Raw, version: int) -> None:
    """MQTT-3.3.1-12: a PUBLISH with RETAIN 0 is not stored and neither removes nor replaces the
    retained message, even with an empty payload."""
    pub = accepted(raw, "v311-ret12-pub", version)
    pub.publish("v311/ret12/t", b"keep me", qos=1, retain=True)
    pub.publish("v311/ret12/t", b"not retained", qos=1, retain=False)
    pub.publish("v311/ret12/t", b"", qos=1, retain=False)
    pub.publish("v311/ret12/u", b"never retained", qos=1, retain=False)
    later = accepted(raw, "v311-ret12-later", version)
    got = retained_after_subscribe(later, "v311/ret12/#", 1)
    assert [(p.topic, p.payload) for p in got] == [("v311/ret12/t", b"keep me")]


# -- 3.3.2: topic name ---------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize(
    "body",
    [
        b"",  # nothing at all
        b"\x00",  # half a length
        b"\x00\x10v311/short",  # length longer than the packet
        mqtt_string(b"v311/\xc0\xaf/bad"),  # ill-formed UTF-8
    ],
    ids=["empty", "half-length", "overrun", "bad-utf8"],
)
def test_MQTT_3_3_2_1_topic_name_missing_or_invalid_closes(
    raw: Raw, version: int, body: bytes
) -> None:
    """MQTT-3.3.2-1: the Topic Name must be present as the first field of the variable header and
    be a UTF-8 encoded string; a PUBLISH without one (or with ill-formed UTF-8) is malformed and
    the server closes the connection."""
    sub = subscriber(raw, "#", 0, version)
    pub = accepted(raw, "v311-notopic", version)
    pub.send_raw(raw_packet(0x30, body))
    expect_closed_silently(pub)
    sub.expect_nothing(0.3)


@BOTH
@pytest.mark.parametrize("topic", ["v311/+", "v311/#", "+", "#", "v311/a+b", "v311/a#", "+/x"])
def test_MQTT_3_3_2_2_wildcard_in_topic_name_closes(raw: Raw, version: int, topic: str) -> None:
    """MQTT-3.3.2-2: the Topic Name of a PUBLISH must not contain wildcard characters (anywhere,
    MQTT-4.7.1-1); the server closes the connection and delivers nothing."""
    sub = subscriber(raw, "#", 0, version)
    pub = accepted(raw, "v311-wildpub", version)
    pub.send_raw(raw_publish(topic, b"x", qos=1, packet_id=3))
    expect_closed_silently(pub)
    sub.expect_nothing(0.3)


@BOTH
def test_MQTT_3_3_2_3_delivered_topic_is_the_published_name(raw: Raw, version: int) -> None:
    """MQTT-3.3.2-3: the Topic Name the server sends matches the subscription's filter: it is the
    name the message was published to, not the filter."""
    sub = subscriber(raw, "v311/name/+/x/#", 0, version)
    pub = accepted(raw, "v311-name-pub", version)
    for topic in ["v311/name/a/x", "v311/name/b/x/y/z", "v311/name/c/y"]:
        pub.publish(topic, b"")
    got = [p.topic for p in sub.recv_all(0.5) if isinstance(p, Publish)]
    assert got == ["v311/name/a/x", "v311/name/b/x/y/z"]


# -- 3.3.4 response, 3.3.5 actions ----------------------------------------------------------


@BOTH
def test_MQTT_3_3_4_1_response_by_qos(raw: Raw, version: int) -> None:
    """MQTT-3.3.4-1: the server answers a PUBLISH as its QoS requires: nothing for QoS 0, PUBACK
    for QoS 1, PUBREC for QoS 2 (then PUBCOMP for the PUBREL), each with the PUBLISH's Packet
    Identifier (MQTT-2.3.1-6)."""
    pub = accepted(raw, "v311-resp", version)
    pub.send_raw(raw_publish("v311/resp/t", b"0"))
    pub.expect_nothing(0.3)
    pub.send_raw(raw_publish("v311/resp/t", b"1", qos=1, packet_id=0x1234))
    assert read_raw_packet(pub, timeout=2) == b"\x40\x02\x12\x34"
    pub.send_raw(raw_publish("v311/resp/t", b"2", qos=2, packet_id=0xFFFF))
    assert read_raw_packet(pub, timeout=2) == b"\x50\x02\xff\xff"
    pub.send_raw(b"\x62\x02\xff\xff")
    assert read_raw_packet(pub, timeout=2) == b"\x70\x02\xff\xff"


@BOTH
@pytest.mark.parametrize("published_qos", [0, 1, 2])
def test_MQTT_3_3_5_1_overlapping_subscriptions_max_qos(
    raw: Raw, version: int, published_qos: int
) -> None:
    """MQTT-3.3.5-1: with overlapping subscriptions the server delivers the message respecting the
    maximum QoS of all the matching subscriptions (capped by the published QoS). It may add one
    copy per further matching subscription, never more."""
    sub = accepted(raw, "v311-overlap", version)
    pid = sub.next_packet_id()
    subscriptions = [
        Subscription("v311/overlap/#", 0),
        Subscription("v311/overlap/+/x", 1),
        Subscription("v311/overlap/a/x", 2),
        Subscription("v311/other", 2),
    ]
    sub.send(Subscribe(pid, subscriptions))
    assert sub.expect(Suback).reason_codes == [0, 1, 2, 2]
    pub = accepted(raw, "v311-overlap-pub", version)
    pub.publish("v311/overlap/a/x", b"m", qos=published_qos)
    copies = [p for p in sub.recv_all(0.5) if isinstance(p, Publish)]
    assert 1 <= len(copies) <= 3
    assert max(p.qos for p in copies) == published_qos


def test_MQTT_3_3_5_2_unauthorised_publish_acked_or_closed(raw: Raw) -> None:
    """MQTT-3.3.5-2: a PUBLISH the server does not authorise is either acknowledged as usual or
    answered by closing the connection. Clients may not publish to $SYS topics (Mosquitto denies
    them): the QoS 1 and QoS 2 flows complete normally and nothing is delivered."""
    sub = subscriber(raw, "$SYS/v311/#", 2)
    pub = accepted(raw, "v311-sys-pub")
    pub.send_raw(raw_publish("$SYS/v311/x", b"forged", qos=1, packet_id=1))
    assert pub.expect(Puback, timeout=2).packet_id == 1
    pub.send_raw(raw_publish("$SYS/v311/x", b"forged", qos=2, packet_id=2))
    assert pub.expect(Pubrec, timeout=2).packet_id == 2
    pub.send(Pubrel(2))
    assert pub.expect(Pubcomp, timeout=2).packet_id == 2
    sub.expect_nothing(0.3)


@BOTH
def test_MQTT_4_5_0_1_message_added_to_every_matching_session(raw: Raw, version: int) -> None:
    """MQTT-4.5.0-1: a message the server takes ownership of goes to the session of every client
    with a matching subscription: connected ones at once, a disconnected persistent one when it
    returns; clients without a matching subscription get nothing."""
    exact = subscriber(raw, "v311/fanout/t", 1, version)
    wild = accepted(raw, "v311-fanout-wild", version)
    wild.subscribe("v311/fanout/+", 2)
    other = accepted(raw, "v311-fanout-other", version)
    other.subscribe("v311/fanout/u", 2)
    away = accepted(raw, "v311-fanout-away", version, clean_start=False)
    away.subscribe("v311/#", 1)
    away.disconnect()
    pub = accepted(raw, "v311-fanout-pub", version)
    pub.publish("v311/fanout/t", b"everyone", qos=1)
    for client in (exact, wild):
        message = client.expect(Publish, timeout=2)
        assert (message.topic, message.payload, message.qos) == ("v311/fanout/t", b"everyone", 1)
    other.expect_nothing(0.3)
    back = accepted(raw, "v311-fanout-away", version, clean_start=False)
    assert back.expect(Publish, timeout=2).payload == b"everyone"
