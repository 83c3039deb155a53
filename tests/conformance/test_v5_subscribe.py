"""MQTT 5.0 sections 3.8-3.12 (SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ) and 4.8.2
(Shared Subscriptions)."""

from __future__ import annotations

from typing import Any

import pytest

from midge.codec.packets import (
    Disconnect,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
)
from midge.codec.packets import Subscription as Sub
from midge.codec.properties import Prop
from tests.conformance.test_v5_support import (
    MALFORMED,
    PROTOCOL_ERROR,
    SUBACK_REASONS,
    UNSUBACK_REASONS,
    Clients,
)
from tests.rawclient import raw_packet, raw_subscribe, raw_unsubscribe

SEI = Prop.SESSION_EXPIRY_INTERVAL


# -- 3.8 SUBSCRIBE ------------------------------------------------------------------------------


@pytest.mark.parametrize("first_byte", [0x80, 0x83, 0x86, 0x8A])
def test_MQTT_3_8_1_1_subscribe_reserved_flags(clients: Clients, first_byte: int) -> None:
    """MQTT-3.8.1-1: SUBSCRIBE fixed-header flags are 0010; any other value is malformed: the
    server closes (DISCONNECT 0x81) and does not subscribe."""
    c = clients.connect("sf")
    c.send_raw(raw_subscribe(1, ("sf/t", 0), first_byte=first_byte, version=5))
    c.expect_disconnect(MALFORMED)


def test_MQTT_3_8_3_1_topic_filter_must_be_utf8(clients: Clients) -> None:
    """MQTT-3.8.3-1: Topic Filters are UTF-8 Encoded Strings; an invalid one is malformed:
    DISCONNECT 0x81, close."""
    c = clients.connect("sf-utf8")
    c.send_raw(raw_subscribe(1, ("ok/t", 0), (b"bad/\xe2\x82", 0), version=5))
    c.expect_disconnect(MALFORMED)


def test_MQTT_3_8_3_2_subscribe_without_filters_is_refused(clients: Clients) -> None:
    """MQTT-3.8.3-2: the payload holds at least one Topic Filter; a SUBSCRIBE with none is a
    Protocol Error, closed after DISCONNECT with 0x81 as Mosquitto 2.0.11 sends (either code
    closes, MQTT 5 4.13)."""
    c = clients.connect("sf-empty")
    c.send_raw(raw_subscribe(1, version=5))
    c.expect_disconnect(MALFORMED)


def test_MQTT_3_8_3_3_no_local(clients: Clients) -> None:
    """MQTT-3.8.3-3: with No Local 1, messages are not forwarded to the connection whose ClientID
    published them; other Clients' messages are, and a No Local 0 subscriber gets both."""
    c = clients.connect("nl")
    c.sub(Sub("nl/t", 1, no_local=True))
    other = clients.connect("nl-other")
    other.sub(Sub("nl/t", 1, no_local=False))
    c.pub("nl/t", b"own", qos=1)
    other.pub("nl/t", b"foreign", qos=1)
    [msg] = c.publishes(1)
    assert msg.payload == b"foreign"
    c.no_publish()
    assert sorted(p.payload for p in other.publishes(2)) == [b"foreign", b"own"]


def test_MQTT_3_8_3_4_no_local_on_shared_subscription_is_refused(clients: Clients) -> None:
    """MQTT-3.8.3-4: No Local 1 on a Shared Subscription is a Protocol Error: DISCONNECT 0x82,
    close. (Mosquitto 2.0.11 accepts it.)"""
    c = clients.connect("nl-shared")
    c.send(Subscribe(1, [Sub("$share/g/nl/t", 0, no_local=True)]))
    c.expect_disconnect(PROTOCOL_ERROR)


@pytest.mark.parametrize("options", [0x40, 0x80, 0xC0, 0x41 | 0x04])
def test_MQTT_3_8_3_5_reserved_subscription_option_bits(clients: Clients, options: int) -> None:
    """MQTT-3.8.3-5: Subscription Options bits 6 and 7 are reserved; non-zero is malformed:
    DISCONNECT 0x81, close."""
    c = clients.connect("opts")
    c.send_raw(raw_subscribe(1, ("opts/t", options), version=5))
    c.expect_disconnect(MALFORMED)


