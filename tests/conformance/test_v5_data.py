"""MQTT 5.0 chapters 1, 2, 4.2 and 4.13: data representation, packet format, error handling.

Each test is named after the normative statement it checks (MQTT-x.y.z-n -> test_MQTT_x_y_z_n_*).
Malformed input is built byte by byte (``tests.rawclient.raw_*``) because the codec will not encode
it; what the broker sends back is read through the codec, or byte for byte through ``tap``.
"""

from __future__ import annotations

from typing import Any

import pytest

from midge.codec.packets import (
    Connack,
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
from tests.conformance.test_v5_support import (
    MALFORMED,
    PROTOCOL_ERROR,
    SOON,
    Clients,
    frames,
    p_pair,
    p_str,
    p_u16,
    p_u32,
    p_varint,
    props,
    raw_ack,
    tap,
)
from tests.rawclient import (
    Will,
    fixed_header,
    mqtt_string,
    raw_connect,
    raw_packet,
    raw_publish,
    raw_subscribe,
    raw_unsubscribe,
)


def _varint_at(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _body(frame: bytes) -> bytes:
    """A packet's bytes after the fixed header."""
    header = fixed_header(frame)
    assert header is not None, frame
    return frame[header[1] :]


# -- 1.5.4 UTF-8 Encoded String -----------------------------------------------------------------

SURROGATE = b"\xed\xa0\x80"  # U+D800 encoded as if it were a character
NOT_UTF8 = b"\xff"
OVERLONG_SLASH = b"\xc0\xaf"


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(raw_publish(b"a/" + SURROGATE, version=5), id="publish-topic-surrogate"),
        pytest.param(raw_publish(b"a/" + NOT_UTF8, version=5), id="publish-topic-0xff"),
        pytest.param(raw_publish(b"a/" + OVERLONG_SLASH, version=5), id="publish-topic-overlong"),
        pytest.param(raw_subscribe(1, (b"a/" + SURROGATE, 0), version=5), id="subscribe-filter"),
        pytest.param(raw_unsubscribe(1, b"a/" + SURROGATE, version=5), id="unsubscribe-filter"),
        pytest.param(
            raw_publish("a", version=5, properties=props(p_str(Prop.CONTENT_TYPE, SURROGATE))),
            id="publish-content-type",
        ),
    ],
)
def test_MQTT_1_5_4_1_ill_formed_utf8_is_malformed(clients: Clients, packet: bytes) -> None:
    """MQTT-1.5.4-1: UTF-8 strings are well-formed, without surrogates (U+D800..U+DFFF); ill-formed
    UTF-8 is a Malformed Packet, so the server sends DISCONNECT 0x81 and closes (MQTT-4.13.1-1)."""
    c = clients.connect("utf8")
    c.send_raw(packet)
    c.expect_disconnect(MALFORMED)


def test_MQTT_1_5_4_1_ill_formed_utf8_in_connect_is_refused(clients: Clients) -> None:
    """MQTT-1.5.4-1 in a CONNECT: the Client Identifier with a surrogate is a Malformed Packet; the
    server may answer CONNACK 0x81 and must close (MQTT-3.1.4-1)."""
    c = clients.open()
    c.send_raw(raw_connect(b"id" + SURROGATE, version=5))
    c.expect_refused({MALFORMED})


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(raw_publish(b"a\x00b", version=5), id="publish-topic"),
        pytest.param(raw_subscribe(1, (b"a\x00b", 0), version=5), id="subscribe-filter"),
        pytest.param(
            raw_publish("a", version=5, properties=props(p_pair(b"k\x00", "v"))),
            id="user-property-name",
        ),
        pytest.param(
            raw_publish("a", version=5, properties=props(p_str(Prop.RESPONSE_TOPIC, b"r\x00"))),
            id="response-topic",
        ),
    ],
)
def test_MQTT_1_5_4_2_null_character_is_malformed(clients: Clients, packet: bytes) -> None:
    """MQTT-1.5.4-2: a UTF-8 Encoded String must not contain U+0000; receiving one is a Malformed
    Packet (DISCONNECT 0x81, then close)."""
    c = clients.connect("nul")
    c.send_raw(packet)
    c.expect_disconnect(MALFORMED)


def test_MQTT_1_5_4_2_null_character_in_connect_is_refused(clients: Clients) -> None:
    """MQTT-1.5.4-2 in a CONNECT (the User Name): refused, at most CONNACK 0x81, then closed."""
    c = clients.open()
    c.send_raw(raw_connect("nul", version=5, username=b"us\x00er"))
    c.expect_refused({MALFORMED})


