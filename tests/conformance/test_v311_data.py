"""MQTT 3.1.1 chapters 1, 2, 4.8 and 7: data representation, packet format, errors, transport.

UTF-8 strings (1.5.3), fixed header flags (2.2.2), Packet Identifiers (2.3.1), protocol violations
and transient errors (4.8) and the byte-stream transport (7.1.1), server side. One test per
normative statement, named after its id; tests that also apply to MQTT 3.1 run for protocol
levels 3 and 4.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from midge.codec.packets import (
    Connack,
    Pingreq,
    Pingresp,
    Puback,
    Publish,
    Suback,
    Unsuback,
    Will,
)
from tests.rawclient import (
    Raw,
    RawClient,
    accepted,
    expect_closed_silently,
    mqtt_string,
    raw_connect,
    raw_packet,
    raw_publish,
    raw_subscribe,
    raw_unsubscribe,
    read_raw_packet,
)

BOTH = pytest.mark.parametrize("version", [3, 4], ids=["mqtt31", "mqtt311"])

ILL_FORMED = [
    pytest.param(b"\xc0\xaf", id="overlong-2"),
    pytest.param(b"\xe0\x80\xaf", id="overlong-3"),
    pytest.param(b"\xed\xa0\x80", id="high-surrogate"),
    pytest.param(b"\xed\xbf\xbf", id="low-surrogate"),
    pytest.param(b"\xff", id="ff"),
    pytest.param(b"\x80", id="lone-continuation"),
    pytest.param(b"\xe2\x82", id="truncated"),
    pytest.param(b"\xf4\x90\x80\x80", id="above-10ffff"),
]


# -- 1.5.3: UTF-8 encoded strings --------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("bad", ILL_FORMED)
@pytest.mark.parametrize("where", ["publish-topic", "subscribe-filter", "client-id"])
def test_MQTT_1_5_3_1_ill_formed_utf8_closes(
    raw: Raw, version: int, bad: bytes, where: str
) -> None:
    """MQTT-1.5.3-1: a packet containing ill-formed UTF-8 (overlong forms, surrogates U+D800 to
    U+DFFF, bytes that cannot start a character, truncated sequences, code points past U+10FFFF)
    makes the server close the connection. Nothing of it is acted on."""
    watcher = accepted(raw, "v311-utf8-watch", version)
    watcher.subscribe("#", 0)
    text = b"v311/" + bad + b"/x"
    if where == "client-id":
        client = raw(version)
        client.send_raw(raw_connect(text, version=version))
    else:
        client = accepted(raw, "v311-utf8", version)
        if where == "publish-topic":
            client.send_raw(raw_publish(text, b"x"))
        else:
            client.send_raw(raw_subscribe(1, (text, 0)))
    expect_closed_silently(client)
    watcher.expect_nothing(0.2)


@BOTH
@pytest.mark.parametrize(
    "where", ["client-id", "will-topic", "publish-topic", "filter", "unsubscribe"]
)
def test_MQTT_1_5_3_2_null_character_closes(raw: Raw, version: int, where: str) -> None:
    """MQTT-1.5.3-2: a UTF-8 string must not contain U+0000; a packet with one in any string
    field makes the server close the connection (no CONNACK for a CONNECT). (The User Name is
    checked by the MQTT-3.1.3-11 test.)"""
    nul = b"v311/a\x00b"
    if where in ("client-id", "will-topic"):
        client = raw(version)
        if where == "client-id":
            client.send_raw(raw_connect(nul, version=version))
        else:
            client.send_raw(raw_connect("v311-nul", version=version, will_topic=nul))
    else:
        client = accepted(raw, "v311-nul", version)
        client.send_raw(
            {
                "publish-topic": raw_publish(nul, b"x"),
                "filter": raw_subscribe(1, (nul, 0)),
                "unsubscribe": raw_unsubscribe(1, nul),
            }[where]
        )
    expect_closed_silently(client)


@BOTH
def test_MQTT_1_5_3_3_bom_not_stripped(raw: Raw, version: int) -> None:
    """MQTT-1.5.3-3: EF BB BF is U+FEFF wherever it appears and is never skipped or stripped: a
    topic with it is a different topic from the one without, and it reaches the subscriber
    intact, as do the other strings (client identifier, payload bytes untouched)."""
    bom = "\ufeff"
    with_bom = accepted(raw, bom + "v311-bom", version)
    assert with_bom.subscribe(f"v311/{bom}bom/t", 1).reason_codes == [1]
    without = accepted(raw, "v311-bom", version)  # not the same client id: no takeover
    assert without.subscribe("v311/bom/t", 1).reason_codes == [1]
    pub = accepted(raw, "v311-bom-pub", version)
    pub.publish(f"v311/{bom}bom/t", b"\xef\xbb\xbfwith", qos=1)
    pub.publish("v311/bom/t", b"without", qos=1)
    message = with_bom.expect(Publish, timeout=2)
    assert (message.topic, message.payload) == (f"v311/{bom}bom/t", b"\xef\xbb\xbfwith")
    assert without.expect(Publish, timeout=2).payload == b"without"
    with_bom.ack(message)
    with_bom.expect_nothing(0.3)
    assert not with_bom.closed


# -- 2.2.2: fixed header flags -----------------------------------------------------------------


def read_until(client: RawClient, *first_bytes: int) -> list[bytes]:
    """Raw packets read until one of each of ``first_bytes`` has arrived (others kept too)."""
    wanted, packets = set(first_bytes), []
    while wanted:
        packet = read_raw_packet(client, timeout=2)
        packets.append(packet)
        wanted.discard(packet[0])
    return packets


@BOTH
def test_MQTT_2_2_2_1_server_sets_reserved_flags(raw: Raw, version: int) -> None:
    """MQTT-2.2.2-1: the server sends every packet with the flags Table 2.2 lists: CONNACK 0x20,
    SUBACK 0x90, PUBACK 0x40, PUBREC 0x50, PUBREL 0x62, PUBCOMP 0x70, UNSUBACK 0xB0, PINGRESP
    0xD0; a PUBLISH uses only its DUP/QoS/RETAIN bits (0x34: QoS 2, first attempt, not retained).
    """
    client = raw(version)
    client.send_raw(raw_connect("v311-flags", version=version))
    assert read_raw_packet(client, timeout=2)[0] == 0x20
    client.send_raw(raw_subscribe(1, ("v311/flags/t", 2)))
    assert read_raw_packet(client, timeout=2)[0] == 0x90
    client.send_raw(raw_publish("v311/flags/other", b"", qos=1, packet_id=2))
    assert read_raw_packet(client, timeout=2)[0] == 0x40
    client.send_raw(raw_publish("v311/flags/t", b"", qos=2, packet_id=3))
    packets = read_until(client, 0x50)  # the PUBLISH to ourselves may come first
    client.send_raw(b"\x62\x02\x00\x03")
    packets += read_until(client, 0x70, *({0x34} - {p[0] for p in packets}))
    assert sorted(p[0] for p in packets) == [0x34, 0x50, 0x70]
    publish = next(p for p in packets if p[0] == 0x34)
    packet_id = publish[2 + 2 + len("v311/flags/t") :][:2]
    client.send_raw(b"\x50\x02" + packet_id)
    assert read_raw_packet(client, timeout=2) == b"\x62\x02" + packet_id
    client.send_raw(b"\x70\x02" + packet_id)
    client.send_raw(raw_unsubscribe(4, "v311/flags/t"))
    assert read_raw_packet(client, timeout=2)[0] == 0xB0
    client.send_raw(b"\xc0\x00")
    assert read_raw_packet(client, timeout=2)[0] == 0xD0


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(b"\x11" + raw_connect("v311-badflags")[1:], id="connect-0x11"),
        pytest.param(b"\x60\x02\x00\x01", id="pubrel-0x60"),
        pytest.param(b"\x80" + raw_subscribe(1, ("t", 0))[1:], id="subscribe-0x80"),
        pytest.param(b"\xa3" + raw_unsubscribe(1, "t")[1:], id="unsubscribe-0xa3"),
        pytest.param(b"\xe2\x00", id="disconnect-0xe2"),
        # Mosquitto 2.0.11 lets these four through; the spec does not:
        pytest.param(b"\x41\x02\x00\x01", id="puback-0x41"),
        pytest.param(b"\x52\x02\x00\x01", id="pubrec-0x52"),
        pytest.param(b"\x78\x02\x00\x01", id="pubcomp-0x78"),
        pytest.param(b"\xc1\x00", id="pingreq-0xc1"),
    ],
)
def test_MQTT_2_2_2_2_invalid_flags_close(raw: Raw, packet: bytes) -> None:
    """MQTT-2.2.2-2: a packet whose fixed-header flags differ from Table 2.2 makes the server close
    the connection, for every packet type a client may send. (Mosquitto 2.0.11 only checks
    CONNECT, PUBREL, SUBSCRIBE, UNSUBSCRIBE and DISCONNECT; the spec allows no exception.)"""
    client = raw(4) if packet[0] >> 4 == 1 else accepted(raw, "v311-badflags")
    client.send_raw(packet)
    expect_closed_silently(client)


# -- 2.3.1: Packet Identifiers -----------------------------------------------------------------


@BOTH
@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(raw_publish("v311/pid0", b"x", qos=1, packet_id=0), id="publish-qos1"),
        pytest.param(raw_publish("v311/pid0", b"x", qos=2, packet_id=0), id="publish-qos2"),
        pytest.param(raw_subscribe(0, ("v311/pid0", 0)), id="subscribe"),
        pytest.param(raw_unsubscribe(0, "v311/pid0"), id="unsubscribe"),
    ],
)
def test_MQTT_2_3_1_1_zero_packet_id_closes(raw: Raw, version: int, packet: bytes) -> None:
    """MQTT-2.3.1-1: SUBSCRIBE, UNSUBSCRIBE and QoS > 0 PUBLISH carry a non-zero Packet
    Identifier; a zero one is a protocol violation and the server closes the connection."""
    watcher = accepted(raw, "v311-pid0-watch", version)
    watcher.subscribe("v311/#", 0)
    client = accepted(raw, "v311-pid0", version)
    client.send_raw(packet)
    expect_closed_silently(client)
    watcher.expect_nothing(0.2)


@BOTH
def test_MQTT_2_3_1_4_server_uses_unused_packet_ids(raw: Raw, version: int) -> None:
    """MQTT-2.3.1-4 (MQTT-2.3.1-2/-3 applied to the server): each QoS > 0 PUBLISH the server sends
    has a non-zero identifier not used by any of its unacknowledged messages, and a re-sent
    PUBLISH keeps its identifier."""
    sub = accepted(raw, "v311-ids", version, clean_start=False)
    sub.subscribe("v311/ids/#", 2)
    pub = accepted(raw, "v311-ids-pub", version)
    for n in range(12):
        pub.publish(f"v311/ids/{n}", b"", qos=1 + n % 2)
    first = [sub.expect(Publish, timeout=2) for _ in range(12)]
    ids = [p.packet_id for p in first]
    assert all(ids) and len(set(ids)) == 12, ids
    sub.close()
    sub = accepted(raw, "v311-ids", version, clean_start=False)
    again = [sub.expect(Publish, timeout=2) for _ in range(12)]
    assert [(p.topic, p.packet_id) for p in again] == [(p.topic, p.packet_id) for p in first]


@BOTH
def test_MQTT_2_3_1_5_qos0_publish_has_no_packet_id(raw: Raw, version: int) -> None:
    """MQTT-2.3.1-5: a QoS 0 PUBLISH has no Packet Identifier: what the server sends is exactly the
    topic and the payload after the fixed header."""
    sub = accepted(raw, "v311-nopid", version)
    sub.subscribe("v311/nopid", 0)
    pub = accepted(raw, "v311-nopid-pub", version)
    pub.publish("v311/nopid", b"\x00\x01payload", qos=1)
    assert read_raw_packet(sub, timeout=2) == raw_packet(
        0x30, mqtt_string("v311/nopid") + b"\x00\x01payload"
    )


@BOTH
def test_MQTT_2_3_1_6_acks_carry_the_publish_packet_id(raw: Raw, version: int) -> None:
    """MQTT-2.3.1-6: the PUBACK, PUBREC (and PUBCOMP) the server sends carry the identifier of the
    client's PUBLISH, and the PUBREL it sends carries the identifier of its own PUBLISH."""
    client = accepted(raw, "v311-ackids", version)
    client.subscribe("v311/ackids/in", 2)
    client.send_raw(raw_publish("v311/ackids/x", b"", qos=1, packet_id=0xBEEF))
    assert read_raw_packet(client, timeout=2) == b"\x40\x02\xbe\xef"
    client.send_raw(raw_publish("v311/ackids/x", b"", qos=2, packet_id=0x0102))
    assert read_raw_packet(client, timeout=2) == b"\x50\x02\x01\x02"
    client.send_raw(b"\x62\x02\x01\x02")
    assert read_raw_packet(client, timeout=2) == b"\x70\x02\x01\x02"
    pub = accepted(raw, "v311-ackids-pub", version)
    pub.publish("v311/ackids/in", b"", qos=2)
    message = client.expect(Publish, timeout=2)
    pid = (message.packet_id or 0).to_bytes(2, "big")
    client.send_raw(b"\x50\x02" + pid)
    assert read_raw_packet(client, timeout=2) == b"\x62\x02" + pid


