"""One targeted test per validation rule of the decoder: the error class and its reason code."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midge.codec import Decoder, encode
from midge.codec.packets import (
    Auth,
    Connect,
    Disconnect,
    Pingreq,
    Puback,
    Publish,
    Subscribe,
    Subscription,
    Unsubscribe,
    Will,
)
from midge.codec.properties import Prop
from midge.codec.reasons import (
    CodecError,
    MalformedPacket,
    PacketTooLarge,
    ProtocolError,
    Reason,
    TopicNameInvalid,
    UnsupportedProtocolVersion,
)
from midge.codec.utf8 import FORBIDDEN, has_forbidden

# --- raw packet builders -------------------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pkt(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


def s(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return len(raw).to_bytes(2) + raw


def props(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return varint(len(body)) + body


def connect(
    name: bytes = b"MQTT",
    level: int = 4,
    flags: int = 0x02,
    payload: bytes = s("cid"),
    properties: bytes = b"\x00",
) -> bytes:
    body = s(name) + bytes((level, flags)) + b"\x00\x3c"
    if level == 5:
        body += properties
    return pkt(0x10, body + payload)


def publish(
    topic: bytes | str, version: int = 4, qos: int = 0, properties: bytes = b"\x00"
) -> bytes:
    body = s(topic) + (b"\x00\x01" if qos else b"")
    if version == 5:
        body += properties
    return pkt(0x30 | (qos << 1), body + b"payload")


def decode(data: bytes, version: int | None = 4, **kwargs: int) -> list[object]:
    return list(Decoder(version, **kwargs).feed(data))


def fails(data: bytes, error: type[CodecError], reason: int, version: int | None = 4) -> CodecError:
    decoder = Decoder(version)
    with pytest.raises(error) as info:
        decoder.feed(data)
    assert type(info.value) is error
    assert info.value.reason == reason
    return info.value


MALFORMED = Reason.MALFORMED_PACKET
PROTOCOL = Reason.PROTOCOL_ERROR

# --- fixed header --------------------------------------------------------------------------------


def test_remaining_length_over_four_bytes_is_malformed() -> None:
    # Raised as soon as the 4th length byte has its continuation bit, before any body arrives.
    fails(b"\x30\xff\xff\xff\xff", MalformedPacket, MALFORMED)
    fails(b"\x30\x80\x80\x80\x80\x01", MalformedPacket, MALFORMED)


def test_non_minimal_remaining_length_is_accepted() -> None:
    # Mosquitto accepts it too; only the 5-byte form is refused.
    assert decode(b"\xc0\x80\x00") == [Pingreq()]
    assert decode(b"\x40\x82\x80\x00\x00\x01") == [Puback(1)]


def test_largest_remaining_length_is_accepted_by_the_header() -> None:
    decoder = Decoder(4)
    decoder.receive(b"\x30\xff\xff\xff\x7f\x00\x01t")
    assert decoder.next_packet() is None  # waits for 268,435,455 bytes


def test_reserved_packet_type_0() -> None:
    fails(b"\x00\x00", MalformedPacket, MALFORMED)


@pytest.mark.parametrize("version", [None, 3, 4])
def test_auth_below_v5(version: int | None) -> None:
    fails(b"\xf0\x00", MalformedPacket, MALFORMED, version)


@pytest.mark.parametrize(
    ("first", "body"),
    [
        (0x11, connect()[2:]),
        (0x21, b"\x00\x00"),
        (0x41, b"\x00\x01"),
        (0x52, b"\x00\x01"),
        (0x60, b"\x00\x01"),  # PUBREL must be 0b0010 (MQTT-3.6.1-1)
        (0x63, b"\x00\x01"),
        (0x72, b"\x00\x01"),
        (0x80, b"\x00\x01" + s("a") + b"\x00"),  # SUBSCRIBE must be 0b0010 (MQTT-3.8.1-1)
        (0x92, b"\x00\x01\x00"),
        (0xA0, b"\x00\x01" + s("a")),  # UNSUBSCRIBE must be 0b0010 (MQTT-3.10.1-1)
        (0xB2, b"\x00\x01"),
        (0xC1, b""),
        (0xD8, b""),
        (0xE2, b""),
    ],
)
def test_fixed_header_flags(first: int, body: bytes) -> None:
    fails(pkt(first, body), MalformedPacket, MALFORMED)


def test_fixed_header_flags_checked_before_the_body_arrives() -> None:
    fails(b"\x60\x02", MalformedPacket, MALFORMED)


def test_publish_qos_3() -> None:
    fails(pkt(0x36, s("t") + b"\x00\x01"), MalformedPacket, MALFORMED)


def test_publish_qos0_with_dup() -> None:
    fails(pkt(0x38, s("t")), MalformedPacket, MALFORMED)


# --- remaining length vs contents ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "version"),
    [
        (pkt(0x40, b"\x00"), 4),  # PUBACK too short
        (pkt(0x40, b"\x00\x01\x00"), 4),  # v4 PUBACK with a reason code
        (pkt(0xC0, b"\x00"), 4),  # PINGREQ with a body
        (pkt(0xD0, b"\x00"), 5),
        (pkt(0xE0, b"\x00"), 4),  # v4 DISCONNECT with a body
        (pkt(0xB0, b"\x00\x01\x00"), 4),  # v4 UNSUBACK with codes
        (pkt(0x20, b"\x00"), 4),  # CONNACK too short
        (pkt(0x20, b"\x00\x00\x00"), 4),  # v4 CONNACK too long
        (pkt(0x20, b"\x00\x00"), 5),  # v5 CONNACK without its property length
        (connect(payload=s("cid") + b"x"), 4),  # CONNECT with trailing bytes
        (connect(payload=b"\x00\x05ab"), 4),  # client id runs past the end
        (pkt(0x30, b"\x00\x05ab"), 4),  # topic runs past the end
        (pkt(0x32, s("t") + b"\x00"), 4),  # packet id cut short
        (pkt(0x82, b"\x00\x01" + s("a")), 4),  # SUBSCRIBE filter without options byte
        (pkt(0x40, b"\x00\x01\x00\x05\x1f"), 5),  # property list past the end
        (pkt(0x40, b"\x00\x01\x00\x03\x1f\x00\x05ab"), 5),  # property value past its list
        (pkt(0xE0, b"\x00\x02\x11\x00"), 5),  # four-byte property cut short
    ],
)
def test_remaining_length_mismatch(data: bytes, version: int) -> None:
    fails(data, MalformedPacket, MALFORMED, version)


# --- UTF-8 ---------------------------------------------------------------------------------------

BAD_UTF8 = [
    b"\xff",  # never valid
    b"a\xc0\xafb",  # overlong '/'
    b"\xed\xa0\x80",  # U+D800 surrogate (MQTT-1.5.4-1)
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xe2\x82",  # truncated sequence
    b"a\x00b",  # U+0000 (MQTT-1.5.4-2)
    b"\x01",  # control characters: Mosquitto refuses them
    b"\x1f",
    b"\x7f",
    b"\xc2\x85",  # U+0085
    b"\xc2\x9f",
    b"\xef\xb7\x90",  # U+FDD0 non-character
    b"\xef\xbf\xbe",  # U+FFFE
    b"\xef\xbf\xbf",  # U+FFFF
    b"\xf0\x9f\xbf\xbf",  # U+1FFFF
    b"\xf4\x8f\xbf\xbe",  # U+10FFFE
]


@pytest.mark.parametrize("raw", BAD_UTF8)
def test_bad_utf8_in_topic(raw: bytes) -> None:
    fails(publish(raw), MalformedPacket, MALFORMED)


@pytest.mark.parametrize("raw", BAD_UTF8[:8])
@pytest.mark.parametrize(
    "build",
    [
        lambda raw: connect(payload=s(raw)),  # client id
        lambda raw: connect(flags=0x82, payload=s("c") + s(raw)),  # user name
        lambda raw: connect(flags=0x06, payload=s("c") + s(raw) + s(b"")),  # will topic
        lambda raw: connect(level=5, properties=props(b"\x15" + s(raw))),  # UTF-8 property
        lambda raw: connect(level=5, properties=props(b"\x26" + s(raw) + s("v"))),  # pair name
        lambda raw: connect(level=5, properties=props(b"\x26" + s("k") + s(raw))),  # pair value
        lambda raw: pkt(0x82, b"\x00\x01" + s(raw) + b"\x00"),  # topic filter
        lambda raw: pkt(0xA2, b"\x00\x01" + s(raw)),  # unsubscribe filter
    ],
)
def test_bad_utf8_everywhere(build: object, raw: bytes) -> None:
    fails(build(raw), MalformedPacket, MALFORMED)  # type: ignore[operator]


@pytest.mark.parametrize("ok", ["\ufeffa", "\u00a0", "é/ü", "\U0001f600", "\ufffd", "\uffef"])
def test_good_utf8_is_kept(ok: str) -> None:
    (packet,) = decode(publish(ok))
    assert isinstance(packet, Publish)
    assert packet.topic == ok  # U+FEFF is not stripped (MQTT-1.5.4-3)


# --- CONNECT -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "level"), [(b"MQTT", 3), (b"MQTT", 6), (b"MQTT", 0), (b"MQIsdp", 4), (b"MQIsdp", 5)]
)
def test_connect_unsupported_level(name: bytes, level: int) -> None:
    err = fails(
        connect(name, level), UnsupportedProtocolVersion, Reason.UNSUPPORTED_PROTOCOL_VERSION
    )
    assert isinstance(err, UnsupportedProtocolVersion)
    assert err.level == level


@pytest.mark.parametrize("name", [b"MQTX", b"mqtt", b"", b"MQIsdpX"])
def test_connect_unknown_protocol_name(name: bytes) -> None:
    # The broker closes without CONNACK (MQTT-3.1.2-1).
    fails(connect(name, 4), ProtocolError, PROTOCOL, None)


@pytest.mark.parametrize(("name", "level"), [(b"MQIsdp", 3), (b"MQTT", 4), (b"MQTT", 5)])
def test_connect_levels_we_speak(name: bytes, level: int) -> None:
    decoder = Decoder()
    (packet,) = decoder.feed(connect(name, level))
    assert isinstance(packet, Connect)
    assert (packet.protocol_name, packet.protocol_level) == (name.decode(), level)
    assert decoder.version == level


def test_connect_reserved_flag() -> None:
    fails(connect(flags=0x03), MalformedPacket, MALFORMED)


@pytest.mark.parametrize("flags", [0x08, 0x10, 0x20, 0x38])
def test_connect_will_qos_or_retain_without_will(flags: int) -> None:
    fails(connect(flags=flags | 0x02), MalformedPacket, MALFORMED)


def test_connect_will_qos_or_retain_without_will_is_tolerated_for_mqtt31() -> None:
    (packet,) = decode(connect(b"MQIsdp", 3, flags=0x2A))  # as Mosquitto does for 3.1 clients
    assert isinstance(packet, Connect) and packet.will is None


def test_connect_will_qos_3() -> None:
    fails(connect(flags=0x1E, payload=s("c") + s("w") + s(b"")), MalformedPacket, MALFORMED)


@pytest.mark.parametrize("topic", ["", "a/+", "#"])
def test_connect_will_topic_invalid(topic: str) -> None:
    fails(connect(flags=0x06, payload=s("c") + s(topic) + s(b"")), TopicNameInvalid, 0x90)


@pytest.mark.parametrize(("name", "level"), [(b"MQIsdp", 3), (b"MQTT", 4)])
def test_connect_password_without_username(name: bytes, level: int) -> None:
    fails(connect(name, level, flags=0x42, payload=s("c") + s(b"pw")), MalformedPacket, MALFORMED)


def test_connect_password_without_username_allowed_in_v5() -> None:
    (packet,) = decode(connect(b"MQTT", 5, flags=0x42, payload=s("c") + s(b"pw")), None)
    assert isinstance(packet, Connect)
    assert (packet.username, packet.password) == (None, b"pw")


def test_connect_mqtt31_missing_username_and_password_are_ignored() -> None:
    (packet,) = decode(connect(b"MQIsdp", 3, flags=0xC2, payload=s("c")), None)
    assert isinstance(packet, Connect)
    assert (packet.username, packet.password) == (None, None)


def test_connect_client_id_length_is_not_the_codecs_business() -> None:
    (packet,) = decode(connect(b"MQIsdp", 3, payload=s("x" * 100)), None)
    assert isinstance(packet, Connect) and packet.client_id == "x" * 100


def test_failed_connect_still_tells_its_version() -> None:
    decoder = Decoder()
    with pytest.raises(MalformedPacket):
        decoder.feed(connect(b"MQTT", 5, flags=0x03))
    assert decoder.version == 5


def test_connect_sets_version_for_the_rest_of_the_buffer() -> None:
    # A v5 DISCONNECT with a reason code right behind a v5 CONNECT in one chunk.
    decoder = Decoder()
    out = decoder.feed(connect(b"MQTT", 5) + b"\xe0\x01\x04" + b"\xf0\x00")
    assert out[1:] == [Disconnect(0x04), Auth()]


# --- packet identifiers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "version"),
    [
        (pkt(0x40, b"\x00\x00"), 4),
        (pkt(0x50, b"\x00\x00"), 5),
        (pkt(0x62, b"\x00\x00"), 4),
        (pkt(0x70, b"\x00\x00"), 4),
        (pkt(0x82, b"\x00\x00" + s("a") + b"\x00"), 4),
        (pkt(0x90, b"\x00\x00\x00"), 4),
        (pkt(0xA2, b"\x00\x00" + s("a")), 4),
        (pkt(0xB0, b"\x00\x00"), 4),
        (pkt(0xB0, b"\x00\x00\x00\x00"), 5),
    ],
)
def test_packet_identifier_zero(data: bytes, version: int) -> None:
    fails(data, MalformedPacket, MALFORMED, version)  # MQTT-2.3.1-1


@pytest.mark.parametrize(
    ("data", "version"),
    [(pkt(0x32, s("t") + b"\x00\x00"), 4), (pkt(0x34, s("t") + b"\x00\x00\x00"), 5)],
)
def test_publish_packet_identifier_zero(data: bytes, version: int) -> None:
    """MQTT-2.3.1-1 names no code: 0x82 Protocol Error, as Mosquitto 2.0.11 answers (the other
    packets' identifier 0 it answers 0x81, as above)."""
    fails(data, ProtocolError, PROTOCOL, version)


# --- PUBLISH topic -------------------------------------------------------------------------------


@pytest.mark.parametrize("topic", ["a/+", "+", "#", "a/#", "a+b", "x#"])
@pytest.mark.parametrize("version", [3, 4, 5])
def test_publish_topic_with_wildcards(topic: str, version: int) -> None:
    """MQTT-3.3.2-2 names no code: 0x82 Protocol Error, as Mosquitto 2.0.11 answers."""
    fails(publish(topic, version), ProtocolError, PROTOCOL, version)


@pytest.mark.parametrize("version", [3, 4])
def test_publish_empty_topic(version: int) -> None:
    fails(publish("", version), TopicNameInvalid, Reason.TOPIC_NAME_INVALID, version)


def test_publish_empty_topic_without_alias_in_v5() -> None:
    """MQTT 5 3.3.2.1: a zero-length Topic Name with no Topic Alias is a Protocol Error."""
    fails(publish("", 5), ProtocolError, Reason.PROTOCOL_ERROR, 5)


def test_publish_empty_topic_with_alias_in_v5() -> None:
    (packet,) = decode(publish("", 5, properties=props(b"\x23\x00\x07")), 5)
    assert isinstance(packet, Publish)
    assert packet.topic == "" and packet.properties == {Prop.TOPIC_ALIAS: 7}


# --- SUBSCRIBE / UNSUBSCRIBE ---------------------------------------------------------------------


@pytest.mark.parametrize("version", [3, 4, 5])
def test_subscribe_without_filters(version: int) -> None:
    """MQTT-3.8.3-3 (a Protocol Error in v5 3.8.3): 0x81, as Mosquitto 2.0.11 answers."""
    body = b"\x00\x01" + (b"\x00" if version == 5 else b"")
    fails(pkt(0x82, body), MalformedPacket, MALFORMED, version)


@pytest.mark.parametrize("version", [3, 4, 5])
def test_unsubscribe_without_filters(version: int) -> None:
    """MQTT-3.10.3-2: 0x81, as Mosquitto 2.0.11 answers."""
    body = b"\x00\x01" + (b"\x00" if version == 5 else b"")
    fails(pkt(0xA2, body), MalformedPacket, MALFORMED, version)


@pytest.mark.parametrize("options", [0x04, 0x08, 0x10, 0x80, 0x03])
def test_subscribe_options_v4(options: int) -> None:
    fails(pkt(0x82, b"\x00\x01" + s("a") + bytes((options,))), MalformedPacket, MALFORMED)


@pytest.mark.parametrize("options", [0x40, 0x80])
def test_subscribe_options_v5(options: int) -> None:
    data = pkt(0x82, b"\x00\x01\x00" + s("a") + bytes((options,)))
    fails(data, MalformedPacket, MALFORMED, 5)


def test_subscribe_maximum_qos_3_v5() -> None:
    """MQTT 5 3.8.3.1 calls Maximum QoS 3 a Protocol Error; either code closes the connection
    (MQTT 5 4.13) and Mosquitto 2.0.11 answers 0x81, so midge does."""
    fails(pkt(0x82, b"\x00\x01\x00" + s("a") + b"\x03"), MalformedPacket, MALFORMED, 5)


def test_subscribe_retain_handling_3() -> None:
    """As Maximum QoS 3: 0x81, as Mosquitto 2.0.11 answers."""
    fails(pkt(0x82, b"\x00\x01\x00" + s("a") + b"\x30"), MalformedPacket, MALFORMED, 5)


def test_subscribe_no_local_on_shared() -> None:
    fails(pkt(0x82, b"\x00\x01\x00" + s("$share/g/a") + b"\x04"), ProtocolError, PROTOCOL, 5)


@pytest.mark.parametrize(
    "flt",
    [
        "",
        "a/#/b",
        "a#",
        "#/",
        "a+",
        "+a/b",
        "$share//a",
        "$share/g",
        "$share/g/",
        "$share/g+/a",
        "$share/#/a",
        "$share/g/a#",
    ],
)
@pytest.mark.parametrize("version", [4, 5])
def test_bad_topic_filters(flt: str, version: int) -> None:
    v5 = b"\x00" if version == 5 else b""
    fails(pkt(0x82, b"\x00\x01" + v5 + s(flt) + b"\x01"), MalformedPacket, MALFORMED, version)
    fails(pkt(0xA2, b"\x00\x01" + v5 + s(flt)), MalformedPacket, MALFORMED, version)


def test_subscribe_options_decoded() -> None:
    (packet,) = decode(pkt(0x82, b"\x00\x07\x00" + s("a/+") + b"\x2e"), 5)
    assert packet == Subscribe(7, [Subscription("a/+", 2, True, True, 2)])


# --- properties ----------------------------------------------------------------------------------


def test_unknown_property() -> None:
    fails(pkt(0xE0, b"\x00" + props(b"\x05\x00")), MalformedPacket, MALFORMED, 5)


def test_property_not_allowed_in_packet() -> None:
    # Topic Alias in DISCONNECT; Will Delay Interval in CONNECT (it is a will property).
    fails(pkt(0xE0, b"\x00" + props(b"\x23\x00\x01")), MalformedPacket, MALFORMED, 5)
    data = connect(level=5, properties=props(b"\x18\x00\x00\x00\x01"))
    fails(data, MalformedPacket, MALFORMED, None)
    # Session Expiry Interval in will properties.
    data = connect(
        level=5, flags=0x06, payload=s("c") + props(b"\x11\x00\x00\x00\x01") + s("w") + s(b"")
    )
    fails(data, MalformedPacket, MALFORMED, None)


def test_will_properties_decoded() -> None:
    data = connect(
        level=5, flags=0x06, payload=s("c") + props(b"\x18\x00\x00\x00\x05") + s("w") + s(b"x")
    )
    (packet,) = decode(data, None)
    assert isinstance(packet, Connect)
    assert packet.will == Will("w", b"x", 0, False, {Prop.WILL_DELAY_INTERVAL: 5})


def test_duplicate_property() -> None:
    fails(
        pkt(0xE0, b"\x00" + props(b"\x1f" + s("a"), b"\x1f" + s("b"))), ProtocolError, PROTOCOL, 5
    )


def test_repeatable_properties_are_lists() -> None:
    pairs = b"\x26" + s("a") + s("1") + b"\x26" + s("a") + s("2")
    (packet,) = decode(publish("t", 5, 1, props(pairs, b"\x0b\x01", b"\x0b\x82\x01")), 5)
    assert isinstance(packet, Publish)
    assert packet.properties == {
        Prop.USER_PROPERTY: [("a", "1"), ("a", "2")],
        Prop.SUBSCRIPTION_IDENTIFIER: [1, 130],
    }


def test_two_subscription_identifiers_in_subscribe() -> None:
    data = pkt(0x82, b"\x00\x01" + props(b"\x0b\x01", b"\x0b\x02") + s("a") + b"\x00")
    fails(data, ProtocolError, PROTOCOL, 5)


def test_forbidden_publish_property_values() -> None:
    fails(publish("t", 5, properties=props(b"\x01\x02")), ProtocolError, PROTOCOL, 5)  # PFI 2


def test_subscription_identifier_0_is_malformed_as_for_mosquitto() -> None:
    """A Protocol Error by MQTT 5 3.8.2.1.2; either code closes, and Mosquitto sends 0x81."""
    fails(publish("t", 5, properties=props(b"\x0b\x00")), MalformedPacket, MALFORMED, 5)


def test_topic_alias_0_is_topic_alias_invalid() -> None:
    """MQTT-3.3.2-8: answered 0x94, as an alias above the maximum is."""
    fails(publish("t", 5, properties=props(b"\x23\x00\x00")), ProtocolError, 0x94, 5)


@pytest.mark.parametrize(
    "prop",
    [
        b"\x17\x02",  # Request Problem Information
        b"\x19\x02",  # Request Response Information
        b"\x21\x00\x00",  # Receive Maximum 0
        b"\x27\x00\x00\x00\x00",  # Maximum Packet Size 0
    ],
)
def test_forbidden_connect_property_values(prop: bytes) -> None:
    fails(connect(level=5, properties=props(prop)), ProtocolError, PROTOCOL, None)


@pytest.mark.parametrize(
    "prop",
    [
        b"\x24\x02",  # Maximum QoS
        b"\x25\x02",  # Retain Available
        b"\x28\x02",  # Wildcard Subscription Available
        b"\x29\x02",  # Subscription Identifiers Available
        b"\x2a\x02",  # Shared Subscription Available
        b"\x21\x00\x00",  # Receive Maximum 0
        b"\x27\x00\x00\x00\x00",  # Maximum Packet Size 0
    ],
)
def test_forbidden_connack_property_values(prop: bytes) -> None:
    fails(pkt(0x20, b"\x00\x00" + props(prop)), ProtocolError, PROTOCOL, 5)


def test_authentication_data_without_method() -> None:
    fails(connect(level=5, properties=props(b"\x16" + s(b"d"))), ProtocolError, PROTOCOL, None)
    fails(pkt(0xF0, b"\x18" + props(b"\x16" + s(b"d"))), ProtocolError, PROTOCOL, 5)


@pytest.mark.parametrize(
    "prop_list",
    [
        b"\x80\x00",  # non-minimal property length
        b"\x02\x0b\x80\x00",  # non-minimal Subscription Identifier
        b"\x05\x0b\x80\x80\x80\x80",  # Subscription Identifier over 4 bytes
    ],
)
def test_non_minimal_varints_inside_packets(prop_list: bytes) -> None:
    fails(publish("t", 5, properties=prop_list), MalformedPacket, MALFORMED, 5)


# --- reason codes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pkt(0x40, b"\x00\x01\x05"),  # PUBACK 0x05
        pkt(0x62, b"\x00\x01\x10"),  # PUBREL 0x10
        pkt(0x20, b"\x00\x01\x00"),  # CONNACK 0x01
        pkt(0x90, b"\x00\x01\x00\x03"),  # SUBACK 0x03
        pkt(0xB0, b"\x00\x01\x00\x02"),  # UNSUBACK 0x02
        pkt(0xE0, b"\x01"),  # DISCONNECT 0x01
        pkt(0xF0, b"\x01\x00"),  # AUTH 0x01
    ],
)
def test_reason_codes_not_allowed_in_packet(data: bytes) -> None:
    fails(data, ProtocolError, PROTOCOL, 5)