def test_MQTT_1_5_4_3_bom_is_not_stripped(clients: Clients) -> None:
    """MQTT-1.5.4-3: 0xEF 0xBB 0xBF is U+FEFF wherever it appears and must not be skipped over or
    stripped: the topic, and string properties, reach the subscriber with it in place; the topic
    with the BOM is a different topic from the one without."""
    sub = clients.connect("bom-sub")
    plain = clients.connect("bom-plain")
    pub = clients.connect("bom-pub")
    topic = "bom/\ufeffx"
    assert sub.sub("bom/+").reason_codes == [0]
    assert plain.sub("bom/x").reason_codes == [0]
    properties: dict[int, Any] = {
        Prop.CONTENT_TYPE: "\ufefftext/plain",
        Prop.USER_PROPERTY: [("\ufeffk", "v\ufeff")],
    }
    pub.pub(topic, b"\xef\xbb\xbf payload", qos=1, properties=properties)
    [msg] = sub.publishes(1)
    assert msg.topic == topic
    assert msg.payload == b"\xef\xbb\xbf payload"
    assert msg.properties[Prop.CONTENT_TYPE] == "\ufefftext/plain"
    assert msg.properties[Prop.USER_PROPERTY] == [("\ufeffk", "v\ufeff")]
    plain.no_publish()


# -- 1.5.5 Variable Byte Integer ----------------------------------------------------------------


def test_MQTT_1_5_5_1_server_uses_minimal_variable_byte_integers(clients: Clients) -> None:
    """MQTT-1.5.5-1: every Variable Byte Integer the server sends uses the fewest bytes: Remaining
    Lengths around the 1/2/3-byte boundaries, and a Subscription Identifier of 200 (2 bytes)."""
    sub = clients.open()
    wire = tap(sub)
    sub.connect5("vbi-sub")
    sub.sub("vbi/#", properties={Prop.SUBSCRIPTION_IDENTIFIER: [200]})
    pub = clients.connect("vbi-pub")
    sizes = [0, 100, 120, 127, 128, 200, 16_370, 16_400, 20_000]
    for size in sizes:
        pub.pub("vbi/t", bytes(size), qos=1)
    got = sub.publishes(len(sizes))
    assert [len(p.payload) for p in got] == sizes
    assert all(p.properties.get(Prop.SUBSCRIPTION_IDENTIFIER) == [200] for p in got)
    sub.ping()
    publishes = [f for f in frames(wire) if f[0] >> 4 == 3]
    assert len(publishes) == len(sizes)
    for frame in publishes:
        assert bytes([Prop.SUBSCRIPTION_IDENTIFIER, 0xC8, 0x01]) in _body(frame)


# -- 1.5.7 UTF-8 String Pair --------------------------------------------------------------------


@pytest.mark.parametrize(
    "pair",
    [
        pytest.param(p_pair("name", b"\xc3\x28"), id="value-not-utf8"),
        pytest.param(p_pair(SURROGATE, "value"), id="name-surrogate"),
        pytest.param(p_pair("name", b"va\x00lue"), id="value-null"),
    ],
)
def test_MQTT_1_5_7_1_string_pair_must_be_utf8(clients: Clients, pair: bytes) -> None:
    """MQTT-1.5.7-1: both strings of a UTF-8 String Pair follow the UTF-8 string rules; a pair that
    does not is a Malformed Packet (DISCONNECT 0x81, close)."""
    c = clients.connect("pair")
    c.send_raw(raw_publish("pair/t", b"x", version=5, properties=props(pair)))
    c.expect_disconnect(MALFORMED)


# -- 2.1.3 Flags --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(raw_packet(0xC1), id="pingreq-0001"),
        pytest.param(raw_packet(0xC8), id="pingreq-1000"),
        pytest.param(raw_ack(0x42, 1), id="puback-0010"),
        pytest.param(raw_ack(0x51, 1), id="pubrec-0001"),
        pytest.param(raw_ack(0x60, 1), id="pubrel-0000"),
        pytest.param(raw_ack(0x72, 1), id="pubcomp-0010"),
        pytest.param(raw_subscribe(1, ("a", 0), first_byte=0x80, version=5), id="subscribe-0000"),
        pytest.param(raw_unsubscribe(1, "a", first_byte=0xA3, version=5), id="unsubscribe-0011"),
        pytest.param(raw_packet(0xE1), id="disconnect-0001"),
    ],
)
def test_MQTT_2_1_3_1_invalid_reserved_flags_are_malformed(clients: Clients, packet: bytes) -> None:
    """MQTT-2.1.3-1: reserved fixed-header flag bits must be as Table 2-2 lists; other values are a
    Malformed Packet (DISCONNECT 0x81, close)."""
    c = clients.connect("flags")
    c.send_raw(packet)
    c.expect_disconnect(MALFORMED)


