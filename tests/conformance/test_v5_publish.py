"""MQTT 5.0 sections 3.3 (PUBLISH) to 3.7 (PUBCOMP): flags, retained messages, properties,
Topic Aliases, Subscription Identifiers in deliveries, and the acknowledgement Reason Codes."""

from __future__ import annotations

from typing import Any

import pytest

from midge.codec.packets import Puback, Pubcomp, Publish, Pubrec, Pubrel, Subscription
from midge.codec.properties import Prop
from tests.conformance.test_v5_support import (
    MALFORMED,
    PROTOCOL_ERROR,
    PUBACK_REASONS,
    PUBCOMP_REASONS,
    PUBREC_REASONS,
    PUBREL_REASONS,
    Clients,
    RawClient,
    frames,
    p_str,
    props,
    raw_ack,
    tap,
)
from tests.rawclient import raw_publish

SEI = Prop.SESSION_EXPIRY_INTERVAL
ALIAS = Prop.TOPIC_ALIAS
SUB_ID = Prop.SUBSCRIPTION_IDENTIFIER


def _pair(
    clients: Clients, name: str, *subs: Subscription | str, qos: int = 2
) -> tuple[RawClient, RawClient]:
    """A subscriber (subscribed to ``subs``) and a publisher."""
    sub = clients.connect(f"{name}-sub")
    sub.sub(*subs, qos=qos)
    pub = clients.connect(f"{name}-pub")
    return sub, pub


# -- 3.3.1 Fixed header: DUP, QoS, RETAIN -------------------------------------------------------


def test_MQTT_3_3_1_1_dup_set_on_redelivery(clients: Clients) -> None:
    """MQTT-3.3.1-1: when the server re-delivers a PUBLISH (unacknowledged QoS 1, resumed Session)
    it sets DUP 1; the first delivery had DUP 0 and the same Packet Identifier."""
    sub = clients.connect("dup1", clean_start=False, properties={SEI: 60})
    sub.sub("dup1/t", qos=1)
    pub = clients.connect("dup1-pub")
    pub.pub("dup1/t", b"again", qos=1)
    [first] = sub.publishes(1)
    assert first.dup is False
    sub.close()
    again = clients.connect("dup1", clean_start=False, properties={SEI: 60})
    [second] = again.publishes(1)
    assert second.dup is True
    assert (second.packet_id, second.payload) == (first.packet_id, b"again")


def test_MQTT_3_3_1_2_dup_0_for_qos0(clients: Clients) -> None:
    """MQTT-3.3.1-2: every QoS 0 PUBLISH has DUP 0: a QoS 1 message published with DUP 1 and
    delivered on a QoS 0 subscription arrives with DUP 0 (checked on the wire)."""
    sub = clients.open()
    wire = tap(sub)
    sub.connect5("dup2-sub")
    sub.sub("dup2/t", qos=0)
    pub = clients.connect("dup2-pub")
    pub.send(Publish("dup2/t", b"x", 1, dup=True, packet_id=9))
    pub.expect(Puback)
    pub.pub("dup2/t", b"y", qos=0)
    got = sub.publishes(2)
    assert [(p.qos, p.dup) for p in got] == [(0, False), (0, False)]
    sub.ping()
    assert all(f[0] & 0x08 == 0 for f in frames(wire) if f[0] >> 4 == 3)


def test_MQTT_3_3_1_3_outgoing_dup_independent_of_incoming(clients: Clients) -> None:
    """MQTT-3.3.1-3: the DUP flag is not propagated: a PUBLISH received with DUP 1 (QoS 1 and 2) is
    forwarded with DUP 0, its first transmission to the subscriber."""
    sub, pub = _pair(clients, "dup3", "dup3/t")
    pub.send(Publish("dup3/t", b"1", 1, dup=True, packet_id=5))
    pub.expect(Puback)
    pub.send(Publish("dup3/t", b"2", 2, dup=True, packet_id=6))
    pub.expect(Pubrec)
    pub.send(Pubrel(6))
    pub.expect(Pubcomp)
    got = sub.publishes(2)
    assert [(p.payload, p.dup) for p in got] == [(b"1", False), (b"2", False)]