def test_MQTT_3_8_4_1_subscribe_is_answered_with_suback(clients: Clients) -> None:
    """MQTT-3.8.4-1: every SUBSCRIBE gets a SUBACK (several in a row, new and existing filters)."""
    c = clients.connect("suback")
    for pid, flt in [(1, "s/a"), (2, "s/b"), (3, "s/a"), (4, "s/#")]:
        c.send(Subscribe(pid, [Sub(flt, 1)]))
    assert [c.expect(Suback).packet_id for _ in range(4)] == [1, 2, 3, 4]


def test_MQTT_3_8_4_2_suback_has_the_subscribe_packet_identifier(clients: Clients) -> None:
    """MQTT-3.8.4-2: the SUBACK carries the SUBSCRIBE's Packet Identifier, also when SUBSCRIBEs
    are pipelined."""
    c = clients.connect("suback-id")
    pids = [0x0102, 0xFFFF, 7, 0x8000]
    for pid in pids:
        c.send(Subscribe(pid, [Sub(f"sid/{pid}", 0)]))
    assert [c.expect(Suback).packet_id for _ in pids] == pids


def test_MQTT_3_8_4_3_identical_filter_replaces_subscription(clients: Clients) -> None:
    """MQTT-3.8.4-3: a SUBSCRIBE with a Topic Filter identical to an existing one replaces that
    subscription: one copy per message, at the new options (QoS 0 -> 2, then back to 0)."""
    sub = clients.connect("repl")
    pub = clients.connect("repl-pub")
    sub.sub("repl/t", qos=0)
    sub.sub("repl/t", qos=2)
    pub.pub("repl/t", b"1", qos=2)
    [msg] = sub.publishes(1)
    assert msg.qos == 2
    sub.ack(msg, others_stay_queued=True)
    sub.no_publish()
    sub.sub("repl/t", qos=0)
    pub.pub("repl/t", b"2", qos=2)
    [msg] = sub.publishes(1)
    assert msg.qos == 0
    sub.no_publish()


def test_MQTT_3_8_4_4_resubscribe_resends_retained_without_losing_messages(
    clients: Clients,
) -> None:
    """MQTT-3.8.4-4: replacing a subscription with Retain Handling 0 re-sends the matching retained
    messages, and no Application Message is lost by the replacement."""
    pub = clients.connect("rs-pub")
    pub.pub("rs/t", b"retained", qos=1, retain=True)
    sub = clients.connect("rs")
    sub.sub(Sub("rs/#", 1, retain_handling=0))
    [msg] = sub.publishes(1)
    assert msg.payload == b"retained"
    for i in range(5):
        pub.send(Publish("rs/live", bytes([i]), 1, packet_id=100 + i))
    sub.sub(Sub("rs/#", 1, retain_handling=0))
    for _ in range(5):
        pub.wait_for(Puback)
    got = sub.publishes(6)
    assert sorted(p.payload for p in got if p.topic == "rs/live") == [bytes([i]) for i in range(5)]
    assert [p.payload for p in got if p.topic == "rs/t"] == [b"retained"]


def test_MQTT_3_8_4_5_multiple_filters_handled_as_a_sequence(clients: Clients) -> None:
    """MQTT-3.8.4-5: a SUBSCRIBE with several Topic Filters acts like one SUBSCRIBE per filter, with
    a single SUBACK: each subscription works; a repeated filter ends with the last options."""
    sub = clients.connect("multi")
    suback = sub.sub(Sub("m/a", 0), Sub("m/b", 1), Sub("m/c", 2), Sub("m/a", 2))
    assert suback.reason_codes == [0, 1, 2, 2]
    pub = clients.connect("multi-pub")
    for topic in ("m/a", "m/b", "m/c"):
        pub.pub(topic, b"x", qos=2)
    got = {p.topic: p.qos for p in sub.publishes(3)}
    assert got == {"m/a": 2, "m/b": 1, "m/c": 2}