def test_MQTT_2_1_3_1_invalid_flags_on_connect_are_refused(clients: Clients) -> None:
    """MQTT-2.1.3-1 on CONNECT (flags 0001): malformed; at most CONNACK 0x81, then closed."""
    c = clients.open()
    c.send_raw(raw_connect("flags", version=5, first_byte=0x11))
    c.expect_refused({MALFORMED})


def test_MQTT_2_1_3_1_server_sets_reserved_flags(clients: Clients) -> None:
    """MQTT-2.1.3-1 for what the server sends: CONNACK, SUBACK, UNSUBACK, PUBACK, PUBREC, PUBREL,
    PUBCOMP, PINGRESP carry the flags of Table 2-2 (0000, and 0010 for PUBREL)."""
    c = clients.open()
    wire = tap(c)
    c.connect5("flags-out")
    c.sub("fl/#", qos=2)
    c.pub("fl/1", b"1", qos=1)  # PUBACK (and a PUBLISH back)
    c.pub("fl/2", b"2", qos=2)  # PUBREC, PUBCOMP (and a PUBLISH back)
    for msg in c.publishes(2):
        if msg.qos == 1:
            c.send(Puback(msg.packet_id or 0))
        else:
            c.send(Pubrec(msg.packet_id or 0))  # the server answers PUBREL
            c.wait_for(Pubrel)
            c.send(Pubcomp(msg.packet_id or 0))
    c.unsub("fl/#")
    c.ping()
    seen = set()
    for frame in frames(wire):
        kind, flags = frame[0] >> 4, frame[0] & 0x0F
        seen.add(kind)
        if kind == 3:
            continue  # PUBLISH: DUP/QoS/RETAIN, checked by the 3.3.1 tests
        expected = 0b0010 if kind == 6 else 0
        assert flags == expected, f"packet type {kind} sent with flags {flags:04b}"
    assert {2, 4, 5, 6, 7, 9, 11, 13} <= seen


# -- 2.2.1 Packet Identifier --------------------------------------------------------------------


def test_MQTT_2_2_1_2_qos0_publish_has_no_packet_identifier(clients: Clients) -> None:
    """MQTT-2.2.1-2: a QoS 0 PUBLISH has no Packet Identifier. A QoS 1 message delivered on a QoS 0
    subscription goes out as QoS 0: topic, Property Length, properties, then the payload only."""
    sub = clients.open()
    wire = tap(sub)
    sub.connect5("pid0-sub")
    sub.sub("pid0/t", qos=0)
    pub = clients.connect("pid0-pub")
    pub.pub("pid0/t", b"PAYLOAD", qos=1)
    [msg] = sub.publishes(1)
    assert msg.qos == 0 and msg.packet_id is None and msg.payload == b"PAYLOAD"
    [frame] = [f for f in frames(wire) if f[0] >> 4 == 3]
    assert (frame[0] >> 1) & 3 == 0
    body = _body(frame)
    topic = mqtt_string("pid0/t")
    assert body.startswith(topic)
    prop_len, pos = _varint_at(body, len(topic))
    assert body[pos + prop_len :] == b"PAYLOAD"


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(raw_publish("a", b"x", qos=1, packet_id=0, version=5), id="publish-qos1"),
        pytest.param(raw_publish("a", b"x", qos=2, packet_id=0, version=5), id="publish-qos2"),
        pytest.param(raw_subscribe(0, ("a", 0), version=5), id="subscribe"),
        pytest.param(raw_unsubscribe(0, "a", version=5), id="unsubscribe"),
    ],
)
def test_MQTT_2_2_1_3_packet_identifier_zero_is_refused(clients: Clients, packet: bytes) -> None:
    """MQTT-2.2.1-3 (a Client requirement) seen from the server: Packet Identifier 0 is not a valid
    identifier, so the packet is refused: DISCONNECT 0x81 or 0x82, then close (MQTT-4.13.1-1)."""
    c = clients.connect("pid-zero")
    c.send_raw(packet)
    c.expect_disconnect({MALFORMED, PROTOCOL_ERROR})