def test_v4_return_codes() -> None:
    fails(pkt(0x20, b"\x00\x06"), MalformedPacket, MALFORMED)
    fails(pkt(0x90, b"\x00\x01\x03"), ProtocolError, PROTOCOL)  # MQTT-3.9.3-2
    assert len(decode(pkt(0x90, b"\x00\x01\x00\x01\x02\x80"))) == 1


def test_connack_flags() -> None:
    fails(pkt(0x20, b"\x02\x00"), MalformedPacket, MALFORMED)  # MQTT-3.2.2-1
    fails(pkt(0x20, b"\x01\x05"), ProtocolError, PROTOCOL)  # session present on refusal
    fails(pkt(0x20, b"\x01\x87\x00"), ProtocolError, PROTOCOL, 5)


def test_empty_suback_and_unsuback() -> None:
    fails(pkt(0x90, b"\x00\x01"), ProtocolError, PROTOCOL)
    fails(pkt(0xB0, b"\x00\x01\x00"), ProtocolError, PROTOCOL, 5)


def test_short_forms_accepted() -> None:
    # v5 PUBACK with reason 0 but no properties (allowed, MQTT 5.0 3.4.2.1), DISCONNECT likewise.
    assert decode(pkt(0x40, b"\x00\x01\x00"), 5) == [Puback(1)]
    assert decode(pkt(0x40, b"\x00\x01\x00\x00"), 5) == [Puback(1)]
    assert decode(pkt(0xE0, b"\x00"), 5) == [Disconnect()]
    assert decode(pkt(0xE0, b"\x04\x00"), 5) == [Disconnect(0x04)]
    assert decode(pkt(0xF0, b""), 5) == [Auth()]


