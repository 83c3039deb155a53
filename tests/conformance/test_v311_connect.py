"""MQTT 3.1.1 sections 3.1 (CONNECT), 3.2 (CONNACK), 3.12 (PINGREQ), 3.14 (DISCONNECT): server side.

One test per normative statement, named after its id (``test_MQTT_3_1_2_2_...`` checks
MQTT-3.1.2-2). Tests that also apply to MQTT 3.1 (protocol level 3, "MQIsdp") run for both levels.
Where the spec leaves the server a choice, the expected behaviour is Mosquitto 2.0.11's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from midge.codec.packets import Connack, Connect, Disconnect, Pingreq, Pingresp, Publish, Will
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
    read_raw_packet,
)

BOTH = pytest.mark.parametrize("version", [3, 4], ids=["mqtt31", "mqtt311"])


def still_open(client: RawClient) -> None:
    """The connection still works: a PINGREQ gets its PINGRESP."""
    client.send(Pingreq())
    client.expect(Pingresp, timeout=2)


# -- 3.1.0: the first packet and only one CONNECT ------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        raw_packet(0xC0),  # PINGREQ
        raw_publish("v311/first", b"x"),
        raw_subscribe(1, ("v311/first", 0)),
        raw_packet(0xE0),  # DISCONNECT
    ],
    ids=["pingreq", "publish", "subscribe", "disconnect"],
)
def test_MQTT_3_1_0_1_first_packet_must_be_connect(raw: Raw, first: bytes) -> None:
    """MQTT-3.1.0-1: the first packet from a client must be CONNECT; anything else is a protocol
    violation, so the server closes the connection without answering (MQTT-4.8.0-1)."""
    client = raw(4)
    client.send_raw(first)
    expect_closed_silently(client)


@BOTH
def test_MQTT_3_1_0_2_second_connect_closes(raw: Raw, version: int) -> None:
    """MQTT-3.1.0-2: a second CONNECT is a protocol violation; the server disconnects the client
    (without a second CONNACK)."""
    client = accepted(raw, "v311-twice", version)
    protocol_name = "MQIsdp" if version == 3 else "MQTT"
    client.send(Connect("v311-twice", protocol_level=version, protocol_name=protocol_name))
    expect_closed_silently(client)


def test_3_1_connect_timeout_closes_silent_connection(make_broker: Callable[..., Any]) -> None:
    """Section 3.1 (non-normative: a server SHOULD close a connection that sends no CONNECT in a
    reasonable time): with ``connect_timeout = 0.5`` a connection that sends nothing, or only part
    of a CONNECT, is closed without a packet once half a second has passed, not before."""
    broker = make_broker(connect_timeout=0.5)
    with (
        RawClient.to(broker) as silent,
        RawClient.to(broker) as partial,
    ):
        partial.send_raw(raw_connect("v311-partial")[:5])
        broker.advance(0.4)
        assert silent.is_open() and partial.is_open()
        broker.advance(0.2)
        expect_closed_silently(silent)
        expect_closed_silently(partial)


# -- 3.1.2: variable header ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["mqtt", "MQTX", "MQ", "MQTTMQTT", "MQIsdq"])
def test_MQTT_3_1_2_1_wrong_protocol_name_closes(raw: Raw, name: str) -> None:
    """MQTT-3.1.2-1: with a protocol name it does not know the server may close the connection
    (Mosquitto does, without a CONNACK) and must not go on as if it were MQTT."""
    client = raw(4)
    client.send_raw(raw_connect("v311-name", protocol_name=name))
    expect_closed_silently(client)


@pytest.mark.parametrize(
    ("name", "level"),
    [("MQTT", 3), ("MQTT", 6), ("MQTT", 0), ("MQTT", 2), ("MQIsdp", 4), ("MQIsdp", 5)],
    ids=["MQTT-3", "MQTT-6", "MQTT-0", "MQTT-2", "MQIsdp-4", "MQIsdp-5"],
)
def test_MQTT_3_1_2_2_unsupported_level_connack_1(raw: Raw, name: str, level: int) -> None:
    """MQTT-3.1.2-2: a protocol level the server does not support is answered with CONNACK return
    code 0x01 (unacceptable protocol version), then the connection is closed.

    Also MQTT-3.2.2-4 (Session Present is 0 with a non-zero return code) and MQTT-3.2.2-5 (the
    server closes the connection after a non-zero return code). "MQIsdp" is only MQTT 3.1 (level
    3), "MQTT" only levels 4 and 5, as in Mosquitto.
    """
    client = raw(4)
    client.send_raw(raw_connect("v311-level", version=level, protocol_name=name))
    assert read_raw_packet(client, timeout=2) == b"\x20\x02\x00\x01"
    expect_closed_silently(client)


def test_MQTT_3_1_2_3_reserved_connect_flag_closes(raw: Raw) -> None:
    """MQTT-3.1.2-3: the server validates that the reserved Connect Flags bit 0 is zero and
    disconnects the client if it is not (no CONNACK: the CONNECT is malformed, MQTT-3.1.4-1)."""
    client = raw(4)
    client.send_raw(raw_connect("v311-reserved", flags=0x03))
    expect_closed_silently(client)


@BOTH
def test_MQTT_3_1_2_9_will_fields_missing_closes(raw: Raw, version: int) -> None:
    """MQTT-3.1.2-9: with the Will Flag set, the Will Topic and Will Message must be in the
    payload; a CONNECT without them is malformed and the connection is closed without CONNACK
    (MQTT-3.1.4-1)."""
    client = raw(version)
    client.send_raw(raw_connect("v311-nowill", version=version, flags=0x06))
    expect_closed_silently(client)


@pytest.mark.parametrize(
    "flags",
    [0x02 | 0x08, 0x02 | 0x10, 0x02 | 0x20],
    ids=["will-qos-1", "will-qos-2", "will-retain"],
)
def test_MQTT_3_1_2_11_will_qos_retain_without_will_flag_closes(raw: Raw, flags: int) -> None:
    """MQTT-3.1.2-11: with the Will Flag 0, Will QoS and Will Retain must be 0. Also MQTT-3.1.2-13
    (Will QoS 0) and MQTT-3.1.2-15 (Will Retain 0). A CONNECT breaking them is malformed: the
    server closes the connection without CONNACK (MQTT-3.1.4-1). MQTT 3.1 has no such rule."""
    client = raw(4)
    client.send_raw(raw_connect("v311-willbits", flags=flags))
    expect_closed_silently(client)


def test_MQTT_3_1_2_11_will_fields_without_will_flag_closes(raw: Raw) -> None:
    """MQTT-3.1.2-11: with the Will Flag 0 the Will Topic and Will Message must not be in the
    payload; bytes left over after the fields the flags announce make the CONNECT malformed."""
    client = raw(4)
    tail = mqtt_string("v311/will") + mqtt_string(b"payload")
    client.send_raw(raw_connect("v311-willextra", flags=0x02, tail=tail))
    expect_closed_silently(client)


@BOTH
def test_MQTT_3_1_2_14_will_qos_3_closes(raw: Raw, version: int) -> None:
    """MQTT-3.1.2-14: Will QoS must not be 3; such a CONNECT is malformed and the connection is
    closed without CONNACK."""
    client = raw(version)
    client.send_raw(raw_connect("v311-willqos3", version=version, will_topic="v311/w", will_qos=3))
    expect_closed_silently(client)


def test_MQTT_3_1_2_18_username_without_flag_closes(raw: Raw) -> None:
    """MQTT-3.1.2-18: with the User Name Flag 0 no user name may be in the payload; the surplus
    bytes make the CONNECT malformed and the connection is closed without CONNACK."""
    client = raw(4)
    client.send_raw(raw_connect("v311-user0", flags=0x02, tail=mqtt_string("user")))
    expect_closed_silently(client)


def test_MQTT_3_1_2_19_username_flag_without_username_closes(raw: Raw) -> None:
    """MQTT-3.1.2-19: with the User Name Flag 1 a user name must be present; a CONNECT without
    one is malformed and the connection is closed without CONNACK. (MQTT 3.1 servers ignore the
    flag here, as Mosquitto does, so this is MQTT 3.1.1 only.)"""
    client = raw(4)
    client.send_raw(raw_connect("v311-user1", flags=0x02 | 0x80))
    expect_closed_silently(client)


def test_MQTT_3_1_2_20_password_without_flag_closes(raw: Raw) -> None:
    """MQTT-3.1.2-20: with the Password Flag 0 no password may be in the payload; the surplus
    bytes make the CONNECT malformed and the connection is closed without CONNACK."""
    client = raw(4)
    connect = raw_connect("v311-pass0", username="user", tail=mqtt_string(b"secret"))
    client.send_raw(connect)
    expect_closed_silently(client)


def test_MQTT_3_1_2_21_password_flag_without_password_closes(raw: Raw) -> None:
    """MQTT-3.1.2-21: with the Password Flag 1 a password must be present; a CONNECT without one
    is malformed and the connection is closed without CONNACK."""
    client = raw(4)
    client.send_raw(raw_connect("v311-pass1", flags=0x02 | 0x80 | 0x40, username="user"))
    expect_closed_silently(client)


@BOTH
def test_MQTT_3_1_2_22_password_without_username_closes(raw: Raw, version: int) -> None:
    """MQTT-3.1.2-22: with the User Name Flag 0 the Password Flag must be 0; a CONNECT with only
    a password is refused by closing the connection without CONNACK (Mosquitto: both levels)."""
    client = raw(version)
    client.send_raw(raw_connect("v311-passonly", version=version, password=b"secret"))
    expect_closed_silently(client)


@BOTH
def test_MQTT_3_1_2_24_keep_alive_expiry_closes(raw: Raw, version: int) -> None:
    """MQTT-3.1.2-24: a client silent for 1.5 times its Keep Alive is disconnected as if the
    network had failed. With Keep Alive 1 s the close comes after about 1.5 s: not before the
    Keep Alive itself has passed, and within 2 s."""
    client = accepted(raw, "v311-ka", version, keep_alive=1)
    client.advance(1.0)
    assert client.is_open(), "closed before the Keep Alive had passed"
    client.advance(1.0)
    assert client.wait_closed(), "the broker kept a silent client past 1.5 x keep-alive"


@BOTH
def test_MQTT_3_1_2_24_keep_alive_reset_by_traffic(raw: Raw, version: int) -> None:
    """MQTT-3.1.2-24: any control packet within the Keep Alive keeps the connection open; a
    client pinging every 0.5 s with Keep Alive 1 s stays connected for 2.5 s and longer."""
    client = accepted(raw, "v311-kaping", version, keep_alive=1)
    for _ in range(5):
        client.advance(0.5)
        still_open(client)


def test_MQTT_3_1_2_24_keep_alive_zero_never_expires(raw: Raw) -> None:
    """MQTT-3.1.2-24 applies only to a non-zero Keep Alive: with 0 the server never closes an
    idle connection for inactivity (an hour here)."""
    client = accepted(raw, "v311-ka0", keep_alive=0)
    client.advance(3600.0)
    client.expect_nothing()
    still_open(client)


# -- 3.1.3: payload ------------------------------------------------------------------------


@BOTH
def test_MQTT_3_1_3_1_payload_fields_in_order(raw: Raw, version: int) -> None:
    """MQTT-3.1.3-1: Client Identifier, Will Topic, Will Message, User Name, Password appear in
    this order; the server reads each one from its place. Also MQTT-3.1.3-3 (the Client
    Identifier is present and first): the session and the Will are the ones named in the CONNECT.
    """
    watcher = accepted(raw, "v311-order-watch", version)
    watcher.subscribe("v311/order/#", 2)
    client = raw(version)
    connect = raw_connect(
        "v311-order",
        version=version,
        clean=False,
        will_topic="v311/order/will",
        will_payload=b"\x00\xffwill payload",
        will_qos=1,
        username="someone",
        password=b"\x00secret",
    )
    client.send_raw(connect)
    assert client.expect(Connack).reason_code == 0
    client.close()  # no DISCONNECT: the Will is published
    will = watcher.expect(Publish)
    assert (will.topic, will.payload, will.qos) == ("v311/order/will", b"\x00\xffwill payload", 1)
    watcher.ack(will)
    again = raw(version)
    connack = again.connect("v311-order", clean_start=False)
    assert connack.reason_code == 0
    if version == 4:
        assert connack.session_present, "the session of client id 'v311-order' was not found"


@BOTH
@pytest.mark.parametrize(
    "bad",
    [b"\xc0\xaf", b"\xed\xa0\x80", b"\xff", b"ab\x80", b"\xe2\x82"],
    ids=["overlong", "surrogate", "ff", "lone-continuation", "truncated"],
)
def test_MQTT_3_1_3_4_client_id_ill_formed_utf8_closes(raw: Raw, version: int, bad: bytes) -> None:
    """MQTT-3.1.3-4: the Client Identifier is a UTF-8 encoded string; ill-formed UTF-8 there makes
    the server close the connection (MQTT-1.5.3-1), without CONNACK."""
    client = raw(version)
    client.send_raw(raw_connect(bad, version=version))
    expect_closed_silently(client)


@BOTH
@pytest.mark.parametrize(
    "client_id",
    ["a", "Z", "0123456789abcdefghijklm", "ABCDEFGHIJKLMNOPQRSTUVW", "v311id42"],
)
def test_MQTT_3_1_3_5_alphanumeric_ids_1_to_23_accepted(
    raw: Raw, version: int, client_id: str
) -> None:
    """MQTT-3.1.3-5: the server must allow Client Identifiers of 1 to 23 bytes made of
    0-9, a-z and A-Z."""
    accepted(raw, client_id, version)


@BOTH
def test_MQTT_3_1_3_5_longer_ids_accepted(raw: Raw, version: int) -> None:
    """MQTT-3.1.3-5 sets a floor, not a ceiling: like Mosquitto, the server also accepts longer
    identifiers with other characters (even for MQTT 3.1, whose spec said 23 at most)."""
    accepted(raw, "v311/" + "x" * 200 + "-é-✓", version)


def test_MQTT_3_1_3_6_empty_client_id_gets_unique_id(raw: Raw) -> None:
    """MQTT-3.1.3-6: a zero-length ClientId (with CleanSession 1) is accepted and the server
    assigns a unique identifier: two such clients are different sessions, so the second does not
    take over the first and each receives its own subscription's messages."""
    first = accepted(raw, "")
    second = accepted(raw, "")
    first.subscribe("v311/anon/1", 0)
    second.subscribe("v311/anon/2", 0)
    still_open(first)
    publisher = accepted(raw, "v311-anon-pub")
    publisher.publish("v311/anon/1", b"one")
    publisher.publish("v311/anon/2", b"two")
    assert first.expect(Publish).payload == b"one"
    assert second.expect(Publish).payload == b"two"
    first.expect_nothing(0.3)
    second.expect_nothing(0.1)