def test_MQTT_2_2_1_4_server_packet_identifiers_nonzero_and_unused(clients: Clients) -> None:
    """MQTT-2.2.1-4: each new QoS>0 PUBLISH from the server has a non-zero Packet Identifier not in
    use: QoS 1 and QoS 2 messages in flight together all have distinct identifiers (one set)."""
    sub = clients.connect("ids-sub")
    sub.sub("ids/#", qos=2)
    pub = clients.connect("ids-pub")
    for i in range(10):
        pub.pub(f"ids/{i}", b"m", qos=1 + i % 2)
    first = sub.publishes(10)
    ids = [p.packet_id for p in first]
    assert all(ids) and len(set(ids)) == 10, ids
    # Complete the QoS 1 ones only; the QoS 2 ones stay in use.
    in_use = set()
    for msg in first:
        if msg.qos == 1:
            sub.send(Puback(msg.packet_id or 0))
        else:
            in_use.add(msg.packet_id)
    for i in range(10):
        pub.pub(f"ids/{i}", b"n", qos=1)
    second = sub.publishes(10)
    new_ids = [p.packet_id for p in second]
    assert all(new_ids) and len(set(new_ids)) == 10, new_ids
    assert not in_use & set(new_ids), "a Packet Identifier still in use was reused"


def test_MQTT_2_2_1_5_acks_carry_the_publish_packet_identifier(clients: Clients) -> None:
    """MQTT-2.2.1-5: PUBACK, PUBREC, PUBREL and PUBCOMP carry the Packet Identifier of the PUBLISH
    they acknowledge, as the server's answers to a publisher and as the server's PUBREL."""
    c = clients.connect("ackid")
    for pid in (1, 0x1234, 0xFFFF):
        c.send(Publish("ackid/1", b"x", 1, packet_id=pid))
        assert c.expect(Puback).packet_id == pid
    for pid in (0x0101, 0xFFFE):
        c.send(Publish("ackid/2", b"x", 2, packet_id=pid))
        assert c.expect(Pubrec).packet_id == pid
        c.send(Pubrel(pid))
        assert c.expect(Pubcomp).packet_id == pid
    sub = clients.connect("ackid-sub")
    sub.sub("ackid/3", qos=2)
    c.pub("ackid/3", b"y", qos=2)
    [msg] = sub.publishes(1)
    sub.send(Pubrec(msg.packet_id or 0))
    assert sub.wait_for(Pubrel).packet_id == msg.packet_id


def test_MQTT_2_2_1_6_suback_unsuback_carry_the_request_packet_identifier(
    clients: Clients,
) -> None:
    """MQTT-2.2.1-6: SUBACK and UNSUBACK carry the Packet Identifier of their SUBSCRIBE and
    UNSUBSCRIBE."""
    c = clients.connect("subid")
    for pid in (1, 0xBEEF, 0xFFFF):
        c.send(Subscribe(pid, [Subscription("subid/t", 1)]))
        assert c.wait_for(Suback).packet_id == pid
        c.send(Unsubscribe(pid, ["subid/t"]))
        assert c.wait_for(Unsuback).packet_id == pid


# -- 2.2.2 Properties ---------------------------------------------------------------------------


def test_MQTT_2_2_2_1_no_properties_is_property_length_zero(clients: Clients) -> None:
    """MQTT-2.2.2-1: with no properties the Property Length 0 is still sent: a SUBACK and UNSUBACK
    for one filter are Packet Identifier, 0x00, one Reason Code; a PUBLISH without properties has
    0x00 between its Topic Name and payload."""
    c = clients.open()
    wire = tap(c)
    c.connect5("plen")
    c.send(Subscribe(0x0A0B, [Subscription("plen/t", 1)]))
    c.wait_for(Suback)
    c.send(Unsubscribe(0x0C0D, ["plen/none"]))
    c.wait_for(Unsuback)
    c.sub("plen/u", qos=0)
    pub = clients.connect("plen-pub")
    pub.pub("plen/u", b"P")
    c.publishes(1)
    c.ping()
    by_type: dict[int, list[bytes]] = {}
    for frame in frames(wire):
        by_type.setdefault(frame[0] >> 4, []).append(_body(frame))
    assert by_type[9][0][:3] == b"\x0a\x0b\x00" and len(by_type[9][0]) == 4  # SUBACK
    assert by_type[11][0][:3] == b"\x0c\x0d\x00" and len(by_type[11][0]) == 4  # UNSUBACK
    assert by_type[3][0] == mqtt_string("plen/u") + b"\x00" + b"P"  # PUBLISH


