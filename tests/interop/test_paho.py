"""paho-mqtt 2.x, a client nobody here wrote, against midge over MQTT 3.1, 3.1.1 and 5.0.

Each scenario runs for every protocol level paho speaks unless it only exists in MQTT 5 (shared
subscriptions, properties, DISCONNECT reason codes, session expiry). Publisher and subscriber are
separate connections, as in real deployments; the broker is a fresh in-process one per test.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from tests.interop.clients import (
    VERSION_ID,
    WAIT,
    PahoClient,
    properties,
    props_of,
    user_properties,
)

pytestmark = pytest.mark.interop

Paho = Callable[..., PahoClient]

ALL_VERSIONS = pytest.mark.parametrize("version", [3, 4, 5], ids=VERSION_ID.get)

#: Every byte value, so that a payload that is not text survives the trip unchanged.
BINARY = bytes(range(256))


# -- QoS -------------------------------------------------------------------------------------


@ALL_VERSIONS
def test_qos_each_publish_qos_to_each_subscription_qos(paho: Paho, version: int) -> None:
    """Delivered QoS is min(published, granted) (MQTT-3.8.4-6 / v5 MQTT-3.8.4-8 and 4.3), payload
    unchanged byte for byte (MQTT-3.3.3 / 4.1)."""
    sub = paho("sub", version)
    for qos in (0, 1, 2):
        assert sub.subscribe(f"q/{qos}", qos) == [qos]
    publisher = paho("pub", version)
    for sub_qos in (0, 1, 2):
        for pub_qos in (0, 1, 2):
            publisher.publish(f"q/{sub_qos}", b"%d" % pub_qos + BINARY, pub_qos)

    got = sub.collect(9)
    received = sorted((m.topic, m.payload[:1], m.qos) for m in got)
    expected = sorted((f"q/{s}", b"%d" % p, min(p, s)) for s in (0, 1, 2) for p in (0, 1, 2))
    assert received == expected
    assert all(m.payload[1:] == BINARY for m in got)
    assert not any(m.retain for m in got)
    sub.expect_nothing(0.3)


@ALL_VERSIONS
def test_qos2_exactly_once_with_two_subscribers(paho: Paho, version: int) -> None:
    """Each subscriber gets its own copy once; QoS 2 on both ends (MQTT 4.3.3)."""
    first = paho("first", version)
    second = paho("second", version)
    first.subscribe("x/y", 2)
    second.subscribe("x/+", 2)
    publisher = paho("pub", version)
    for i in range(5):
        publisher.publish("x/y", b"m%d" % i, 2)
    for client in (first, second):
        got = client.collect(5)
        assert [bytes(m.payload) for m in got] == [b"m%d" % i for i in range(5)]
        assert all(m.qos == 2 for m in got)
        client.expect_nothing(0.3)


# -- retained messages -----------------------------------------------------------------------


@ALL_VERSIONS
def test_retained_set_received_on_subscribe_and_cleared(paho: Paho, version: int) -> None:
    """A retained message goes to later subscribers with RETAIN 1 (MQTT-3.3.1-8 / v5 -9), to
    existing ones with RETAIN 0 (MQTT-3.3.1-9 / v5 MQTT-3.3.1-12); an empty retained payload is
    forwarded normally and removes it (MQTT-3.3.1-10, -11 / v5 MQTT-3.3.1-6, -7)."""
    live = paho("live", version)
    live.subscribe("r/#", 2)
    publisher = paho("pub", version)

    publisher.publish("r/a", b"one" + BINARY, qos=1, retain=True)
    message = live.expect()
    assert (message.topic, message.payload, message.qos, message.retain) == (
        "r/a",
        b"one" + BINARY,
        1,
        False,
    )

    late = paho("late", version)
    late.subscribe("r/#", 2)
    message = late.expect()
    assert (message.topic, message.payload, message.qos, message.retain) == (
        "r/a",
        b"one" + BINARY,
        1,
        True,
    )
    late.expect_nothing(0.3)

    downgraded = paho("low", version)
    downgraded.subscribe("r/a", 0)
    message = downgraded.expect()
    assert (message.payload, message.qos, message.retain) == (b"one" + BINARY, 0, True)

    publisher.publish("r/a", b"two", qos=1, retain=True)
    publisher.publish("r/a", b"", qos=1, retain=True)
    got = live.collect(2)
    assert [(m.payload, m.retain) for m in got] == [(b"two", False), (b"", False)]

    later = paho("later", version)
    later.subscribe("r/#", 1)
    later.expect_nothing(0.5)


# -- wildcards -------------------------------------------------------------------------------


@ALL_VERSIONS
def test_wildcards(paho: Paho, version: int) -> None:
    """``+`` matches exactly one level (possibly empty), ``#`` the parent and every level below
    (MQTT-4.7.1-2, -3); wildcards at the start do not match ``$`` topics (MQTT-4.7.2-1)."""
    filters = ["sport/+/player1", "sport/#", "sport/+", "+", "+/+", "#", "$x/#"]
    topics = ["sport/tennis/player1", "sport/tennis/player2", "sport", "sport/", "/finance"]
    topics += ["other", "$x/y"]
    expected = {
        "sport/+/player1": {"sport/tennis/player1"},
        "sport/#": {"sport/tennis/player1", "sport/tennis/player2", "sport", "sport/"},
        "sport/+": {"sport/"},
        "+": {"sport", "other"},
        "+/+": {"sport/", "/finance"},
        "#": set(topics) - {"$x/y"},
        "$x/#": {"$x/y"},
    }
    subscribers = {}
    for i, topic_filter in enumerate(filters):
        client = paho(f"w{i}", version)
        assert client.subscribe(topic_filter, 1) == [1]
        subscribers[topic_filter] = client
    publisher = paho("pub", version)
    for topic in topics:
        publisher.publish(topic, topic.encode(), 1)
    for topic_filter, client in subscribers.items():
        got = client.collect(len(expected[topic_filter]))
        assert {m.topic for m in got} == expected[topic_filter], topic_filter
        assert all(m.payload == m.topic.encode() for m in got)
        client.expect_nothing(0.2)


# -- wills -----------------------------------------------------------------------------------


def _watcher(paho: Paho, version: int) -> PahoClient:
    watcher = paho("watcher", version)
    assert watcher.subscribe("will/#", 2) == [2]
    return watcher


@ALL_VERSIONS
def test_will_published_when_connection_drops(paho: Paho, version: int) -> None:
    """TCP closed without DISCONNECT -> the will is published (MQTT-3.1.2-8 / v5 MQTT-3.1.2-8)."""
    watcher = _watcher(paho, version)
    client = paho("willer", version, will=("will/drop", b"gone" + BINARY, 1, False))
    client.drop()
    message = watcher.expect()
    assert (message.topic, message.payload, message.qos, message.retain) == (
        "will/drop",
        b"gone" + BINARY,
        1,
        False,
    )
    watcher.expect_nothing(0.3)


@ALL_VERSIONS
def test_will_published_when_connection_reset(paho: Paho, version: int) -> None:
    """A TCP reset (RST) is an I/O error: the will is published too."""
    watcher = _watcher(paho, version)
    client = paho("willer", version, will=("will/reset", b"reset", 2, False))
    client.reset()
    message = watcher.expect()
    assert (message.topic, message.payload, message.qos) == ("will/reset", b"reset", 2)


@ALL_VERSIONS
def test_will_retained(paho: Paho, version: int) -> None:
    """A will with Will Retain 1 is published as a retained message (MQTT-3.1.2-17 / v5 -15)."""
    watcher = _watcher(paho, version)
    client = paho("willer", version, will=("will/kept", b"last words", 1, True))
    client.drop()
    message = watcher.expect()  # published: from now on it is retained
    assert (message.topic, message.payload, message.retain) == ("will/kept", b"last words", False)
    late = paho("late", version)
    late.subscribe("will/#", 1)
    message = late.expect()
    assert (message.topic, message.payload, message.retain) == ("will/kept", b"last words", True)


@ALL_VERSIONS
def test_no_will_after_normal_disconnect(paho: Paho, version: int) -> None:
    """DISCONNECT (v5: reason 0) deletes the will (MQTT-3.1.2-10 / v5 MQTT-3.1.2-10)."""
    watcher = _watcher(paho, version)
    client = paho("willer", version, will=("will/no", b"should not appear", 1, False))
    client.disconnect()
    time.sleep(0.3)
    # A fence: once it arrives, a will sent on closing would have arrived before it.
    paho("fence", version).publish("will/fence", b"fence", 1)
    message = watcher.expect()
    assert (message.topic, message.payload) == ("will/fence", b"fence")
    watcher.expect_nothing(0.3)


def test_v5_disconnect_with_will_message(paho: Paho) -> None:
    """v5 DISCONNECT with reason 0x04 publishes the will (MQTT-3.14.4-3 does not delete it; 3.14.2.1
    table: 0x04 Disconnect with Will Message), with its properties (MQTT-3.1.3-9 ... -12 pass)."""
    watcher = _watcher(paho, 5)
    will_props = properties(
        PacketTypes.WILLMESSAGE,
        ContentType="text/plain",
        UserProperty=[("why", "asked"), ("n", "1")],
        ResponseTopic="will/reply",
        CorrelationData=b"\x00corr",
    )
    client = paho(
        "willer", 5, will=("will/asked", b"asked for it", 1, False), will_properties=will_props
    )
    client.disconnect(ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
    message = watcher.expect()
    assert (message.topic, message.payload, message.qos) == ("will/asked", b"asked for it", 1)
    assert props_of(message).ContentType == "text/plain"
    assert user_properties(message) == [("why", "asked"), ("n", "1")]
    assert props_of(message).ResponseTopic == "will/reply"
    assert props_of(message).CorrelationData == b"\x00corr"


# -- persistent sessions ---------------------------------------------------------------------


def _durable(paho: Paho, version: int, client_id: str, clean: bool) -> PahoClient:
    """v3: Clean Session; v5: Clean Start and a 5-minute Session Expiry Interval."""
    return paho(
        client_id, version, connect=False, clean=clean, session_expiry=300 if version == 5 else None
    )


@ALL_VERSIONS
def test_persistent_session_queues_qos1_and_qos2_while_offline(paho: Paho, version: int) -> None:
    """Subscriptions and QoS 1/2 messages survive the disconnection (MQTT-3.1.2-4, -5 / v5
    MQTT-3.1.2-4, 4.1); the reconnection gets Session Present 1 (MQTT-3.2.2-2 / v5 MQTT-3.2.2-3)."""
    first = _durable(paho, version, "durable", clean=version == 5)
    assert first.connect() is False
    assert first.subscribe("s/1", 1) == [1]
    assert first.subscribe("s/2", 2) == [2]
    first.disconnect()

    publisher = paho("pub", version)
    sent = [("s/1", b"a", 1), ("s/2", b"b", 2), ("s/2", b"c", 1), ("s/1", b"d", 2)]
    sent += [("s/1", b"e", 1), ("s/2", b"f", 2)]
    for topic, payload, qos in sent:
        publisher.publish(topic, payload, qos)

    again = _durable(paho, version, "durable", clean=False)
    # MQTT 3.1 has no Session Present flag: that CONNACK byte is reserved (0).
    assert again.connect() is (version != 3)
    got = again.collect(len(sent))
    delivered = {bytes(m.payload): (m.topic, m.qos) for m in got}
    assert delivered == {
        b"a": ("s/1", 1),
        b"b": ("s/2", 2),
        b"c": ("s/2", 1),
        b"d": ("s/1", 1),
        b"e": ("s/1", 1),
        b"f": ("s/2", 2),
    }
    # Same topic, same QoS: kept in the order published (MQTT-4.6.0-6). Across QoS levels the
    # specification does not require an order.
    order = [bytes(m.payload) for m in got]
    assert order.index(b"a") < order.index(b"e")
    assert order.index(b"b") < order.index(b"f")
    again.expect_nothing(0.3)
    again.disconnect()

    # A clean session discards the old one: no Session Present, no subscriptions.
    clean = _durable(paho, version, "durable", clean=True)
    assert clean.connect() is False
    publisher.publish("s/1", b"after clean", 1)
    clean.expect_nothing(0.5)


def test_v5_session_expiry_zero_ends_session_at_disconnect(paho: Paho) -> None:
    """Without Session Expiry Interval the session ends with the connection (v5 3.1.2.11.2)."""
    first = paho("brief", 5, clean=False)
    first.subscribe("e/t", 1)
    first.disconnect()
    paho("pub", 5).publish("e/t", b"lost", 1)
    again = paho("brief", 5, connect=False, clean=False)
    assert again.connect() is False
    again.expect_nothing(0.5)


# -- MQTT 5 shared subscriptions -------------------------------------------------------------


def test_v5_shared_subscription_splits_messages(paho: Paho) -> None:
    """``$share/g/t``: each message to exactly one member of the group (MQTT 4.8.2); another group
    and a plain subscription each get every message."""
    members = [paho("member-a", 5), paho("member-b", 5)]
    for member in members:
        assert member.subscribe("$share/g/sh/t", 1) == [1]
    other_group = paho("other-group", 5)
    other_group.subscribe("$share/h/sh/+", 1)
    plain = paho("plain", 5)
    plain.subscribe("sh/t", 1)

    publisher = paho("pub", 5)
    count = 40
    infos = [publisher.publish("sh/t", b"%d" % i, 1, wait=False) for i in range(count)]
    for info in infos:
        publisher.wait_published(info)

    everything = {b"%d" % i for i in range(count)}
    assert {bytes(m.payload) for m in plain.collect(count)} == everything
    assert {bytes(m.payload) for m in other_group.collect(count)} == everything
    deadline = time.monotonic() + WAIT
    shares: list[list[bytes]] = [[], []]
    while sum(map(len, shares)) < count and time.monotonic() < deadline:
        for member, share in zip(members, shares, strict=True):
            share.extend(bytes(m.payload) for m in member.drain(0.05))
    for member, share in zip(members, shares, strict=True):
        share.extend(bytes(m.payload) for m in member.drain(0.3))
    a, b = shares
    assert len(a) + len(b) == count, (a, b)
    assert set(a) | set(b) == everything
    assert not set(a) & set(b)
    assert a and b, "both members of the group get some of the messages"


# -- MQTT 5 properties -----------------------------------------------------------------------


def test_v5_properties_passed_through(paho: Paho) -> None:
    """User properties in order (MQTT-3.3.2-17, -18), content type (MQTT-3.3.2-20), response topic
    and correlation data (MQTT-3.3.2-15, -16), payload format (MQTT-3.3.2-4), message expiry
    minus the time waited (MQTT-3.3.2-6); a v3.1.1 subscriber gets the payload alone."""
    sub5 = paho("sub5", 5)
    sub5.subscribe("req/#", 1)
    sub4 = paho("sub4", 4)
    sub4.subscribe("req/#", 1)
    requester = paho("requester", 5)
    requester.subscribe("resp/requester", 1)

    sent = [("k", "v1"), ("a", "b"), ("k", "v2"), ("ünï", "cödé")]
    props = properties(
        UserProperty=sent,
        ContentType="application/json",
        ResponseTopic="resp/requester",
        CorrelationData=b"\x00\x01corr\xff",
        PayloadFormatIndicator=1,
        MessageExpiryInterval=3600,
    )
    requester.publish("req/x", b'{"a": 1}', 1, properties=props)

    message = sub5.expect()
    assert message.payload == b'{"a": 1}'
    assert user_properties(message) == sent
    assert props_of(message).ContentType == "application/json"
    assert props_of(message).ResponseTopic == "resp/requester"
    assert props_of(message).CorrelationData == b"\x00\x01corr\xff"
    assert props_of(message).PayloadFormatIndicator == 1
    assert 3590 <= props_of(message).MessageExpiryInterval <= 3600

    plain = sub4.expect()
    assert (plain.topic, plain.payload, plain.qos) == ("req/x", b'{"a": 1}', 1)

    # Request/response as MQTT 5 means it: answer on the response topic with the correlation data.
    reply = properties(CorrelationData=props_of(message).CorrelationData)
    sub5.publish(props_of(message).ResponseTopic, b"answer", 1, properties=reply)
    answer = requester.expect()
    assert (answer.topic, answer.payload) == ("resp/requester", b"answer")
    assert props_of(answer).CorrelationData == b"\x00\x01corr\xff"


# -- size and volume -------------------------------------------------------------------------


@ALL_VERSIONS
@pytest.mark.parametrize("size", [70_000, 2_200_000], ids=["70KB", "2.2MB"])
def test_large_message(paho: Paho, version: int, size: int) -> None:
    """More than 64 KiB (3-byte Remaining Length) and more than 2 MiB (4 bytes) arrive intact."""
    payload = random.Random(size).randbytes(size)
    sub = paho("sub", version)
    sub.subscribe("big", 1)
    publisher = paho("pub", version)
    publisher.publish("big", payload, 1)
    message = sub.expect(timeout=15)
    assert len(message.payload) == size
    assert message.payload == payload


@ALL_VERSIONS
def test_thousand_messages_in_order_at_qos1(paho: Paho, version: int) -> None:
    """Ordered delivery of one publisher's QoS 1 messages on one topic (MQTT 4.6)."""
    count = 1000
    sub = paho("sub", version)
    sub.subscribe("seq", 1)
    publisher = paho("pub", version)
    infos = [publisher.publish("seq", b"%d" % i, 1, wait=False) for i in range(count)]
    got = sub.collect(count, timeout=30)
    publisher.wait_published(infos[-1], timeout=30)
    assert [bytes(m.payload) for m in got] == [b"%d" % i for i in range(count)]
    assert all(m.qos == 1 for m in got)