def test_MQTT_3_3_1_4_qos_3_is_malformed(clients: Clients) -> None:
    """MQTT-3.3.1-4: a PUBLISH must not have both QoS bits set; one that does is a Malformed Packet:
    DISCONNECT 0x81, close."""
    c = clients.connect("qos3")
    c.send_raw(raw_publish("qos3/t", b"x", qos=3, packet_id=1, version=5))
    c.expect_disconnect(MALFORMED)


def test_MQTT_3_3_1_5_retained_message_replaced(clients: Clients) -> None:
    """MQTT-3.3.1-5: a RETAIN 1 PUBLISH replaces the topic's retained message and is stored (with
    its QoS): a new subscriber gets only the latest one."""
    pub = clients.connect("ret5-pub")
    pub.pub("ret5/t", b"first", qos=1, retain=True)
    pub.pub("ret5/t", b"second", qos=1, retain=True)
    sub = clients.connect("ret5-sub")
    sub.sub("ret5/t", qos=2)
    [msg] = sub.publishes(1)
    assert (msg.payload, msg.retain, msg.qos) == (b"second", True, 1)
    sub.no_publish()


def test_MQTT_3_3_1_6_empty_retained_message_clears(clients: Clients) -> None:
    """MQTT-3.3.1-6: a retained PUBLISH with an empty payload is delivered normally to current
    subscribers, and removes the retained message: future subscribers get none."""
    pub = clients.connect("ret6-pub")
    pub.pub("ret6/t", b"state", qos=1, retain=True)
    current = clients.connect("ret6-cur")
    current.sub("ret6/t")
    [msg] = current.publishes(1)
    assert msg.payload == b"state"
    pub.pub("ret6/t", b"", qos=1, retain=True)
    [msg] = current.publishes(1)
    assert msg.payload == b""
    late = clients.connect("ret6-late")
    late.sub("ret6/t")
    late.no_publish()


def test_MQTT_3_3_1_7_empty_retained_message_not_stored(clients: Clients) -> None:
    """MQTT-3.3.1-7: a retained message with an empty payload is never stored as retained."""
    pub = clients.connect("ret7-pub")
    pub.pub("ret7/t", b"", qos=1, retain=True)
    sub = clients.connect("ret7-sub")
    sub.sub("ret7/#")
    sub.no_publish()


def test_MQTT_3_3_1_8_retain_0_neither_stores_nor_removes(clients: Clients) -> None:
    """MQTT-3.3.1-8: a RETAIN 0 PUBLISH is not stored as retained and does not remove or replace
    the existing retained message (not even with an empty payload)."""
    pub = clients.connect("ret8-pub")
    pub.pub("ret8/t", b"kept", qos=1, retain=True)
    pub.pub("ret8/t", b"transient", qos=1, retain=False)
    pub.pub("ret8/t", b"", qos=1, retain=False)
    pub.pub("ret8/other", b"never retained", qos=1, retain=False)
    sub = clients.connect("ret8-sub")
    sub.sub("ret8/#")
    [msg] = sub.publishes(1)
    assert (msg.topic, msg.payload, msg.retain) == ("ret8/t", b"kept", True)
    sub.no_publish()


def test_MQTT_3_3_1_9_retain_handling_0_sends_retained(clients: Clients) -> None:
    """MQTT-3.3.1-9: Retain Handling 0: the retained messages matching the filter are sent at
    subscribe time, with RETAIN 1, each time the subscription is made (also when it exists)."""
    pub = clients.connect("rh0-pub")
    pub.pub("rh0/a", b"A", qos=1, retain=True)
    pub.pub("rh0/b", b"B", qos=1, retain=True)
    sub = clients.connect("rh0-sub")
    sub.sub(Subscription("rh0/+", 1, retain_handling=0))
    got = sub.publishes(2)
    assert sorted((p.topic, p.payload, p.retain) for p in got) == [
        ("rh0/a", b"A", True),
        ("rh0/b", b"B", True),
    ]
    sub.sub(Subscription("rh0/+", 1, retain_handling=0))
    assert len(sub.publishes(2)) == 2


def test_MQTT_3_3_1_10_retain_handling_1_only_for_new_subscription(clients: Clients) -> None:
    """MQTT-3.3.1-10: Retain Handling 1: retained messages are sent if the subscription did not
    exist, and not when it already existed."""
    pub = clients.connect("rh1-pub")
    pub.pub("rh1/t", b"R", qos=1, retain=True)
    sub = clients.connect("rh1-sub")
    sub.sub(Subscription("rh1/t", 1, retain_handling=1))
    [msg] = sub.publishes(1)
    assert msg.payload == b"R" and msg.retain
    sub.sub(Subscription("rh1/t", 1, retain_handling=1))
    sub.no_publish()