# -- 4.2 Network Connections --------------------------------------------------------------------


def test_MQTT_4_2_1_ordered_lossless_byte_stream_transport(clients: Clients) -> None:
    """MQTT-4.2-1: the server supports a transport giving an ordered, lossless byte stream: TCP.
    Packets split across writes and coalesced into one write are both understood."""
    c = clients.open()
    data = raw_connect("tcp", version=5) + raw_packet(0xC0)
    for byte in data[:5]:
        c.send_raw(bytes([byte]))
    c.send_raw(data[5:] + raw_packet(0xC0) * 3)
    packets = [c.recv(SOON) for _ in range(5)]
    assert isinstance(packets[0], Connack) and packets[0].reason_code == 0
    assert all(isinstance(p, Pingresp) for p in packets[1:])
    c.send(Pingreq())
    c.expect(Pingresp)


# -- 4.13 Handling errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("packet", "reasons"),
    [
        pytest.param(raw_packet(0x00), {MALFORMED, PROTOCOL_ERROR}, id="packet-type-0"),
        pytest.param(b"\x30\xff\xff\xff\xff\x01", {MALFORMED}, id="remaining-length-5-bytes"),
        pytest.param(raw_packet(0x30, b"\x00\x05ab"), {MALFORMED}, id="topic-runs-past-end"),
        pytest.param(
            raw_publish("e", version=5, properties=props(p_u32(Prop.SESSION_EXPIRY_INTERVAL, 1))),
            {MALFORMED},
            id="property-not-allowed-in-publish",
        ),
        pytest.param(
            raw_publish("e", version=5, properties=b"\x05\x02\x00\x00"),
            {MALFORMED},
            id="property-length-past-end",
        ),
        pytest.param(
            raw_publish(
                "e",
                version=5,
                properties=props(
                    p_u32(Prop.MESSAGE_EXPIRY_INTERVAL, 1), p_u32(Prop.MESSAGE_EXPIRY_INTERVAL, 2)
                ),
            ),
            {MALFORMED, PROTOCOL_ERROR},
            id="property-twice",
        ),
        pytest.param(
            raw_subscribe(1, ("e", 0), version=5, properties=props(p_varint(0x0B, 0))),
            {MALFORMED, PROTOCOL_ERROR},
            id="subscription-identifier-0",
        ),
        pytest.param(
            raw_publish("e", version=5, properties=props(p_u16(Prop.TOPIC_ALIAS, 1), b"\x7f")),
            {MALFORMED},
            id="unknown-property",
        ),
        pytest.param(raw_packet(0x20, b"\x00\x00\x00"), {PROTOCOL_ERROR}, id="connack-to-server"),
        pytest.param(raw_packet(0x90, b"\x00\x01\x00\x00"), {PROTOCOL_ERROR}, id="suback-in"),
    ],
)
def test_MQTT_4_13_1_1_server_closes_on_malformed_packet_or_protocol_error(
    clients: Clients, packet: bytes, reasons: set[int]
) -> None:
    """MQTT-4.13.1-1: on a Malformed Packet or Protocol Error the server closes the connection
    (after a DISCONNECT with the reason code, which Mosquitto and midge send). The connection's
    Will is published: the close is not a normal disconnection."""
    watcher = clients.connect("err-watch")
    watcher.sub("err/will")
    c = clients.connect("err", will=Will("err/will", b"gone"))
    c.send_raw(packet)
    c.expect_disconnect(reasons)
    [will] = watcher.publishes(1)
    assert will.topic == "err/will"


def test_MQTT_4_13_2_1_reason_0x80_or_more_closes_the_connection(clients: Clients) -> None:
    """MQTT-4.13.2-1: a CONNACK or DISCONNECT with a Reason Code of 0x80 or more is followed by the
    close of the Network Connection: a refused CONNECT (unsupported Authentication Method) and a
    server DISCONNECT (Protocol Error: a second CONNECT)."""
    refused = clients.open()
    connack = refused.connect5(
        "rc80", ok=False, properties={Prop.AUTHENTICATION_METHOD: "no-such-method"}
    )
    assert connack.reason_code >= 0x80
    refused.expect_closed()
    c = clients.connect("rc80-b")
    c.send_raw(raw_connect("rc80-b", version=5))
    disconnect = c.expect_disconnect(PROTOCOL_ERROR)
    assert disconnect.reason_code >= 0x80
