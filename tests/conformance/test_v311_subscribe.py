"""MQTT 3.1.1 sections 3.8-3.11: SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, server side.

One test per normative statement, named after its id. Tests that also apply to MQTT 3.1 run for
protocol levels 3 and 4. Where the spec leaves the server a choice, the expected behaviour is
Mosquitto 2.0.11's: an invalid topic filter closes the connection (rather than a 0x80 SUBACK).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from midge.codec.packets import Pubcomp, Publish, Pubrec, Pubrel, Suback, Subscribe, Subscription
from tests.rawclient import (
    Raw,
    RawClient,
    accepted,
    expect_closed_silently,
    publishes,
    raw_packet,
    raw_subscribe,
    raw_unsubscribe,
    read_raw_packet,
    receive_publishes,
    subscribe_collecting,
)

BOTH = pytest.mark.parametrize("version", [3, 4], ids=["mqtt31", "mqtt311"])


# -- 3.8.1 / 3.8.3: what a SUBSCRIBE must look like --------------------------------------------


@pytest.mark.parametrize("first_byte", [0x80, 0x81, 0x83, 0x86, 0x8A])
def test_MQTT_3_8_1_1_subscribe_reserved_bits_close(raw: Raw, first_byte: int) -> None:
    """MQTT-3.8.1-1: SUBSCRIBE's fixed header flags must be 0010; the server treats anything else
    as malformed and closes the connection without a SUBACK. (MQTT 3.1 had no such rule.)"""
    client = accepted(raw, "v311-subflags")
    client.send_raw(raw_subscribe(1, ("v311/sf/t", 0), first_byte=first_byte))
    expect_closed_silently(client)


@BOTH
@pytest.mark.parametrize("bad", [b"v311/\xc0\xaf", b"v311/\xed\xa0\x80", b"\xff", b"v311/\x00"])
def test_MQTT_3_8_3_1_filter_ill_formed_utf8_closes(raw: Raw, version: int, bad: bytes) -> None:
    """MQTT-3.8.3-1: Topic Filters are UTF-8 encoded strings; ill-formed UTF-8 (or U+0000,
    MQTT-1.5.3-2) in one closes the connection without a SUBACK."""
    client = accepted(raw, "v311-subutf8", version)
    client.send_raw(raw_subscribe(1, ("v311/good", 0), (bad, 0)))
    expect_closed_silently(client)


@BOTH
def test_MQTT_3_8_3_2_wildcard_filters_supported(raw: Raw, version: int) -> None:
    """MQTT-3.8.3-2 only binds a server that does not support wildcards; midge supports them, so
    filters with '+' and '#' are granted and match."""
    client = accepted(raw, "v311-wild", version)
    suback = client.subscribe("v311/wild/+/x", 1)
    assert suback.reason_codes == [1]
    assert client.subscribe("v311/wild2/#", 0).reason_codes == [0]
    pub = accepted(raw, "v311-wild-pub", version)
    pub.publish("v311/wild/a/x", b"plus")
    pub.publish("v311/wild2/a/b/c", b"hash")
    got = publishes(client.recv_all(0.5))
    assert [p.payload for p in got] == [b"plus", b"hash"]


def test_MQTT_3_8_3_3_subscribe_without_filters_closes(raw: Raw) -> None:
    """MQTT-3.8.3-3: a SUBSCRIBE must carry at least one Topic Filter / QoS pair; one with no
    payload is a protocol violation and the connection is closed."""
    client = accepted(raw, "v311-subempty")
    client.send_raw(raw_packet(0x82, b"\x00\x01"))
    expect_closed_silently(client)


@BOTH
@pytest.mark.parametrize("options", [0x03, 0x04, 0x08, 0x80, 0xFC, 0x41])
def test_MQTT_3_8_3_4_requested_qos_reserved_bits_close(
    raw: Raw, version: int, options: int
) -> None:
    """MQTT-3-8.3-4 (so numbered in the spec): the server treats a SUBSCRIBE as malformed and
    closes the connection if the Requested QoS byte's reserved bits are not zero or the QoS is 3.
    """
    client = accepted(raw, "v311-subqos", version)
    client.send_raw(raw_subscribe(1, ("v311/sq/t", options)))
    expect_closed_silently(client)


# -- 3.8.4: the response -------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("packet_id", [1, 0x1234, 0xFFFF])
def test_MQTT_3_8_4_1_suback_with_same_packet_id(raw: Raw, version: int, packet_id: int) -> None:
    """MQTT-3.8.4-1: the server answers a SUBSCRIBE with a SUBACK; MQTT-3.8.4-2: with the same
    Packet Identifier (MQTT-2.3.1-7). Exact bytes: 90 03 <id> <granted QoS>."""
    client = accepted(raw, "v311-suback", version)
    client.send_raw(raw_subscribe(packet_id, ("v311/sa/t", 1)))
    expected = b"\x90\x03" + packet_id.to_bytes(2, "big") + b"\x01"
    assert read_raw_packet(client, timeout=2) == expected


@BOTH
def test_MQTT_3_8_4_3_identical_filter_replaces_subscription(raw: Raw, version: int) -> None:
    """MQTT-3.8.4-3: subscribing again with an identical Topic Filter replaces the subscription
    (new maximum QoS, still one subscription: one copy per message) and re-sends the retained
    messages matching it."""
    pub = accepted(raw, "v311-replace-pub", version)
    pub.publish("v311/replace/t", b"retained", qos=1, retain=True)
    client = accepted(raw, "v311-replace", version)
    suback, before = subscribe_collecting(client, ("v311/replace/+", 0))
    first = publishes(before + client.recv_all(0.5))
    assert [(p.payload, p.qos, p.retain) for p in first] == [(b"retained", 0, True)]
    suback, before = subscribe_collecting(client, ("v311/replace/+", 2))
    assert suback.reason_codes == [2]
    again = publishes(before + client.recv_all(0.5))
    assert [(p.payload, p.qos, p.retain) for p in again] == [(b"retained", 1, True)]
    client.ack(again[0])
    pub.publish("v311/replace/t", b"live", qos=2)
    got = receive_publishes(client, 1, timeout=2)
    assert [(p.payload, p.qos) for p in got] == [(b"live", 2)]
    client.expect_nothing(0.3)


@BOTH
def test_MQTT_3_8_4_4_multiple_filters_one_suback(raw: Raw, version: int) -> None:
    """MQTT-3.8.4-4: a SUBSCRIBE with several filters is handled like that many SUBSCRIBEs, with
    one combined SUBACK: each subscription is made, and only one SUBACK comes back."""
    client = accepted(raw, "v311-multi", version)
    filters = [("v311/multi/a", 0), ("v311/multi/b/#", 1), ("v311/multi/+/c", 2)]
    client.send_raw(raw_subscribe(42, *filters))
    suback = client.expect(Suback, timeout=2)
    assert (suback.packet_id, suback.reason_codes) == (42, [0, 1, 2])
    client.expect_nothing(0.3)
    pub = accepted(raw, "v311-multi-pub", version)
    for topic in ["v311/multi/a", "v311/multi/b/x", "v311/multi/z/c", "v311/multi/none"]:
        pub.publish(topic, topic.encode(), qos=2)
    got = receive_publishes(client, 3, timeout=2)
    assert sorted((p.topic, p.qos) for p in got) == [
        ("v311/multi/a", 0),
        ("v311/multi/b/x", 1),
        ("v311/multi/z/c", 2),
    ]


@BOTH
def test_MQTT_3_8_4_5_one_return_code_per_filter(raw: Raw, version: int) -> None:
    """MQTT-3.8.4-5: the SUBACK has one return code per Topic Filter / QoS pair, each the maximum
    QoS granted (here what was asked: the server supports QoS 2)."""
    client = accepted(raw, "v311-codes", version)
    filters = [(f"v311/codes/{n}", n % 3) for n in range(7)]
    client.send_raw(raw_subscribe(5, *filters))
    assert client.expect(Suback, timeout=2).reason_codes == [n % 3 for n in range(7)]


@BOTH
@pytest.mark.parametrize("sub_qos", [0, 1, 2])
def test_MQTT_3_8_4_6_delivered_qos_is_minimum(raw: Raw, version: int, sub_qos: int) -> None:
    """MQTT-3.8.4-6: a message is delivered at the minimum of its published QoS and the maximum
    QoS granted to the subscription."""
    client = accepted(raw, "v311-minqos", version)
    assert client.subscribe("v311/minqos/t", sub_qos).reason_codes == [sub_qos]
    pub = accepted(raw, "v311-minqos-pub", version)
    for published in (0, 1, 2):
        pub.publish("v311/minqos/t", bytes([published]), qos=published)
    got = receive_publishes(client, 3, timeout=2)
    assert [(p.payload[0], p.qos) for p in got] == [(q, min(q, sub_qos)) for q in (0, 1, 2)]


def test_MQTT_3_8_4_6_granted_qos_capped_by_max_qos(make_broker: Callable[..., Any]) -> None:
    """MQTT-3.8.4-6 with a server that grants less than asked (``max_qos 1``, as in Mosquitto):
    QoS 2 requests are granted QoS 1 and messages come at QoS 1 at most. Also MQTT-3.9.3-2: only
    0x00, 0x01, 0x02 and 0x80 are used as return codes."""
    broker = make_broker(max_qos=1)
    with (
        RawClient.to(broker) as client,
        RawClient.to(broker) as pub,
    ):
        assert client.connect("v311-maxqos").reason_code == 0
        assert pub.connect("v311-maxqos-pub").reason_code == 0
        client.send_raw(raw_subscribe(1, ("v311/maxqos/a", 2), ("v311/maxqos/b", 1)))
        codes = client.expect(Suback, timeout=2).reason_codes
        assert codes == [1, 1]
        pub.publish("v311/maxqos/a", b"x", qos=1)
        message = client.expect(Publish, timeout=2)
        assert message.qos == 1


# -- 3.9.3: SUBACK payload -----------------------------------------------------------------


@BOTH
def test_MQTT_3_9_3_1_return_codes_in_filter_order(raw: Raw, version: int) -> None:
    """MQTT-3.9.3-1: the SUBACK's return codes are in the order of the SUBSCRIBE's Topic Filters.
    Also MQTT-3.9.3-2: each is 0x00, 0x01, 0x02 or 0x80."""
    client = accepted(raw, "v311-order", version)
    requested = [2, 0, 1, 1, 0, 2, 2, 0]
    pid = client.next_packet_id()
    client.send(Subscribe(pid, [Subscription(f"v311/ord/{i}", q) for i, q in enumerate(requested)]))
    codes = client.expect(Suback, timeout=2).reason_codes
    assert codes == requested
    assert set(codes) <= {0x00, 0x01, 0x02, 0x80}


# -- 3.10: UNSUBSCRIBE ---------------------------------------------------------------------


@pytest.mark.parametrize("first_byte", [0xA0, 0xA1, 0xA3, 0xA6, 0xAA])
def test_MQTT_3_10_1_1_unsubscribe_reserved_bits_close(raw: Raw, first_byte: int) -> None:
    """MQTT-3.10.1-1: UNSUBSCRIBE's fixed header flags must be 0010; the server treats anything
    else as malformed and closes the connection. (MQTT 3.1 had no such rule.)"""
    client = accepted(raw, "v311-unsubflags")
    client.subscribe("v311/uf/t", 0)
    client.send_raw(raw_unsubscribe(1, "v311/uf/t", first_byte=first_byte))
    expect_closed_silently(client)


@BOTH
@pytest.mark.parametrize("bad", [b"v311/\xc0\xaf", b"v311/\xed\xa0\x80", b"v311/\x00"])
def test_MQTT_3_10_3_1_unsubscribe_filter_ill_formed_utf8_closes(
    raw: Raw, version: int, bad: bytes
) -> None:
    """MQTT-3.10.3-1: UNSUBSCRIBE's Topic Filters are UTF-8 encoded strings; ill-formed UTF-8 or
    U+0000 in one closes the connection without an UNSUBACK."""
    client = accepted(raw, "v311-unsubutf8", version)
    client.send_raw(raw_unsubscribe(1, "v311/good", bad))
    expect_closed_silently(client)


def test_MQTT_3_10_3_2_unsubscribe_without_filters_closes(raw: Raw) -> None:
    """MQTT-3.10.3-2: an UNSUBSCRIBE must carry at least one Topic Filter; one with no payload is
    a protocol violation and the connection is closed."""
    client = accepted(raw, "v311-unsubempty")
    client.send_raw(raw_packet(0xA2, b"\x00\x01"))
    expect_closed_silently(client)


@BOTH
def test_MQTT_3_10_4_1_unsubscribe_compares_filters_exactly(raw: Raw, version: int) -> None:
    """MQTT-3.10.4-1: an UNSUBSCRIBE filter is compared character by character with the client's
    filters, wildcards included, and only an exact match is deleted: 'v311/ex/+' does not remove
    'v311/ex/t' (nor do 'V311/ex/t' or 'v311/ex/t/'), 'v311/ex2/t' does not remove 'v311/ex2/+'.
    """
    client = accepted(raw, "v311-exact", version)
    client.subscribe("v311/ex/t", 1)
    client.subscribe("v311/ex2/+", 1)
    client.unsubscribe("v311/ex/+", "V311/ex/t", "v311/ex/t/", "v311/ex2/t", "v311/ex2/#")
    pub = accepted(raw, "v311-exact-pub", version)
    pub.publish("v311/ex/t", b"1", qos=1)
    pub.publish("v311/ex2/t", b"2", qos=1)
    assert [p.payload for p in receive_publishes(client, 2, timeout=2)] == [b"1", b"2"]
    client.unsubscribe("v311/ex/t")
    pub.publish("v311/ex/t", b"3", qos=1)
    pub.publish("v311/ex2/t", b"4", qos=1)
    assert [p.payload for p in receive_publishes(client, 1, timeout=2)] == [b"4"]
    client.unsubscribe("v311/ex2/+")
    pub.publish("v311/ex2/t", b"5", qos=1)
    client.expect_nothing(0.3)


@BOTH
def test_MQTT_3_10_4_2_no_new_messages_after_unsubscribe(raw: Raw, version: int) -> None:
    """MQTT-3.10.4-2: once it has processed an UNSUBSCRIBE the server adds no new messages for
    that subscription."""
    client = accepted(raw, "v311-stop", version)
    client.subscribe("v311/stop/t", 1)
    pub = accepted(raw, "v311-stop-pub", version)
    pub.publish("v311/stop/t", b"before", qos=1)
    assert [p.payload for p in receive_publishes(client, 1, timeout=2)] == [b"before"]
    client.unsubscribe("v311/stop/t")
    for n in range(5):
        pub.publish("v311/stop/t", b"after %d" % n, qos=n % 3)
    client.expect_nothing(0.5)


@BOTH
def test_MQTT_3_10_4_3_inflight_delivery_completed_after_unsubscribe(
    raw: Raw, version: int
) -> None:
    """MQTT-3.10.4-3: the server completes the delivery of QoS 1 and QoS 2 messages it had started
    to send: a QoS 2 flow begun before the UNSUBSCRIBE still gets its PUBREL, and an
    unacknowledged QoS 1 message is still re-sent when the persistent session resumes."""
    client = accepted(raw, "v311-finish", version, clean_start=False)
    client.subscribe("v311/finish/#", 2)
    pub = accepted(raw, "v311-finish-pub", version)
    pub.publish("v311/finish/q2", b"q2", qos=2)
    pub.publish("v311/finish/q1", b"q1", qos=1)
    q2 = client.expect(Publish, timeout=2)
    q1 = client.expect(Publish, timeout=2)
    assert (q2.payload, q1.payload) == (b"q2", b"q1")
    client.unsubscribe("v311/finish/#")
    client.send(Pubrec(q2.packet_id or 0))
    assert client.expect(Pubrel, timeout=2).packet_id == q2.packet_id
    client.send(Pubcomp(q2.packet_id or 0))
    client.close()  # q1 left unacknowledged
    resumed = accepted(raw, "v311-finish", version, clean_start=False)
    again = resumed.expect(Publish, timeout=2)
    assert (again.payload, again.packet_id, again.dup) == (b"q1", q1.packet_id, True)


@BOTH
@pytest.mark.parametrize("packet_id", [1, 0xABCD, 0xFFFF])
def test_MQTT_3_10_4_4_unsuback_with_same_packet_id(raw: Raw, version: int, packet_id: int) -> None:
    """MQTT-3.10.4-4: the server answers an UNSUBSCRIBE with an UNSUBACK carrying the same Packet
    Identifier (MQTT-2.3.1-7). Exact bytes: B0 02 <id>."""
    client = accepted(raw, "v311-unsuback", version)
    client.subscribe("v311/ua/t", 0)
    client.send_raw(raw_unsubscribe(packet_id, "v311/ua/t"))
    assert read_raw_packet(client, timeout=2) == b"\xb0\x02" + packet_id.to_bytes(2, "big")


@BOTH
def test_MQTT_3_10_4_5_unsuback_even_without_match(raw: Raw, version: int) -> None:
    """MQTT-3.10.4-5: the server sends an UNSUBACK even when no Topic Filter was deleted."""
    client = accepted(raw, "v311-nomatch", version)
    client.send_raw(raw_unsubscribe(77, "v311/never/subscribed", "v311/+/neither"))
    assert read_raw_packet(client, timeout=2) == b"\xb0\x02\x00\x4d"


@BOTH
def test_MQTT_3_10_4_6_multiple_filters_one_unsuback(raw: Raw, version: int) -> None:
    """MQTT-3.10.4-6: an UNSUBSCRIBE with several filters is handled like that many UNSUBSCRIBEs
    with a single UNSUBACK: every listed subscription goes, the others stay."""
    client = accepted(raw, "v311-multiunsub", version)
    for topic_filter in ("v311/mu/a", "v311/mu/b", "v311/mu/c"):
        client.subscribe(topic_filter, 0)
    client.send_raw(raw_unsubscribe(9, "v311/mu/a", "v311/mu/c", "v311/mu/zzz"))
    assert read_raw_packet(client, timeout=2) == b"\xb0\x02\x00\x09"
    client.expect_nothing(0.3)
    pub = accepted(raw, "v311-multiunsub-pub", version)
    for topic in ("v311/mu/a", "v311/mu/b", "v311/mu/c"):
        pub.publish(topic, topic.encode())
    assert [p.topic for p in publishes(client.recv_all(0.5))] == ["v311/mu/b"]