def test_MQTT_3_1_3_8_empty_client_id_with_persistent_session_rejected(raw: Raw) -> None:
    """MQTT-3.1.3-8: a zero-byte ClientId with CleanSession 0 gets CONNACK 0x02 (identifier
    rejected), then the connection is closed. Also MQTT-3.2.2-4 (Session Present 0 with a
    non-zero return code) and MQTT-3.2.2-5 (close after a non-zero return code)."""
    client = raw(4)
    client.send_raw(raw_connect("", clean=False))
    assert read_raw_packet(client, timeout=2) == b"\x20\x02\x00\x02"
    expect_closed_silently(client)


def test_MQTT_3_1_3_9_rejected_client_id_connack_2(make_broker: Callable[..., Any]) -> None:
    """MQTT-3.1.3-9: a ClientId the server rejects gets CONNACK 0x02 and the connection closes.
    With ``allow_zero_length_clientid = false`` (a Mosquitto option) an empty ClientId is one."""
    broker = make_broker(allow_zero_length_clientid=False)
    with RawClient.to(broker, version=4) as client:
        client.send_raw(raw_connect("", clean=True))
        assert read_raw_packet(client, timeout=2) == b"\x20\x02\x00\x02"
        expect_closed_silently(client)


def test_MQTT_3_1_3_9_mqtt31_empty_client_id_rejected(raw: Raw) -> None:
    """MQTT-3.1.3-9 for MQTT 3.1, whose ClientId must be 1 to 23 characters: an empty one is
    rejected with CONNACK 0x02 and the connection closed, whatever CleanSession says."""
    client = raw(3)
    client.send_raw(raw_connect("", version=3, clean=True))
    connack = client.expect(Connack, timeout=2)
    assert (connack.reason_code, connack.session_present) == (2, False)
    expect_closed_silently(client)