def test_auth_with_reason_but_no_property_length() -> None:
    fails(pkt(0xF0, b"\x18"), MalformedPacket, MALFORMED, 5)


# --- packet size ---------------------------------------------------------------------------------


def test_packet_too_large_from_the_header_alone() -> None:
    decoder = Decoder(4, max_packet_size=100)
    with pytest.raises(PacketTooLarge) as info:
        decoder.feed(b"\x30\xe8\x07")  # remaining length 1000; no body sent at all
    assert info.value.reason == Reason.PACKET_TOO_LARGE


def test_packet_size_counts_the_fixed_header() -> None:
    data = encode(Publish("t", b"x" * 95), 4)
    assert len(data) == 100
    assert decode(data, 4, max_packet_size=100) != []
    with pytest.raises(PacketTooLarge):
        Decoder(4, max_packet_size=99).feed(data)


def test_max_packet_size_is_settable() -> None:
    decoder = Decoder(4)
    decoder.max_packet_size = 10
    with pytest.raises(PacketTooLarge):
        decoder.feed(encode(Publish("t", b"x" * 20), 4))


# --- failure is sticky ---------------------------------------------------------------------------


def test_decoder_stays_failed() -> None:
    decoder = Decoder(4)
    good = encode(Pingreq(), 4)
    with pytest.raises(MalformedPacket) as first:
        decoder.feed(good + b"\x00\x00" + good)
    for _ in range(3):
        with pytest.raises(MalformedPacket) as again:
            decoder.next_packet()
        assert again.value is first.value
    with pytest.raises(MalformedPacket):
        decoder.feed(good)


def test_packets_before_a_bad_one_are_returned_by_next_packet() -> None:
    decoder = Decoder(4)
    decoder.receive(encode(Pingreq(), 4) + b"\x00\x00")
    assert decoder.next_packet() == Pingreq()
    with pytest.raises(MalformedPacket):
        decoder.next_packet()


def test_encode_unsubscribe_and_subscribe_v3() -> None:
    # v3 uses the 3.1.1 layouts.
    for packet in (Unsubscribe(1, ["a/b"]), Subscribe(2, [Subscription("a/#", 1)])):
        assert decode(encode(packet, 3), 3) == [packet]


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8")))
def test_ascii_fast_path_agrees_with_the_regex(text: str) -> None:
    """``has_forbidden`` (isascii/isprintable for ASCII) decides exactly as the full regex."""
    assert has_forbidden(text) == (FORBIDDEN.search(text) is not None)


@pytest.mark.parametrize("code", [*range(0x20), 0x7F])
def test_ascii_controls_are_forbidden_in_topics(code: int) -> None:
    fails(publish(b"a" + bytes([code]) + b"b"), MalformedPacket, MALFORMED)