def test_MQTT_3_3_1_11_retain_handling_2_never_sends_retained(clients: Clients) -> None:
    """MQTT-3.3.1-11: Retain Handling 2: no retained messages at subscribe time (new or existing
    subscription); later publications are delivered as usual."""
    pub = clients.connect("rh2-pub")
    pub.pub("rh2/t", b"R", qos=1, retain=True)
    sub = clients.connect("rh2-sub")
    sub.sub(Subscription("rh2/t", 1, retain_handling=2))
    sub.no_publish()
    sub.sub(Subscription("rh2/t", 1, retain_handling=2))
    sub.no_publish()
    pub.pub("rh2/t", b"live", qos=1)
    [msg] = sub.publishes(1)
    assert msg.payload == b"live"


def test_MQTT_3_3_1_12_retain_as_published_0_clears_retain(clients: Clients) -> None:
    """MQTT-3.3.1-12: Retain As Published 0: a message forwarded from a live publication has RETAIN
    0 even though it was published with RETAIN 1."""
    sub, pub = _pair(clients, "rap0", Subscription("rap0/t", 1, retain_as_published=False))
    pub.pub("rap0/t", b"r", qos=1, retain=True)
    [msg] = sub.publishes(1)
    assert msg.retain is False


def test_MQTT_3_3_1_13_retain_as_published_1_keeps_retain(clients: Clients) -> None:
    """MQTT-3.3.1-13: Retain As Published 1: the forwarded RETAIN flag equals the published one."""
    sub, pub = _pair(clients, "rap1", Subscription("rap1/t", 1, retain_as_published=True))
    pub.pub("rap1/t", b"r", qos=1, retain=True)
    pub.pub("rap1/t", b"n", qos=1, retain=False)
    got = sub.publishes(2)
    assert [(p.payload, p.retain) for p in got] == [(b"r", True), (b"n", False)]


# -- 3.3.2 Variable header: Topic Name and properties -------------------------------------------


def test_MQTT_3_3_2_1_topic_name_must_be_utf8(clients: Clients) -> None:
    """MQTT-3.3.2-1: the Topic Name is a UTF-8 Encoded String; a lone continuation byte makes the
    PUBLISH malformed: DISCONNECT 0x81, close."""
    c = clients.connect("tn1")
    c.send_raw(raw_publish(b"tn1/\x80", b"x", version=5))
    c.expect_disconnect(MALFORMED)


@pytest.mark.parametrize("topic", ["tn2/+", "tn2/#", "+", "#", "a/+/b"])
def test_MQTT_3_3_2_2_topic_name_without_wildcards(clients: Clients, topic: str) -> None:
    """MQTT-3.3.2-2: the Topic Name must not contain wildcards; a PUBLISH with one is refused with
    DISCONNECT (0x82 Protocol Error as Mosquitto, or 0x90 Topic Name invalid) and closed, and is
    not delivered."""
    watcher = clients.connect("tn2-watch")
    watcher.sub("#")
    c = clients.connect("tn2")
    c.send_raw(raw_publish(topic, b"x", version=5))
    c.expect_disconnect({MALFORMED, PROTOCOL_ERROR, 0x90})
    watcher.no_publish(0.3)


def test_MQTT_3_3_2_3_delivered_topic_matches_the_filter(clients: Clients) -> None:
    """MQTT-3.3.2-3: the Topic Name of a PUBLISH sent to a subscriber matches the subscription's
    Topic Filter: of several publications only the matching ones arrive, under their own names."""
    sub, pub = _pair(clients, "tn3", "tn3/+/x/#")
    topics = ["tn3/a/x", "tn3/b/x/y/z", "tn3/a/y", "tn3/x", "tn3/a/b/x", "tn3//x/"]
    for topic in topics:
        pub.pub(topic, topic.encode(), qos=1)
    got = sub.publishes(3)
    assert [p.topic for p in got] == ["tn3/a/x", "tn3/b/x/y/z", "tn3//x/"]
    assert all(p.payload == p.topic.encode() for p in got)
    sub.no_publish()