@BOTH
@pytest.mark.parametrize(
    "topic",
    [b"v311/\xc0\xaf", b"v311/\xed\xa0\x80", b"v311/\x00/w", b"v311/+", b"v311/#", b""],
    ids=["overlong", "surrogate", "null", "plus", "hash", "empty"],
)
def test_MQTT_3_1_3_10_bad_will_topic_closes(raw: Raw, version: int, topic: bytes) -> None:
    """MQTT-3.1.3-10: the Will Topic is a UTF-8 encoded string (MQTT-1.5.3-1/-2) and a Topic Name,
    so no wildcards (MQTT-4.7.1-1) and at least one character (MQTT-4.7.3-1). A CONNECT whose Will
    Topic breaks this is refused: the connection is closed without CONNACK."""
    client = raw(version)
    client.send_raw(raw_connect("v311-badwill", version=version, will_topic=topic))
    expect_closed_silently(client)


@pytest.mark.parametrize("bad", [b"\xc0\xaf", b"\xed\xa0\x80", b"us\x00er"])
def test_MQTT_3_1_3_11_username_ill_formed_utf8_closes(raw: Raw, bad: bytes) -> None:
    """MQTT-3.1.3-11: the User Name is a UTF-8 encoded string; ill-formed UTF-8 or U+0000 there
    closes the connection (MQTT-1.5.3-1/-2), without CONNACK. (An MQTT 3.1 server ignores a User
    Name it cannot read, as Mosquitto does, so this is MQTT 3.1.1 only.)"""
    client = raw(4)
    client.send_raw(raw_connect("v311-baduser", username=bad))
    expect_closed_silently(client)