def test_MQTT_3_8_4_6_one_reason_code_per_filter(clients: Clients) -> None:
    """MQTT-3.8.4-6: the SUBACK has a Reason Code for each Topic Filter/Subscription Options pair
    (1, 5 and 20 filters)."""
    c = clients.connect("count")
    for n in (1, 5, 20):
        suback = c.sub(*[Sub(f"count/{n}/{i}", i % 3) for i in range(n)])
        assert len(suback.reason_codes) == n


def test_MQTT_3_8_4_7_reason_code_is_granted_qos(make_broker: Any) -> None:
    """MQTT-3.8.4-7: each Reason Code is the granted maximum QoS (or a failure): with max_qos 1 the
    server grants 0, 1, 1 for requests 0, 1, 2; with the default it grants what was asked."""
    with Clients(make_broker(max_qos=1)) as clients:
        suback = clients.connect("g1").sub(Sub("g/0", 0), Sub("g/1", 1), Sub("g/2", 2))
        assert suback.reason_codes == [0, 1, 1]
    with Clients(make_broker()) as clients:
        suback = clients.connect("g2").sub(Sub("g/0", 0), Sub("g/1", 1), Sub("g/2", 2))
        assert suback.reason_codes == [0, 1, 2]


@pytest.mark.parametrize("granted", [0, 1, 2])
def test_MQTT_3_8_4_8_delivery_qos_is_the_minimum(clients: Clients, granted: int) -> None:
    """MQTT-3.8.4-8: messages are delivered at the minimum of the published QoS and the granted
    maximum QoS."""
    sub = clients.connect(f"min{granted}")
    assert sub.sub(Sub("min/t", granted)).reason_codes == [granted]
    pub = clients.connect(f"min{granted}-pub")
    for qos in (0, 1, 2):
        pub.pub("min/t", bytes([qos]), qos=qos)
    got = sub.publishes(3)
    assert [(p.payload[0], p.qos) for p in got] == [(q, min(q, granted)) for q in (0, 1, 2)]
    for msg in got:
        if msg.qos:
            sub.ack(msg, others_stay_queued=True)


# -- 3.9 SUBACK ---------------------------------------------------------------------------------


def test_MQTT_3_9_3_1_suback_codes_in_filter_order(make_broker: Any) -> None:
    """MQTT-3.9.3-1: the SUBACK Reason Codes follow the order of the Topic Filters."""
    with Clients(make_broker(max_qos=1)) as clients:
        c = clients.connect("order")
        suback = c.sub(Sub("o/2", 2), Sub("o/0", 0), Sub("o/1", 1), Sub("o/2b", 2), Sub("o/0b", 0))
        assert suback.reason_codes == [1, 0, 1, 1, 0]


def test_MQTT_3_9_3_2_suback_uses_subscribe_reason_codes(clients: Clients) -> None:
    """MQTT-3.9.3-2: every SUBACK Reason Code is one of Table 3-8 (plain, wildcard, shared and
    $-filters at each QoS)."""
    c = clients.connect("rc")
    filters = ["rc/a", "rc/+", "rc/#", "#", "$share/g/rc/t", "$SYS/#", "+/+/+"]
    suback = c.sub(*[Sub(f, i % 3) for i, f in enumerate(filters)])
    assert all(code in SUBACK_REASONS for code in suback.reason_codes), suback.reason_codes


# -- 3.10 UNSUBSCRIBE / 3.11 UNSUBACK -----------------------------------------------------------


@pytest.mark.parametrize("first_byte", [0xA0, 0xA1, 0xA6, 0xAA])
def test_MQTT_3_10_1_1_unsubscribe_reserved_flags(clients: Clients, first_byte: int) -> None:
    """MQTT-3.10.1-1: UNSUBSCRIBE flags are 0010; any other value is malformed: DISCONNECT 0x81,
    close."""
    c = clients.connect("uf")
    c.sub("uf/t")
    c.send_raw(raw_unsubscribe(1, "uf/t", first_byte=first_byte, version=5))
    c.expect_disconnect(MALFORMED)


def test_MQTT_3_10_3_1_unsubscribe_filter_must_be_utf8(clients: Clients) -> None:
    """MQTT-3.10.3-1: the Topic Filters of UNSUBSCRIBE are UTF-8 Encoded Strings; an invalid one is
    malformed: DISCONNECT 0x81, close."""
    c = clients.connect("uf-utf8")
    c.send_raw(raw_unsubscribe(1, b"uf/\xc0\x80", version=5))
    c.expect_disconnect(MALFORMED)