@pytest.mark.parametrize("indicator", [0, 1])
def test_MQTT_3_3_2_4_payload_format_indicator_unaltered(clients: Clients, indicator: int) -> None:
    """MQTT-3.3.2-4: the Payload Format Indicator reaches every subscriber unaltered."""
    a, pub = _pair(clients, f"pfi{indicator}", "pfi/t")
    b = clients.connect(f"pfi{indicator}-b")
    b.sub("pfi/#", qos=0)
    pub.pub("pfi/t", "héllo".encode(), qos=1, properties={Prop.PAYLOAD_FORMAT_INDICATOR: indicator})
    for sub in (a, b):
        [msg] = sub.publishes(1)
        assert msg.properties.get(Prop.PAYLOAD_FORMAT_INDICATOR) == indicator


def test_MQTT_3_3_2_5_expired_message_not_delivered(clients: Clients) -> None:
    """MQTT-3.3.2-5: a message whose Message Expiry Interval (1 s) passes before onward delivery to
    an offline subscriber starts is deleted for it; an unexpired one is still delivered. Just
    before the interval has passed (0.9 s) an offline subscriber still gets both."""
    early = clients.connect("exp5-early", clean_start=False, properties={SEI: 60})
    early.sub("exp5/t", qos=1)
    early.disconnect()
    sub = clients.connect("exp5", clean_start=False, properties={SEI: 60})
    sub.sub("exp5/t", qos=1)
    sub.disconnect()
    pub = clients.connect("exp5-pub")
    pub.pub("exp5/t", b"short", qos=1, properties={Prop.MESSAGE_EXPIRY_INTERVAL: 1})
    pub.pub("exp5/t", b"long", qos=1, properties={Prop.MESSAGE_EXPIRY_INTERVAL: 60})
    clients.advance(0.9)
    before = clients.connect("exp5-early", clean_start=False, properties={SEI: 60})
    assert [m.payload for m in before.publishes(2)] == [b"short", b"long"]
    clients.advance(0.2)  # 1.1 s after the publish: "short" has expired
    again = clients.connect("exp5", clean_start=False, properties={SEI: 60})
    [msg] = again.publishes(1)
    assert msg.payload == b"long"
    again.no_publish()


def test_MQTT_3_3_2_6_expiry_interval_reduced_by_waiting_time(clients: Clients) -> None:
    """MQTT-3.3.2-6: the Message Expiry Interval sent to a Client is the received value minus the
    time the message waited in the server: 10 s, delivered at once (<= 10; exactly 10 on the
    manual clock) and after waiting 2.1 s for an offline subscriber (< 10, > 0: 7.9 s left,
    sent rounded up as 8)."""
    live, pub = _pair(clients, "exp6", "exp6/t")
    offline = clients.connect("exp6-off", clean_start=False, properties={SEI: 60})
    offline.sub("exp6/t", qos=1)
    offline.disconnect()
    pub.pub("exp6/t", b"x", qos=1, properties={Prop.MESSAGE_EXPIRY_INTERVAL: 10})
    [msg] = live.publishes(1)
    assert 0 < msg.properties[Prop.MESSAGE_EXPIRY_INTERVAL] <= 10
    assert msg.properties[Prop.MESSAGE_EXPIRY_INTERVAL] == 10
    clients.advance(2.1)
    again = clients.connect("exp6-off", clean_start=False, properties={SEI: 60})
    [msg] = again.publishes(1)
    assert 0 < msg.properties[Prop.MESSAGE_EXPIRY_INTERVAL] <= 8
    assert msg.properties[Prop.MESSAGE_EXPIRY_INTERVAL] == 8


def test_MQTT_3_3_2_7_topic_alias_not_carried_to_next_connection(clients: Clients) -> None:
    """MQTT-3.3.2-7: Topic Alias mappings last for one Network Connection: after reconnecting (same
    Session), a PUBLISH with only the alias has no mapping: Protocol Error, DISCONNECT 0x82."""
    watcher = clients.connect("ta7-watch")
    watcher.sub("ta7/#")
    c = clients.connect("ta7", clean_start=False, properties={SEI: 60})
    c.pub("ta7/t", b"set", qos=1, properties={ALIAS: 3})
    c.pub("", b"use", qos=1, properties={ALIAS: 3})
    assert [p.topic for p in watcher.publishes(2)] == ["ta7/t", "ta7/t"]
    c.disconnect()
    again = clients.connect("ta7", clean_start=False, properties={SEI: 60})
    again.send(Publish("", b"stale", 1, packet_id=1, properties={ALIAS: 3}))
    again.expect_disconnect(PROTOCOL_ERROR)
    watcher.no_publish(0.3)