@BOTH
def test_MQTT_2_3_1_7_suback_unsuback_carry_the_packet_id(raw: Raw, version: int) -> None:
    """MQTT-2.3.1-7: SUBACK and UNSUBACK carry the identifier of the SUBSCRIBE or UNSUBSCRIBE they
    answer, also with several requests pipelined in one write."""
    client = accepted(raw, "v311-subids", version)
    client.send_raw(
        raw_subscribe(0x0A0B, ("v311/si/a", 0))
        + raw_subscribe(0x0001, ("v311/si/b", 1))
        + raw_unsubscribe(0xFFFF, "v311/si/a")
        + raw_unsubscribe(0x7000, "v311/si/none")
    )
    answers = [client.recv(2) for _ in range(4)]
    assert [(type(a), a.packet_id) for a in answers] == [  # type: ignore[union-attr]
        (Suback, 0x0A0B),
        (Suback, 0x0001),
        (Unsuback, 0xFFFF),
        (Unsuback, 0x7000),
    ]


# -- 4.8: handling errors ----------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(b"\x20\x02\x00\x00", id="connack-from-client"),
        pytest.param(b"\x00\x00", id="reserved-type-0"),
        pytest.param(b"\xf0\x00", id="reserved-type-15"),
        pytest.param(b"\x30\xff\xff\xff\xff\x01", id="remaining-length-5-bytes"),
        pytest.param(b"\xe0\x01\x00", id="disconnect-with-body"),
        pytest.param(b"\x40\x01\x00", id="puback-too-short"),
        # Mosquitto 2.0.11 ignores SUBACK, UNSUBACK and PINGRESP from a client and does not
        # check the length of PINGREQ and PUBACK; all are protocol violations all the same.
        pytest.param(b"\x90\x03\x00\x01\x00", id="suback-from-client"),
        pytest.param(b"\xb0\x02\x00\x01", id="unsuback-from-client"),
        pytest.param(b"\xd0\x00", id="pingresp-from-client"),
        pytest.param(b"\xc0\x01\x00", id="pingreq-with-body"),
        pytest.param(b"\x40\x03\x00\x01\x00", id="puback-too-long"),
    ],
)
def test_MQTT_4_8_0_1_protocol_violation_closes(raw: Raw, version: int, packet: bytes) -> None:
    """MQTT-4.8.0-1: on a protocol violation the server closes the connection: packets only a
    server sends, reserved packet types, a Remaining Length over four bytes, packets with the
    wrong length for their type. Being a loss of the connection, it publishes the Will."""
    watcher = accepted(raw, "v311-violation-watch", version)
    watcher.subscribe("v311/violation/will", 0)
    client = accepted(raw, "v311-violation", version, will=Will("v311/violation/will", b"w"))
    client.send_raw(packet)
    expect_closed_silently(client)
    assert watcher.expect(Publish, timeout=2).payload == b"w"