def test_MQTT_3_10_3_2_unsubscribe_without_filters_is_refused(clients: Clients) -> None:
    """MQTT-3.10.3-2: an UNSUBSCRIBE holds at least one Topic Filter; one without is closed
    after DISCONNECT 0x81, as Mosquitto 2.0.11 sends."""
    c = clients.connect("uf-empty")
    c.send_raw(raw_unsubscribe(1, version=5))
    c.expect_disconnect(MALFORMED)


def test_MQTT_3_10_4_1_unsubscribe_matches_filters_exactly(clients: Clients) -> None:
    """MQTT-3.10.4-1: UNSUBSCRIBE filters are compared character by character with the existing
    ones, wildcards included, and only an exact match is deleted: unsubscribing "u/#" or "U/+"
    leaves "u/+" alone; unsubscribing "u/+" removes it and leaves "u/x"."""
    sub = clients.connect("ux")
    sub.sub(Sub("u/+", 1), Sub("u/x", 1))
    assert sub.unsub("u/#", "U/+", "u/+/").reason_codes == [0x11, 0x11, 0x11]
    pub = clients.connect("ux-pub")
    pub.pub("u/y", b"1", qos=1)
    assert [p.payload for p in sub.publishes(1)] == [b"1"]
    assert sub.unsub("u/+").reason_codes == [0x00]
    pub.pub("u/y", b"2", qos=1)
    pub.pub("u/x", b"3", qos=1)
    [msg] = sub.publishes(1)
    assert msg.payload == b"3"
    sub.no_publish()


def test_MQTT_3_10_4_2_no_new_messages_after_unsubscribe(clients: Clients) -> None:
    """MQTT-3.10.4-2: after the UNSUBSCRIBE the server adds no new matching messages for the
    Client."""
    sub = clients.connect("stop")
    sub.sub("stop/t", qos=1)
    pub = clients.connect("stop-pub")
    pub.pub("stop/t", b"before", qos=1)
    assert sub.publishes(1)[0].payload == b"before"
    sub.unsub("stop/t")
    for _ in range(3):
        pub.pub("stop/t", b"after", qos=1)
    sub.no_publish()


def test_MQTT_3_10_4_3_inflight_delivery_completed_after_unsubscribe(clients: Clients) -> None:
    """MQTT-3.10.4-3: QoS 1 and 2 messages the server has started to send are completed after an
    UNSUBSCRIBE: the PUBREC of a QoS 2 message received before unsubscribing still gets its
    PUBREL (and the PUBCOMP is accepted), and the QoS 1 PUBACK is accepted."""
    sub = clients.connect("inflight")
    sub.sub("inf/t", qos=2)
    pub = clients.connect("inflight-pub")
    pub.pub("inf/t", b"two", qos=2)
    pub.pub("inf/t", b"one", qos=1)
    two, one = sub.publishes(2)
    assert (two.qos, one.qos) == (2, 1)
    assert sub.unsub("inf/t").reason_codes == [0x00]
    sub.send(Pubrec(two.packet_id or 0))
    assert sub.wait_for(Pubrel).packet_id == two.packet_id
    sub.send(Pubcomp(two.packet_id or 0))
    sub.send(Puback(one.packet_id or 0))
    sub.ping()
    assert sub.is_open(0.2)


def test_MQTT_3_10_4_4_unsubscribe_is_answered_with_unsuback(clients: Clients) -> None:
    """MQTT-3.10.4-4: every UNSUBSCRIBE gets an UNSUBACK."""
    c = clients.connect("unsuback")
    c.sub("ua/t")
    for pid in (1, 2, 3):
        c.send(Unsubscribe(pid, ["ua/t"]))
    assert [c.expect(Unsuback).packet_id for _ in range(3)] == [1, 2, 3]


def test_MQTT_3_10_4_5_unsuback_packet_id_even_if_nothing_deleted(clients: Clients) -> None:
    """MQTT-3.10.4-5: the UNSUBACK has the UNSUBSCRIBE's Packet Identifier, and is sent even when no
    subscription was deleted."""
    c = clients.connect("ua5")
    for pid in (0x00FF, 0xFF00, 0xFFFF):
        c.send(Unsubscribe(pid, ["never/subscribed"]))
        unsuback = c.expect(Unsuback)
        assert unsuback.packet_id == pid
        assert unsuback.reason_codes == [0x11]