def test_MQTT_3_1_2_26_server_topic_alias_within_client_maximum(clients: Clients) -> None:
    """MQTT-3.1.2-26 and MQTT-3.3.2-11: the server sends no Topic Alias above the Topic Alias
    Maximum the Client gave in its CONNECT (2); any alias it uses is set before it is relied on,
    so every message resolves to the topic it was published to."""
    sub = clients.connect("ta26", properties={Prop.TOPIC_ALIAS_MAXIMUM: 2})
    sub.sub("ta26/#")
    pub = clients.connect("ta26-pub")
    sent = [f"ta26/{i % 5}" for i in range(25)]
    for topic in sent:
        pub.pub(topic, b"x", qos=1)
    mapping: dict[int, str] = {}
    resolved = []
    for msg in sub.publishes(len(sent)):
        alias = msg.properties.get(ALIAS)
        topic = msg.topic
        if alias is not None:
            assert 1 <= alias <= 2, alias
            if topic:
                mapping[alias] = topic
            else:
                assert alias in mapping, f"alias {alias} used before it was set"
                topic = mapping[alias]
        resolved.append(topic)
    assert resolved == sent


@pytest.mark.parametrize("maximum", [None, 0])
def test_MQTT_3_1_2_27_no_topic_alias_unless_client_accepts(
    clients: Clients, maximum: int | None
) -> None:
    """MQTT-3.1.2-27: with Topic Alias Maximum absent or 0 in the CONNECT, the server sends no Topic
    Alias at all: every PUBLISH carries its full Topic Name."""
    properties = {} if maximum is None else {Prop.TOPIC_ALIAS_MAXIMUM: maximum}
    sub = clients.connect("ta27", properties=properties)
    sub.sub("ta27/#")
    pub = clients.connect("ta27-pub")
    for i in range(12):
        pub.pub(f"ta27/{i % 3}", b"x", qos=1, properties={ALIAS: 1 + i % 3})
    for i, msg in enumerate(sub.publishes(12)):
        assert ALIAS not in msg.properties
        assert msg.topic == f"ta27/{i % 3}"


def test_MQTT_3_3_2_8_topic_alias_0_is_refused(clients: Clients) -> None:
    """MQTT-3.3.2-8: a Topic Alias of 0 is not permitted: the server answers DISCONNECT 0x94 (Topic
    Alias invalid, section 3.3.4) and closes."""
    c = clients.connect("ta8")
    c.send(Publish("ta8/t", b"x", 0, properties={ALIAS: 0}))
    c.expect_disconnect(0x94)


def test_MQTT_3_3_2_8_server_never_sends_topic_alias_0(clients: Clients) -> None:
    """MQTT-3.3.2-8 for the server as sender: whatever aliases it sends to a Client that accepts
    them (Topic Alias Maximum 5) are never 0 (and never above 5, MQTT-3.3.2-11)."""
    sub = clients.connect("ta8s", properties={Prop.TOPIC_ALIAS_MAXIMUM: 5})
    sub.sub("ta8s/#")
    pub = clients.connect("ta8s-pub")
    for i in range(20):
        pub.pub(f"ta8s/{i % 7}", b"x", qos=1)
    for msg in sub.publishes(20):
        alias = msg.properties.get(ALIAS)
        assert alias is None or 1 <= alias <= 5, alias