# -- 3.1.4: response -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "connect",
    [
        raw_packet(0x10, mqtt_string("MQTT") + b"\x04\x02\x00"),  # keep alive cut short
        raw_packet(0x10, mqtt_string("MQTT") + b"\x04\x02\x00\x3c"),  # no client identifier
        raw_packet(0x10, mqtt_string("MQTT") + b"\x04\x02\x00\x3c\x00\x0aabc"),  # id cut short
        raw_connect("v311-surplus", tail=b"\x00"),  # a byte after the last field
        raw_packet(0x10, b"\x00"),  # not even a protocol name
    ],
    ids=["short-keepalive", "no-client-id", "short-client-id", "surplus-byte", "no-name"],
)
def test_MQTT_3_1_4_1_malformed_connect_closes_without_connack(raw: Raw, connect: bytes) -> None:
    """MQTT-3.1.4-1: the server validates the CONNECT and closes the connection without sending a
    CONNACK if it does not conform. Also MQTT-3.2.2-6: none of the CONNACK return codes applies to
    a malformed packet, so no CONNACK is sent."""
    client = raw(4)
    client.send_raw(connect)
    expect_closed_silently(client)


@BOTH
def test_MQTT_3_1_4_2_same_client_id_disconnects_existing(raw: Raw, version: int) -> None:
    """MQTT-3.1.4-2: if the ClientId is already connected the server disconnects the existing
    client; the new connection is accepted and keeps working."""
    first = accepted(raw, "v311-takeover", version)
    second = accepted(raw, "v311-takeover", version)
    assert first.wait_closed(timeout=2.0), "the first connection was not closed"
    still_open(second)