def test_MQTT_3_10_4_6_multiple_filters_one_unsuback(clients: Clients) -> None:
    """MQTT-3.10.4-6: an UNSUBSCRIBE with several filters is processed like one per filter, with a
    single UNSUBACK."""
    c = clients.connect("ua6")
    c.sub(Sub("ua6/a", 1), Sub("ua6/b", 1), Sub("ua6/c", 1))
    c.send(Unsubscribe(9, ["ua6/a", "ua6/c", "ua6/a"]))
    unsuback = c.expect(Unsuback)
    assert unsuback.packet_id == 9
    assert unsuback.reason_codes == [0x00, 0x00, 0x11]
    c.ping()
    pub = clients.connect("ua6-pub")
    for topic in ("ua6/a", "ua6/b", "ua6/c"):
        pub.pub(topic, b"x", qos=1)
    assert [p.topic for p in c.publishes(1)] == ["ua6/b"]
    c.no_publish()


def test_MQTT_3_11_3_1_unsuback_codes_in_filter_order(clients: Clients) -> None:
    """MQTT-3.11.3-1: the UNSUBACK Reason Codes follow the order of the Topic Filters."""
    c = clients.connect("ua31")
    c.sub(Sub("x/1", 0), Sub("x/3", 0))
    unsuback = c.unsub("x/0", "x/1", "x/2", "x/3", "x/4")
    assert unsuback.reason_codes == [0x11, 0x00, 0x11, 0x00, 0x11]


def test_MQTT_3_11_3_2_unsuback_uses_unsubscribe_reason_codes(clients: Clients) -> None:
    """MQTT-3.11.3-2: every UNSUBACK Reason Code is one of Table 3-9."""
    c = clients.connect("ua32")
    c.sub(Sub("y/+", 1), Sub("$share/g/y/t", 1))
    unsuback = c.unsub("y/+", "$share/g/y/t", "y/none", "#")
    assert all(code in UNSUBACK_REASONS for code in unsuback.reason_codes)
    assert unsuback.reason_codes[:2] == [0x00, 0x00]


# -- 3.12 PINGREQ -------------------------------------------------------------------------------


def test_MQTT_3_12_4_1_pingreq_gets_pingresp(clients: Clients) -> None:
    """MQTT-3.12.4-1: the server answers each PINGREQ with a PINGRESP."""
    c = clients.connect("ping")
    c.send_raw(raw_packet(0xC0) * 3)
    for _ in range(3):
        c.expect(Pingresp)
    c.send(Pingreq())
    c.expect(Pingresp)


# -- 4.8.2 Shared Subscriptions -----------------------------------------------------------------


@pytest.mark.parametrize("topic_filter", ["$share//sh/t", "$share/"])
def test_MQTT_4_8_2_1_share_name_must_not_be_empty(clients: Clients, topic_filter: str) -> None:
    """MQTT-4.8.2-1: a Shared Subscription filter is $share/ followed by a ShareName of at least
    one character. One with an empty ShareName is not accepted as a Shared Subscription: the server
    refuses it (DISCONNECT 0x81/0x82 or a failure SUBACK) or at least never delivers messages for
    the filter part to it."""
    _expect_not_a_shared_subscription(clients, topic_filter, "sh/t")


@pytest.mark.parametrize(
    ("topic_filter", "topic"),
    [
        ("$share/a+b/sh/t", "sh/t"),
        ("$share/a#/sh/t", "sh/t"),
        ("$share/group", "group"),
        ("$share/group/", ""),
    ],
)
def test_MQTT_4_8_2_2_share_name_syntax(clients: Clients, topic_filter: str, topic: str) -> None:
    """MQTT-4.8.2-2: the ShareName has no "/", "+" or "#" and is followed by "/" and a Topic
    Filter. Filters breaking this are not accepted as Shared Subscriptions (refused, or never
    matching)."""
    _expect_not_a_shared_subscription(clients, topic_filter, topic)