def test_MQTT_3_3_2_12_server_accepts_topic_aliases_up_to_its_maximum(clients: Clients) -> None:
    """MQTT-3.3.2-12: the server accepts every Topic Alias from 1 to the Topic Alias Maximum it sent
    (10): mappings are set, used with an empty Topic Name, and changed."""
    sub, pub = _pair(clients, "ta12", "ta12/#")
    assert pub.connack is not None
    maximum = pub.connack.properties[Prop.TOPIC_ALIAS_MAXIMUM]
    assert maximum == 10
    sent = []
    for alias in range(1, maximum + 1):
        pub.pub(f"ta12/{alias}", b"set", qos=1, properties={ALIAS: alias})
        sent.append(f"ta12/{alias}")
    for alias in (1, maximum, 5):
        pub.pub("", b"use", qos=1, properties={ALIAS: alias})
        sent.append(f"ta12/{alias}")
    pub.pub("ta12/remapped", b"set", qos=1, properties={ALIAS: 1})
    pub.pub("", b"use", qos=1, properties={ALIAS: 1})
    sent += ["ta12/remapped", "ta12/remapped"]
    assert [p.topic for p in sub.publishes(len(sent))] == sent


def test_MQTT_3_3_2_13_response_topic_must_be_utf8(clients: Clients) -> None:
    """MQTT-3.3.2-13: the Response Topic is a UTF-8 Encoded String; ill-formed UTF-8 makes the
    PUBLISH malformed: DISCONNECT 0x81, close."""
    c = clients.connect("rt13")
    c.send_raw(raw_publish("rt13/t", version=5, properties=props(p_str(0x08, b"r/\xed\xbf\xbf"))))
    c.expect_disconnect(MALFORMED)


def test_MQTT_3_3_2_15_response_topic_unaltered(clients: Clients) -> None:
    """MQTT-3.3.2-15: the Response Topic reaches every subscriber unaltered."""
    a, pub = _pair(clients, "rt15", "rt15/t")
    b = clients.connect("rt15-b")
    b.sub("rt15/+", qos=1)
    pub.pub("rt15/t", b"req", qos=1, properties={Prop.RESPONSE_TOPIC: "rt15/reply/Ünïcode/ \ufeff"})
    for sub in (a, b):
        [msg] = sub.publishes(1)
        assert msg.properties[Prop.RESPONSE_TOPIC] == "rt15/reply/Ünïcode/ \ufeff"


def test_MQTT_3_3_2_16_correlation_data_unaltered(clients: Clients) -> None:
    """MQTT-3.3.2-16: Correlation Data (binary, any bytes) reaches every subscriber unaltered."""
    a, pub = _pair(clients, "cd16", "cd16/t")
    b = clients.connect("cd16-b")
    b.sub("cd16/#", qos=0)
    data = bytes(range(256))
    pub.pub("cd16/t", b"req", qos=2, properties={Prop.CORRELATION_DATA: data})
    for sub in (a, b):
        [msg] = sub.publishes(1)
        assert msg.properties[Prop.CORRELATION_DATA] == data


def test_MQTT_3_3_2_17_user_properties_unaltered(clients: Clients) -> None:
    """MQTT-3.3.2-17: all User Properties are forwarded unaltered (names and values, empty strings
    and repeated names included)."""
    sub, pub = _pair(clients, "up17", "up17/t")
    pairs = [("k", "v"), ("", ""), ("k", "v"), ("ü", "\u2603"), ("k", "other")]
    pub.pub("up17/t", b"x", qos=1, properties={Prop.USER_PROPERTY: pairs})
    [msg] = sub.publishes(1)
    assert msg.properties[Prop.USER_PROPERTY] == pairs


def test_MQTT_3_3_2_18_user_property_order_kept(clients: Clients) -> None:
    """MQTT-3.3.2-18: the order of User Properties is kept when forwarding (many pairs, in an order
    no sorting would produce)."""
    sub, pub = _pair(clients, "up18", "up18/t")
    pairs = [(f"n{(i * 7) % 20}", str(i)) for i in range(20)]
    pub.pub("up18/t", b"x", qos=0, properties={Prop.USER_PROPERTY: pairs})
    [msg] = sub.publishes(1)
    assert msg.properties[Prop.USER_PROPERTY] == pairs


def test_MQTT_3_3_2_19_content_type_must_be_utf8(clients: Clients) -> None:
    """MQTT-3.3.2-19: the Content Type is a UTF-8 Encoded String; invalid UTF-8 is a Malformed
    Packet: DISCONNECT 0x81, close."""
    c = clients.connect("ct19")
    c.send_raw(raw_publish("ct19/t", version=5, properties=props(p_str(0x03, b"text/\xc3"))))
    c.expect_disconnect(MALFORMED)