@BOTH
def test_MQTT_3_1_4_4_valid_connect_gets_connack_0(raw: Raw, version: int) -> None:
    """MQTT-3.1.4-4: a valid CONNECT is acknowledged with a CONNACK with return code 0; with
    CleanSession 1 Session Present is 0 (MQTT-3.2.2-1), so the exact bytes are 20 02 00 00."""
    client = raw(version)
    client.send_raw(raw_connect("v311-ok", version=version))
    assert read_raw_packet(client, timeout=2) == b"\x20\x02\x00\x00"
    still_open(client)


@pytest.mark.parametrize(
    "connect",
    [raw_connect("", clean=False), raw_connect("v311-rejlevel", version=6)],
    ids=["identifier-rejected", "bad-protocol-level"],
)
def test_MQTT_3_1_4_5_no_processing_after_rejected_connect(raw: Raw, connect: bytes) -> None:
    """MQTT-3.1.4-5: after rejecting a CONNECT the server processes nothing the client sent after
    it: a retained PUBLISH and a SUBSCRIBE pipelined behind it have no effect and get no answer.
    """
    client = raw(4)
    pipelined = raw_publish("v311/rejected/t", b"must not be kept", qos=1, retain=True, packet_id=1)
    pipelined += raw_subscribe(2, ("v311/rejected/#", 0)) + raw_packet(0xC0)
    client.send_raw(connect + pipelined)
    connack = client.expect(Connack, timeout=2)
    assert connack.reason_code != 0
    expect_closed_silently(client)
    checker = accepted(raw, "v311-rejected-check")
    checker.subscribe("v311/rejected/#", 1)
    checker.expect_nothing(0.5)