def _expect_not_a_shared_subscription(clients: Clients, topic_filter: str, topic: str) -> None:
    c = clients.connect("badshare")
    c.send(Subscribe(1, [Sub(topic_filter, 1)]))
    packet = c.recv()
    if isinstance(packet, Suback):
        if packet.reason_codes[0] >= 0x80:
            return
        if topic:
            pub = clients.connect("badshare-pub")
            pub.pub(topic, b"x", qos=1)
            c.no_publish()
        return
    assert isinstance(packet, Disconnect), packet
    assert packet.reason_code in (MALFORMED, PROTOCOL_ERROR, 0x8F)
    c.expect_closed()


def test_MQTT_4_8_2_3_shared_delivery_respects_granted_qos(clients: Clients) -> None:
    """MQTT-4.8.2-3: each member of a Shared Subscription gets messages at no more than the QoS it
    was granted (QoS 0 for one member, QoS 2 for the other); each message goes to one member."""
    low = clients.connect("share-low")
    high = clients.connect("share-high")
    low.sub(Sub("$share/q/sq/t", 0))
    high.sub(Sub("$share/q/sq/t", 2))
    pub = clients.connect("share-pub")
    for i in range(10):
        pub.pub("sq/t", bytes([i]), qos=2)
    got_low = low.more_publishes(0.6, ack=True)
    got_high = high.more_publishes(0.6, ack=True)
    assert sorted(p.payload[0] for p in got_low + got_high) == list(range(10))
    assert all(p.qos == 0 for p in got_low)
    assert all(p.qos == 2 for p in got_high)


def test_MQTT_4_8_2_4_shared_qos2_delivery_completed_on_reconnect(clients: Clients) -> None:
    """MQTT-4.8.2-4: a QoS 2 message being sent to the chosen member when its connection breaks is
    delivered to that Client when it reconnects (its Session persists)."""
    member = clients.connect("sh4", clean_start=False, properties={SEI: 60})
    member.sub(Sub("$share/g4/s4/t", 2))
    pub = clients.connect("sh4-pub")
    pub.pub("s4/t", b"exactly once", qos=2)
    [first] = member.publishes(1)
    member.close()
    again = clients.connect("sh4", clean_start=False, properties={SEI: 60})
    [msg] = again.publishes(1)
    assert (msg.payload, msg.packet_id, msg.dup) == (b"exactly once", first.packet_id, True)
    again.ack(msg, others_stay_queued=True)


def test_MQTT_4_8_2_5_unfinished_qos2_not_sent_to_another_member(clients: Clients) -> None:
    """MQTT-4.8.2-5: if the chosen member's Session ends before it reconnects, the QoS 2 message it
    was being sent is not sent to any other member of the Shared Subscription."""
    first = clients.connect("sh5a", properties={SEI: 1})
    first.sub(Sub("$share/g5/s5/t", 2))
    pub = clients.connect("sh5-pub")
    pub.pub("s5/t", b"only for a", qos=2)
    [msg] = first.publishes(1)
    other = clients.connect("sh5b")
    other.sub(Sub("$share/g5/s5/t", 2))
    first.close()
    clients.advance(1.5)
    other.no_publish()
    clients.advance(0.5)
    other.no_publish()
    assert msg.payload == b"only for a"


def test_MQTT_4_8_2_6_negative_ack_discards_shared_message(clients: Clients) -> None:
    """MQTT-4.8.2-6: a PUBACK or PUBREC with a Reason Code of 0x80 or more from the chosen member
    makes the server discard the message: it is not sent to another member."""
    first = clients.connect("sh6a")
    first.sub(Sub("$share/g6/s6/t", 2))
    pub = clients.connect("sh6-pub")
    pub.pub("s6/t", b"q1", qos=1)
    pub.pub("s6/t", b"q2", qos=2)
    q1, q2 = first.publishes(2)
    other = clients.connect("sh6b")
    other.sub(Sub("$share/g6/s6/t", 2))
    first.send(Puback(q1.packet_id or 0, 0x80))
    first.send(Pubrec(q2.packet_id or 0, 0x80))
    first.ping()
    other.no_publish(0.6)
    first.no_publish(0.2)