def test_MQTT_3_3_2_20_content_type_unaltered(clients: Clients) -> None:
    """MQTT-3.3.2-20: the Content Type reaches every subscriber unaltered."""
    a, pub = _pair(clients, "ct20", "ct20/t")
    b = clients.connect("ct20-b")
    b.sub("ct20/#", qos=1)
    content_type = 'application/x-midge; charset=utf-8; q="é"'
    pub.pub("ct20/t", b"{}", qos=1, properties={Prop.CONTENT_TYPE: content_type})
    for sub in (a, b):
        [msg] = sub.publishes(1)
        assert msg.properties[Prop.CONTENT_TYPE] == content_type


# -- 3.3.4 PUBLISH actions ----------------------------------------------------------------------


def test_MQTT_3_3_4_1_response_matches_the_qos(clients: Clients) -> None:
    """MQTT-3.3.4-1: the server answers a PUBLISH as its QoS says: nothing for QoS 0, PUBACK for
    QoS 1, PUBREC (then PUBCOMP for the PUBREL) for QoS 2."""
    c = clients.connect("resp")
    c.send(Publish("resp/t", b"0", 0))
    c.ping()  # the PINGRESP is the only answer
    assert not c.pending
    c.send(Publish("resp/t", b"1", 1, packet_id=11))
    assert c.expect(Puback).packet_id == 11
    c.send(Publish("resp/t", b"2", 2, packet_id=12))
    assert c.expect(Pubrec).packet_id == 12
    c.send(Pubrel(12))
    assert c.expect(Pubcomp).packet_id == 12


def test_MQTT_3_3_4_2_overlapping_subscriptions_respect_maximum_qos(clients: Clients) -> None:
    """MQTT-3.3.4-2: a message matching several subscriptions of one Client is delivered respecting
    the maximum QoS of them (Mosquitto sends one copy per subscription; at least one copy must be
    at QoS 2 here, and no copy above its subscription's QoS)."""
    sub, pub = _pair(clients, "ovl", Subscription("ovl/+", 0), Subscription("ovl/#", 2))
    pub.pub("ovl/t", b"x", qos=2)
    got = [sub.publishes(1)[0], *sub.more_publishes()]
    assert 1 <= len(got) <= 2
    assert max(p.qos for p in got) == 2
    for msg in got:
        if msg.qos:
            sub.ack(msg, others_stay_queued=True)


def test_MQTT_3_3_4_3_subscription_identifiers_of_overlapping_subscriptions(
    clients: Clients,
) -> None:
    """MQTT-3.3.4-3, MQTT-3.3.4-4 and MQTT-3.3.4-5: a message matching overlapping subscriptions
    carries their Subscription Identifiers: one copy carries all of them (order not significant);
    with one copy per subscription each carries the identifier of its own subscription. A
    subscription without identifier adds none."""
    sub = clients.connect("sid")
    sub.sub(Subscription("sid/+", 1), properties={SUB_ID: [1]})
    sub.sub(Subscription("sid/#", 1), properties={SUB_ID: [2]})
    sub.sub(Subscription("sid/t", 1))
    pub = clients.connect("sid-pub")
    pub.pub("sid/t", b"x", qos=1)
    got = [sub.publishes(1)[0], *sub.more_publishes()]
    ids = [sorted(p.properties.get(SUB_ID, [])) for p in got]
    if len(got) == 1:
        assert ids == [[1, 2]]
    else:
        assert len(got) == 3, got
        assert sorted(ids) == [[], [1], [2]]


def test_MQTT_3_3_4_6_subscription_identifier_from_client_is_refused(clients: Clients) -> None:
    """MQTT-3.3.4-6: a PUBLISH from a Client must not contain a Subscription Identifier; it is a
    Protocol Error (section 3.3.4): DISCONNECT 0x82, close. (Mosquitto 2.0.11 ignores it.)"""
    watcher = clients.connect("sid6-watch")
    watcher.sub("sid6/t")
    c = clients.connect("sid6")
    c.send(Publish("sid6/t", b"x", 1, packet_id=1, properties={SUB_ID: [5]}))
    c.expect_disconnect(PROTOCOL_ERROR)


# -- 3.4-3.7 acknowledgement Reason Codes -------------------------------------------------------