def test_MQTT_4_8_0_2_oversized_packet_closes_only_that_connection(
    make_broker: Callable[..., Any],
) -> None:
    """MQTT-4.8.0-2: a packet the server cannot process for want of resources (here one over
    ``max_packet_size``, which it will not buffer) closes the connection it came on; other
    clients carry on unaffected (the spec's SHOULD NOT affect other clients)."""
    broker = make_broker(max_packet_size=1024)
    with (
        RawClient.to(broker) as big,
        RawClient.to(broker) as bystander,
    ):
        assert big.connect("v311-big").reason_code == 0
        assert bystander.connect("v311-bystander").reason_code == 0
        bystander.subscribe("v311/big/#", 1)
        big.send_raw(raw_publish("v311/big/t", b"x" * 2000, qos=1, packet_id=1))
        expect_closed_silently(big)
        bystander.expect_nothing(0.2)
        bystander.send(Pingreq())
        bystander.expect(Pingresp, timeout=2)
        with RawClient.to(broker) as small:
            assert small.connect("v311-small").reason_code == 0
            assert small.publish("v311/big/t", b"small", qos=1) is not None
        assert bystander.expect(Publish, timeout=2).payload == b"small"


# -- 7.1.1: the transport --------------------------------------------------------------------


@BOTH
def test_MQTT_7_1_1_1_ordered_byte_stream(raw: Raw, version: int) -> None:
    """MQTT-7.1.1-1: the server works over an ordered, lossless byte stream, whatever its
    segmentation: packets split into single bytes, and several packets in one segment, are all
    processed in order."""
    client = raw(version)
    connect = raw_connect("v311-stream", version=version)
    subscribe = raw_subscribe(1, ("v311/stream/t", 1))
    for byte in connect + subscribe:
        client.send_raw(bytes([byte]))
    connack = client.expect(Connack, timeout=2)
    assert connack.reason_code == 0
    assert client.expect(Suback, timeout=2).reason_codes == [1]
    batch = b"".join(
        raw_publish("v311/stream/t", f"{n}".encode(), qos=1, packet_id=n + 1) for n in range(20)
    )
    for chunk_at in range(0, len(batch), 7):
        client.send_raw(batch[chunk_at : chunk_at + 7])
    packets = [client.recv(2) for _ in range(40)]
    acks = [p.packet_id for p in packets if isinstance(p, Puback)]
    messages = [p for p in packets if isinstance(p, Publish)]
    assert acks == list(range(1, 21))
    assert [int(p.payload) for p in messages] == list(range(20))