# -- 3.2: CONNACK --------------------------------------------------------------------------


@BOTH
def test_MQTT_3_2_0_1_connack_is_first_packet(raw: Raw, version: int) -> None:
    """MQTT-3.2.0-1: the first packet the server sends is CONNACK, even when queued messages of a
    resumed session are waiting to be sent."""
    client = accepted(raw, "v311-first", version, clean_start=False)
    client.subscribe("v311/first/#", 1)
    client.disconnect()
    publisher = accepted(raw, "v311-first-pub", version)
    for n in range(3):
        publisher.publish(f"v311/first/{n}", b"queued", qos=1)
    again = raw(version)
    again.send(
        Connect(
            "v311-first",
            protocol_level=version,
            protocol_name="MQIsdp" if version == 3 else "MQTT",
            clean_start=False,
        )
    )
    first_packet = read_raw_packet(again, timeout=2)
    assert first_packet[0] == 0x20, f"first packet {first_packet.hex()} is not a CONNACK"
    assert [p.topic for p in again.recv_all(0.5) if isinstance(p, Publish)] == [
        "v311/first/0",
        "v311/first/1",
        "v311/first/2",
    ]


# -- 3.12 PINGREQ, 3.14 DISCONNECT ---------------------------------------------------------


@BOTH
def test_MQTT_3_12_4_1_pingreq_gets_pingresp(raw: Raw, version: int) -> None:
    """MQTT-3.12.4-1: the server answers each PINGREQ with a PINGRESP (exact bytes D0 00)."""
    client = accepted(raw, "v311-ping", version)
    for _ in range(3):
        client.send_raw(b"\xc0\x00")
        assert read_raw_packet(client, timeout=2) == b"\xd0\x00"


@pytest.mark.parametrize("first_byte", [0xE1, 0xE2, 0xE4, 0xE8, 0xEF])
def test_MQTT_3_14_1_1_disconnect_reserved_bits_close(raw: Raw, first_byte: int) -> None:
    """MQTT-3.14.1-1: the server validates that the DISCONNECT reserved bits are zero and
    disconnects the client if not. Such a packet is a protocol violation, not a DISCONNECT, so
    the Will is still published (Mosquitto does the same)."""
    watcher = accepted(raw, "v311-dflags-watch")
    watcher.subscribe("v311/dflags/will", 0)
    client = accepted(raw, "v311-dflags", will=Will("v311/dflags/will", b"gone"))
    client.send_raw(bytes([first_byte, 0]))
    expect_closed_silently(client)
    assert watcher.expect(Publish, timeout=2).payload == b"gone"


@BOTH
def test_3_14_4_server_closes_after_disconnect(raw: Raw, version: int) -> None:
    """Section 3.14.4: after DISCONNECT the client closes the connection (MQTT-3.14.4-1, a client
    rule) and the server SHOULD close it if the client has not: it ends the connection and sends
    nothing."""
    client = accepted(raw, "v311-bye", version)
    client.send(Disconnect())
    expect_closed_silently(client)