def test_MQTT_3_4_2_1_puback_reason_codes(make_broker: Any) -> None:
    """MQTT-3.4.2-1: PUBACKs from the server use PUBACK Reason Codes (Table 3-4): a delivered
    message, one with no subscribers (0x10 or 0x00), one above message_size_limit (refused)."""
    with Clients(make_broker(message_size_limit=10)) as clients:
        c = clients.connect("pa1")
        c.sub("pa1/sub")
        codes: list[int] = []
        for topic, payload in [("pa1/sub", b"ok"), ("pa1/none", b"ok"), ("pa1/sub", bytes(50))]:
            c.send(Publish(topic, payload, 1, packet_id=len(codes) + 1))
            codes.append(c.wait_for(Puback).reason_code)
        assert all(code in PUBACK_REASONS for code in codes), [hex(x) for x in codes]
        assert codes[0] == 0x00 and codes[1] in (0x00, 0x10)


def test_MQTT_3_5_2_1_pubrec_reason_codes(make_broker: Any) -> None:
    """MQTT-3.5.2-1: PUBRECs from the server use PUBREC Reason Codes (Table 3-5): delivered, no
    subscribers, above message_size_limit."""
    with Clients(make_broker(message_size_limit=10)) as clients:
        c = clients.connect("pr1")
        c.sub("pr1/sub")
        codes: list[int] = []
        for topic, payload in [("pr1/sub", b"ok"), ("pr1/none", b"ok"), ("pr1/sub", bytes(50))]:
            pid = len(codes) + 1
            c.send(Publish(topic, payload, 2, packet_id=pid))
            pubrec = c.wait_for(Pubrec)
            codes.append(pubrec.reason_code)
            if pubrec.reason_code < 0x80:
                c.send(Pubrel(pid))
                c.wait_for(Pubcomp)
        assert all(code in PUBREC_REASONS for code in codes), [hex(x) for x in codes]
        assert codes[0] == 0x00 and codes[1] in (0x00, 0x10)


def test_MQTT_3_6_1_1_pubrel_reserved_flags(clients: Clients) -> None:
    """MQTT-3.6.1-1: PUBREL flags are 0010; the server treats other values as malformed and closes
    (DISCONNECT 0x81). Its own PUBRELs carry 0010 on the wire."""
    sub = clients.open()
    wire = tap(sub)
    sub.connect5("rel1")
    sub.sub("rel1/t", qos=2)
    sub.pub("rel1/t", b"x", qos=2)
    [msg] = sub.publishes(1)
    sub.send(Pubrec(msg.packet_id or 0))
    sub.wait_for(Pubrel)
    sub.send(Pubcomp(msg.packet_id or 0))
    sub.ping()
    assert [f[0] for f in frames(wire) if f[0] >> 4 == 6] == [0x62]
    c = clients.connect("rel1-bad")
    c.send(Publish("rel1/u", b"x", 2, packet_id=3))
    c.expect(Pubrec)
    c.send_raw(raw_ack(0x60, 3))
    c.expect_disconnect(MALFORMED)


def test_MQTT_3_6_2_1_pubrel_reason_codes(clients: Clients) -> None:
    """MQTT-3.6.2-1: PUBRELs from the server use PUBREL Reason Codes (0x00, 0x92)."""
    sub, pub = _pair(clients, "rel2", "rel2/t")
    for i in range(3):
        pub.pub("rel2/t", bytes([i]), qos=2)
    for msg in sub.publishes(3):
        sub.send(Pubrec(msg.packet_id or 0))
        pubrel = sub.wait_for(Pubrel)
        assert pubrel.packet_id == msg.packet_id
        assert pubrel.reason_code in PUBREL_REASONS
        sub.send(Pubcomp(msg.packet_id or 0))


def test_MQTT_3_7_2_1_pubcomp_reason_codes(clients: Clients) -> None:
    """MQTT-3.7.2-1: PUBCOMPs from the server use PUBCOMP Reason Codes: 0x00 for a known Packet
    Identifier, 0x00 or 0x92 (Packet Identifier not found) for an unknown one."""
    c = clients.connect("comp")
    c.send(Publish("comp/t", b"x", 2, packet_id=1))
    c.expect(Pubrec)
    c.send(Pubrel(1))
    assert c.expect(Pubcomp).reason_code == 0x00
    c.send(Pubrel(999))
    pubcomp = c.expect(Pubcomp)
    assert pubcomp.packet_id == 999 and pubcomp.reason_code in PUBCOMP_REASONS