def test_qos0_burst_of_large_messages_reaches_a_reading_subscriber(paho: Paho) -> None:
    """Issue 11: 8 messages of 4 MB at QoS 0, back to back, to a subscriber that keeps reading:
    all 8 arrive, in order, as with Mosquitto. While its socket is backed up they wait in its
    session (bounded by max_queued_messages / max_queued_bytes, none of them reached here)
    rather than being dropped as they once were beyond an 8 MiB write buffer (which lost 3 to 7
    of them to a subscriber slower than the publisher)."""
    count, size = 8, 4_000_000
    sub = paho("sub", 4)
    sub.subscribe("burst", 0)
    handle = sub.client.on_message
    assert handle is not None

    def busy(client: Any, userdata: Any, message: Any) -> None:
        time.sleep(0.1)  # each message takes a moment to handle: the burst comes faster
        handle(client, userdata, message)

    sub.client.on_message = busy
    publisher = paho("pub", 4)
    payloads = [bytes([i]) * size for i in range(count)]
    infos = [publisher.publish("burst", p, 0, wait=False) for p in payloads]
    got = sub.collect(count, timeout=20)
    publisher.wait_published(infos[-1], timeout=20)
    assert [m.payload[:1] for m in got] == [p[:1] for p in payloads]
    assert all(len(m.payload) == size for m in got)
    sub.expect_nothing(0.2)
