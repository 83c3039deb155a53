"""The incremental MQTT decoder: bytes in, typed packets out (sans-IO).

:class:`Decoder` takes the stream in chunks split anywhere and returns whole packets. It is the
broker's hot path, so it works on ``bytes`` with integer offsets: a chunk that holds whole packets
is parsed in place without copying it (each packet is one slice away from its fields), and a
packet that arrives in pieces is joined once, when all of it is there. Every failure is a
:class:`~midge.codec.reasons.CodecError` subclass carrying the MQTT 5 reason code to answer with.

Choices where the spec leaves room (each matches Mosquitto 2 unless said otherwise):

* Remaining Length is at most 4 bytes (MQTT 5.0 section 1.5.5); a 5th continuation byte is
  malformed. A non-minimal Remaining Length (e.g. ``0x80 0x00``) is accepted, as Mosquitto does;
  non-minimal Variable Byte Integers *inside* the packet (property length, Subscription Identifier)
  are malformed, as in Mosquitto's ``packet__read_varint``.
* Strings are checked as :mod:`midge.codec.utf8` says (Mosquitto's rules: no controls, no
  non-characters).
* PUBLISH with QoS 0 and DUP 1 is malformed (MQTT-3.3.1-2; Mosquitto from 2.0.12 on, 2.0.11 let
  it through).
* Reason codes a packet type cannot carry (MQTT 5.0 table 2-6) and v3 SUBACK return codes other
  than 0, 1, 2, 0x80 (MQTT-3.9.3-2) are protocol errors (Mosquitto does not check them).
* MQTT 3.1 ("MQIsdp") CONNECT: like Mosquitto, will QoS/retain without the will flag and a
  user name / password flag whose field is missing at the end of the packet are tolerated.
* Spec rules Mosquitto 2.0.11 skips but we apply, as protocol errors: Payload Format Indicator
  not 0/1, No Local on a shared subscription (MQTT-3.8.3-4), Retain Handling 3 and an empty
  UNSUBSCRIBE (Mosquitto says malformed for these two).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from midge.codec.packets import (
    MQTT5,
    UNLIMITED_PACKET_SIZE,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    Pingreq,
    Pingresp,
    Properties,
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
    Will,
)
from midge.codec.properties import REPEATABLE, SPEC, WILL, Prop, PropType
from midge.codec.reasons import (
    REASONS_BY_PACKET,
    CodecError,
    MalformedPacket,
    PacketTooLarge,
    ProtocolError,
    Reason,
    TopicNameInvalid,
    UnsupportedProtocolVersion,
)
from midge.codec.topics import validate_topic_filter
from midge.codec.utf8 import FORBIDDEN, has_forbidden

__all__ = ["Decoder", "decode_properties"]

#: Fixed-header flag nibble each type must carry (MQTT-2.2.2-1/2, v5 MQTT-2.1.3-1); PUBLISH: any.
_REQUIRED_FLAGS = (None, 0, 0, None, 0, 0, 2, 0, 2, 0, 2, 0, 0, 0, 0, 0)

#: Property values the v5 spec calls a Protocol Error (sections 3.1.2.11, 3.2.2.3, 3.3.2.3).
_BOOLEAN_PROPS = frozenset(
    {
        Prop.PAYLOAD_FORMAT_INDICATOR,
        Prop.REQUEST_PROBLEM_INFORMATION,
        Prop.REQUEST_RESPONSE_INFORMATION,
        Prop.MAXIMUM_QOS,
        Prop.RETAIN_AVAILABLE,
        Prop.WILDCARD_SUBSCRIPTION_AVAILABLE,
        Prop.SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        Prop.SHARED_SUBSCRIPTION_AVAILABLE,
    }
)
_NONZERO_PROPS = frozenset(
    {
        Prop.RECEIVE_MAXIMUM,
        Prop.MAXIMUM_PACKET_SIZE,
        Prop.TOPIC_ALIAS,
        Prop.SUBSCRIPTION_IDENTIFIER,
    }
)

_PROP_SPEC: dict[int, tuple[int, frozenset[int]]] = {
    int(k): (int(t), frozenset(int(x) for x in where)) for k, (t, where) in SPEC.items()
}
_BYTE, _TWO, _FOUR, _VARINT = PropType.BYTE, PropType.TWO_BYTE, PropType.FOUR_BYTE, PropType.VARINT
_UTF8, _BINARY, _PAIR = PropType.UTF8, PropType.BINARY, PropType.UTF8_PAIR
_USER_PROPERTY: Final = int(Prop.USER_PROPERTY)
_SUB_ID: Final = int(Prop.SUBSCRIPTION_IDENTIFIER)
_TOPIC_ALIAS: Final = int(Prop.TOPIC_ALIAS)
_AUTH_METHOD: Final = int(Prop.AUTHENTICATION_METHOD)
_AUTH_DATA: Final = int(Prop.AUTHENTICATION_DATA)
_REPEATABLE = frozenset(int(p) for p in REPEATABLE)


def _short(what: str) -> MalformedPacket:
    return MalformedPacket(f"packet too short: {what} runs past the remaining length")


def _str(buf: bytes, pos: int, end: int, what: str) -> tuple[str, int]:
    """A length-prefixed UTF-8 string at ``pos``; returns it and the offset after it."""
    start = pos + 2
    if start > end:
        raise _short(what)
    stop = start + ((buf[pos] << 8) | buf[pos + 1])
    if stop > end:
        raise _short(what)
    try:
        text = buf[start:stop].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket(f"{what} is not well-formed UTF-8 (MQTT-1.5.4-1)") from None
    if has_forbidden(text):
        raise MalformedPacket(
            f"{what} contains U+0000, a control character or a non-character (MQTT-1.5.4-2)"
        )
    return text, stop


def _bin(buf: bytes, pos: int, end: int, what: str) -> tuple[bytes, int]:
    """Length-prefixed Binary Data at ``pos``; returns it and the offset after it."""
    start = pos + 2
    if start > end:
        raise _short(what)
    stop = start + ((buf[pos] << 8) | buf[pos + 1])
    if stop > end:
        raise _short(what)
    return buf[start:stop], stop


def _packet_id(buf: bytes, pos: int, end: int) -> int:
    if pos + 2 > end:
        raise _short("packet identifier")
    pid = (buf[pos] << 8) | buf[pos + 1]
    if pid == 0:
        raise MalformedPacket("packet identifier 0 (MQTT-2.3.1-1)")
    return pid


def _varint(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """A Variable Byte Integer inside a packet: at most 4 bytes, minimally encoded (1.5.5)."""
    value = 0
    shift = 0
    for i in range(pos, min(pos + 4, end)):
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i > pos:
                raise MalformedPacket(f"{what}: non-minimal Variable Byte Integer (MQTT-1.5.5-1)")
            return value, i + 1
        shift += 7
    if pos + 4 <= end:
        raise MalformedPacket(f"{what}: Variable Byte Integer longer than 4 bytes")
    raise _short(what)


def decode_properties(buf: bytes, pos: int, end: int, where: int) -> tuple[Properties, int]:
    """The v5 property list at ``pos`` (its length first) for packet type ``where``.

    ``where`` is a :class:`PacketType` or :data:`midge.codec.properties.WILL`. Unknown or misplaced
    identifiers and lengths running past the packet are malformed; a repeated non-repeatable
    property and values the spec forbids are protocol errors (MQTT 5.0 section 2.2.2.2).
    """
    if pos < end and buf[pos] == 0:  # the common case: no properties
        return {}, pos + 1
    length, pos = _varint(buf, pos, end, "property length")
    stop = pos + length
    if stop > end:
        raise _short("property list")
    props: Properties = {}
    while pos < stop:
        pid = buf[pos]
        spec = _PROP_SPEC.get(pid)
        if spec is None:
            raise MalformedPacket(f"unknown property identifier 0x{pid:02x}")
        ptype, allowed = spec
        if where not in allowed:
            raise MalformedPacket(f"property 0x{pid:02x} is not allowed in this packet")
        pos += 1
        value: Any
        if ptype == _BYTE:
            if pos >= stop:
                raise _short("property")
            value = buf[pos]
            pos += 1
        elif ptype == _TWO:
            if pos + 2 > stop:
                raise _short("property")
            value = (buf[pos] << 8) | buf[pos + 1]
            pos += 2
        elif ptype == _FOUR:
            if pos + 4 > stop:
                raise _short("property")
            value = int.from_bytes(buf[pos : pos + 4])
            pos += 4
        elif ptype == _VARINT:
            value, pos = _varint(buf, pos, stop, "Subscription Identifier")
        elif ptype == _UTF8:
            value, pos = _str(buf, pos, stop, f"property 0x{pid:02x}")
        elif ptype == _BINARY:
            value, pos = _bin(buf, pos, stop, f"property 0x{pid:02x}")
        else:  # UTF-8 string pair
            name, pos = _str(buf, pos, stop, "User Property name")
            val, pos = _str(buf, pos, stop, "User Property value")
            value = (name, val)
        if pid in _REPEATABLE:
            if pid == _SUB_ID and value == 0:
                # A Protocol Error by section 3.8.2.1.2; 0x81 is the code Mosquitto sends.
                raise MalformedPacket("Subscription Identifier 0 (MQTT 5.0 section 3.8.2.1.2)")
            existing = props.get(pid)
            if existing is None:
                props[pid] = [value]
            elif pid == _SUB_ID and where == PacketType.SUBSCRIBE:
                raise ProtocolError("more than one Subscription Identifier in SUBSCRIBE")
            else:
                existing.append(value)
            continue
        if pid in props:
            raise ProtocolError(f"property 0x{pid:02x} appears more than once")
        if pid in _BOOLEAN_PROPS:
            if value > 1:
                raise ProtocolError(f"property 0x{pid:02x} must be 0 or 1, got {value}")
        elif pid in _NONZERO_PROPS and value == 0:
            if pid == _TOPIC_ALIAS:
                # MQTT-3.3.2-8: 0 is never a valid alias; answered 0x94 like an out-of-range one.
                raise ProtocolError("Topic Alias 0 (MQTT-3.3.2-8)", Reason.TOPIC_ALIAS_INVALID)
            raise ProtocolError(f"property 0x{pid:02x} must not be 0")
        props[pid] = value
    if _AUTH_DATA in props and _AUTH_METHOD not in props:
        raise ProtocolError("Authentication Data without Authentication Method (3.1.2.11.10)")
    return props, stop


def _v5_props(buf: bytes, pos: int, end: int, where: int, version: int) -> tuple[Properties, int]:
    if version == MQTT5:
        return decode_properties(buf, pos, end, where)
    return {}, pos


def _end(pos: int, end: int, what: str) -> None:
    if pos != end:
        raise MalformedPacket(f"{what}: {end - pos} unexpected bytes after the packet's contents")


def _reason(code: int, ptype: int) -> int:
    if code not in REASONS_BY_PACKET[ptype]:
        raise ProtocolError(f"reason code 0x{code:02x} is not valid in packet type {ptype}")
    return code


# --- one parser per packet type: (buf, start, end, flags, version) -> packet ---------------------


def _connect(buf: bytes, pos: int, end: int, flags: int, version: int) -> Connect:
    name, pos = _str(buf, pos, end, "protocol name")
    if pos >= end:
        raise _short("protocol level")
    level = buf[pos]
    pos += 1
    # Bit 0x80 of a 3.1 / 3.1.1 level marks a Mosquitto bridge (its ``try_private``); Mosquitto
    # accepts it on those levels only, and so does midge.
    bridge = bool(level & 0x80) and (level & 0x7F) in (3, 4)
    if bridge:
        level &= 0x7F
    if name == "MQTT":
        if level not in (4, 5):
            raise UnsupportedProtocolVersion(f"protocol 'MQTT' level {level}", level=level)
    elif name == "MQIsdp":
        if level != 3:
            raise UnsupportedProtocolVersion(f"protocol 'MQIsdp' level {level}", level=level)
    else:
        raise ProtocolError(f"unknown protocol name {name!r} (MQTT-3.1.2-1)")
    if pos + 3 > end:
        raise _short("connect flags / keep alive")
    cflags = buf[pos]
    keep_alive = (buf[pos + 1] << 8) | buf[pos + 2]
    pos += 3
    if cflags & 0x01:
        raise MalformedPacket("CONNECT reserved flag is set (MQTT-3.1.2-3)")
    will_flag = cflags & 0x04
    will_qos = (cflags >> 3) & 0x03
    will_retain = bool(cflags & 0x20)
    has_password = cflags & 0x40
    has_username = cflags & 0x80
    if not will_flag and (will_qos or will_retain) and level != 3:
        # MQTT 3.1 has no such rule and Mosquitto does not apply it to "MQIsdp" clients.
        raise MalformedPacket("will QoS/retain set without the will flag (MQTT-3.1.2-11/13/15)")
    if will_qos == 3:
        raise MalformedPacket("will QoS 3 (MQTT-3.1.2-12)")
    if has_password and not has_username and level != MQTT5:
        raise MalformedPacket("password flag without username flag (MQTT-3.1.2-22)")
    props, pos = _v5_props(buf, pos, end, PacketType.CONNECT, level)
    client_id, pos = _str(buf, pos, end, "client identifier")
    will = None
    if will_flag:
        will_props, pos = _v5_props(buf, pos, end, WILL, level)
        will_topic, pos = _str(buf, pos, end, "will topic")
        if not will_topic or "+" in will_topic or "#" in will_topic:
            raise TopicNameInvalid(f"will topic {will_topic!r} is empty or has a wildcard")
        will_payload, pos = _bin(buf, pos, end, "will payload")
        will = Will(will_topic, will_payload, will_qos, will_retain, will_props)
    username = password = None
    # MQTT 3.1 clients may set the user name / password flags and then omit the field; Mosquitto
    # ignores the flag for them, and so do we. From 3.1.1 on the field is required.
    if has_username and not (level == 3 and pos == end):
        username, pos = _str(buf, pos, end, "user name")
    if has_password and not (level == 3 and pos == end):
        password, pos = _bin(buf, pos, end, "password")
    _end(pos, end, "CONNECT")
    return Connect(
        client_id,
        level,
        name,
        bool(cflags & 0x02),
        keep_alive,
        will,
        username,
        password,
        props,
        bridge,
    )


def _connect_level(buf: bytes, pos: int, end: int) -> int | None:
    """The protocol level of a CONNECT if its name and level are ones we speak, else None."""
    if pos + 2 > end:
        return None
    stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    if stop >= end:
        return None
    name, level = buf[pos + 2 : stop], buf[stop]
    if (name == b"MQTT" and level in (4, 5)) or (name == b"MQIsdp" and level == 3):
        return level
    return None


def _connack(buf: bytes, pos: int, end: int, flags: int, version: int) -> Connack:
    if pos + 2 > end:
        raise _short("CONNACK")
    ack_flags = buf[pos]
    code = buf[pos + 1]
    if ack_flags & 0xFE:
        raise MalformedPacket("CONNACK reserved flags set (MQTT-3.2.2-1)")
    if version == MQTT5:
        _reason(code, PacketType.CONNACK)
        props, pos = decode_properties(buf, pos + 2, end, PacketType.CONNACK)
    else:
        if code > 5:
            raise MalformedPacket(f"CONNACK return code {code} is reserved (3.1.1 section 3.2.2.3)")
        props, pos = {}, pos + 2
    if ack_flags and code:
        raise ProtocolError("session present with a non-zero reason code (MQTT-3.2.2-6)")
    _end(pos, end, "CONNACK")
    return Connack(bool(ack_flags), code, props)


def _publish(buf: bytes, pos: int, end: int, flags: int, version: int) -> Publish:
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise MalformedPacket("PUBLISH QoS 3 (MQTT-3.3.1-4)")
    dup = bool(flags & 0x08)
    if dup and not qos:
        raise MalformedPacket("PUBLISH QoS 0 with DUP set (MQTT-3.3.1-2)")
    # Topic name, inlined from _str: this is the hot path.
    start = pos + 2
    if start > end:
        raise _short("topic name")
    stop = start + ((buf[pos] << 8) | buf[pos + 1])
    if stop > end:
        raise _short("topic name")
    try:
        topic = buf[start:stop].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket("topic name is not well-formed UTF-8 (MQTT-1.5.4-1)") from None
    # has_forbidden, inlined: ASCII needs no regex (see midge.codec.utf8).
    if not (topic.isascii() and topic.isprintable()) and FORBIDDEN.search(topic) is not None:
        raise MalformedPacket("topic name contains U+0000, a control or a non-character")
    pos = stop
    packet_id = None
    if qos:
        if pos + 2 > end:
            raise _short("packet identifier")
        packet_id = (buf[pos] << 8) | buf[pos + 1]
        if not packet_id:
            # MQTT-2.3.1-1 names no code; Mosquitto 2.0.11 answers 0x82 (Protocol Error).
            raise ProtocolError("PUBLISH packet identifier 0 (MQTT-2.3.1-1)")
        pos += 2
    if version == MQTT5:
        if pos < end and buf[pos] == 0:
            props: Properties = {}
            pos += 1
        else:
            props, pos = decode_properties(buf, pos, end, PacketType.PUBLISH)
        if not topic and _TOPIC_ALIAS not in props:
            # v5 3.3.2.1: "a Protocol Error if the Topic Name is zero length and there is no
            # Topic Alias".
            raise ProtocolError("empty topic name without a Topic Alias (MQTT 5 3.3.2.1)")
    else:
        props = {}
        if not topic:
            raise TopicNameInvalid("empty topic name (MQTT-4.7.3-1)")
    if "+" in topic or "#" in topic:
        # MQTT-3.3.2-2 names no code; Mosquitto 2.0.11 answers 0x82 (Protocol Error).
        raise ProtocolError(f"topic name {topic!r} contains a wildcard (MQTT-3.3.2-2)")
    return Publish(topic, buf[pos:end], qos, bool(flags & 0x01), dup, packet_id, props)


_ACK_TYPES = {
    Puback: PacketType.PUBACK,
    Pubrec: PacketType.PUBREC,
    Pubrel: PacketType.PUBREL,
    Pubcomp: PacketType.PUBCOMP,
}


def _ack(
    cls: type[Puback] | type[Pubrec] | type[Pubrel] | type[Pubcomp],
) -> Callable[[bytes, int, int, int, int], Packet]:
    ptype = int(_ACK_TYPES[cls])

    def parse(buf: bytes, pos: int, end: int, flags: int, version: int) -> Packet:
        packet_id = _packet_id(buf, pos, end)
        pos += 2
        if version == MQTT5:
            # MQTT 5.0 3.4.2.1: reason code and properties may be omitted.
            if pos == end:
                return cls(packet_id)
            code = _reason(buf[pos], ptype)
            if pos + 1 == end:
                return cls(packet_id, code)
            props, pos = decode_properties(buf, pos + 1, end, ptype)
            _end(pos, end, cls.__name__.upper())
            return cls(packet_id, code, props)
        _end(pos, end, cls.__name__.upper())
        return cls(packet_id)

    return parse


def _subscribe(buf: bytes, pos: int, end: int, flags: int, version: int) -> Subscribe:
    packet_id = _packet_id(buf, pos, end)
    props, pos = _v5_props(buf, pos + 2, end, PacketType.SUBSCRIBE, version)
    subs: list[Subscription] = []
    while pos < end:
        flt, pos = _str(buf, pos, end, "topic filter")
        if pos >= end:
            raise _short("subscription options")
        opts = buf[pos]
        pos += 1
        qos = opts & 0x03
        if qos == 3:
            # v5 3.8.3.1 calls it a Protocol Error, v3.1.1 (MQTT-3.8.3-4) malformed; Mosquitto
            # 2.0.11 answers 0x81 (Malformed Packet) in v5, and either code closes the connection
            # (MQTT 5 4.13), so midge answers as Mosquitto does.
            raise MalformedPacket("SUBSCRIBE requested QoS 3 (MQTT-3.8.3-4, MQTT 5 3.8.3.1)")
        if version == MQTT5:
            if opts & 0xC0:
                raise MalformedPacket("SUBSCRIBE options reserved bits set (MQTT-3.8.3-5)")
            rh = (opts >> 4) & 0x03
            if rh == 3:
                # A Protocol Error in the spec; 0x81 as Mosquitto 2.0.11 answers (see QoS 3).
                raise MalformedPacket("SUBSCRIBE retain handling 3 (MQTT 5.0 section 3.8.3.1)")
            validate_topic_filter(flt)
            no_local = bool(opts & 0x04)
            if no_local and flt.startswith("$share/"):
                raise ProtocolError("No Local on a shared subscription (MQTT-3.8.3-4)")
            subs.append(Subscription(flt, qos, no_local, bool(opts & 0x08), rh))
        else:
            if opts & 0xFC:
                raise MalformedPacket("SUBSCRIBE requested QoS reserved bits set (MQTT-3.8.3-4)")
            validate_topic_filter(flt)
            subs.append(Subscription(flt, qos))
    if not subs:
        # A Protocol Error in the spec; 0x81 as Mosquitto 2.0.11 answers (see QoS 3).
        raise MalformedPacket("SUBSCRIBE with no topic filters (MQTT-3.8.3-3)")
    return Subscribe(packet_id, subs, props)


_SUBACK_V3 = frozenset({0, 1, 2, 0x80})


def _suback(buf: bytes, pos: int, end: int, flags: int, version: int) -> Suback:
    packet_id = _packet_id(buf, pos, end)
    props, pos = _v5_props(buf, pos + 2, end, PacketType.SUBACK, version)
    codes = list(buf[pos:end])
    if not codes:
        raise ProtocolError("SUBACK without return codes (MQTT-3.9.3-1)")
    allowed = REASONS_BY_PACKET[PacketType.SUBACK] if version == MQTT5 else _SUBACK_V3
    for code in codes:
        if code not in allowed:
            raise ProtocolError(f"SUBACK return code 0x{code:02x} is reserved (MQTT-3.9.3-2)")
    return Suback(packet_id, codes, props)


def _unsubscribe(buf: bytes, pos: int, end: int, flags: int, version: int) -> Unsubscribe:
    packet_id = _packet_id(buf, pos, end)
    props, pos = _v5_props(buf, pos + 2, end, PacketType.UNSUBSCRIBE, version)
    filters: list[str] = []
    while pos < end:
        flt, pos = _str(buf, pos, end, "topic filter")
        validate_topic_filter(flt)
        filters.append(flt)
    if not filters:
        # A Protocol Error in the spec; 0x81 as Mosquitto 2.0.11 answers (see SUBSCRIBE).
        raise MalformedPacket("UNSUBSCRIBE with no topic filters (MQTT-3.10.3-2)")
    return Unsubscribe(packet_id, filters, props)


def _unsuback(buf: bytes, pos: int, end: int, flags: int, version: int) -> Unsuback:
    packet_id = _packet_id(buf, pos, end)
    if version != MQTT5:
        _end(pos + 2, end, "UNSUBACK")
        return Unsuback(packet_id)
    props, pos = decode_properties(buf, pos + 2, end, PacketType.UNSUBACK)
    codes = list(buf[pos:end])
    if not codes:
        raise ProtocolError("UNSUBACK without reason codes (MQTT 5.0 section 3.11.3)")
    allowed = REASONS_BY_PACKET[PacketType.UNSUBACK]
    for code in codes:
        if code not in allowed:
            raise ProtocolError(f"UNSUBACK reason code 0x{code:02x} is not allowed")
    return Unsuback(packet_id, codes, props)


def _pingreq(buf: bytes, pos: int, end: int, flags: int, version: int) -> Pingreq:
    _end(pos, end, "PINGREQ")
    return Pingreq()


def _pingresp(buf: bytes, pos: int, end: int, flags: int, version: int) -> Pingresp:
    _end(pos, end, "PINGRESP")
    return Pingresp()


def _disconnect(buf: bytes, pos: int, end: int, flags: int, version: int) -> Disconnect:
    if version != MQTT5 or pos == end:
        # MQTT 5.0 3.14.2.1: no reason code means 0x00 Normal disconnection.
        _end(pos, end, "DISCONNECT")
        return Disconnect()
    code = _reason(buf[pos], PacketType.DISCONNECT)
    if pos + 1 == end:
        return Disconnect(code)
    props, pos = decode_properties(buf, pos + 1, end, PacketType.DISCONNECT)
    _end(pos, end, "DISCONNECT")
    return Disconnect(code, props)


def _auth(buf: bytes, pos: int, end: int, flags: int, version: int) -> Auth:
    if version != MQTT5:
        raise MalformedPacket("AUTH is reserved before MQTT 5.0")
    if pos == end:
        # MQTT 5.0 3.15.2.1: a Remaining Length of 0 means Success with no properties.
        return Auth()
    code = _reason(buf[pos], PacketType.AUTH)
    if pos + 1 == end:
        # Unlike PUBACK and DISCONNECT, only the whole variable header may be omitted (3.15.2.1).
        raise MalformedPacket("AUTH with a reason code but no property length")
    props, pos = decode_properties(buf, pos + 1, end, PacketType.AUTH)
    _end(pos, end, "AUTH")
    return Auth(code, props)


_Parser = Callable[[bytes, int, int, int, int], Packet]
_PARSERS: tuple[_Parser | None, ...] = (
    None,
    _connect,
    _connack,
    _publish,
    _ack(Puback),
    _ack(Pubrec),
    _ack(Pubrel),
    _ack(Pubcomp),
    _subscribe,
    _suback,
    _unsubscribe,
    _unsuback,
    _pingreq,
    _pingresp,
    _disconnect,
    _auth,
)


class Decoder:
    """Splits a byte stream into MQTT packets for one connection.

    ``version`` (3, 4 or 5) decides how version-dependent packets are read; ``None`` (a server
    before CONNECT) reads as 3.1.1, and decoding a CONNECT sets it to the CONNECT's level so the
    packets after it in the same buffer are read right. A CONNECT that fails after a protocol name
    and level we speak sets it too, so the caller can answer in that version's format.
    ``max_packet_size`` is checked against the whole packet's size as soon as its fixed header is
    complete, before its body is buffered. After an error the decoder is failed and raises the
    same error on every call.
    """

    __slots__ = (
        "_buf",
        "_error",
        "_need",
        "_pending",
        "_pending_len",
        "_pos",
        "max_packet_size",
        "version",
    )

    def __init__(
        self, version: int | None = None, max_packet_size: int = UNLIMITED_PACKET_SIZE
    ) -> None:
        self.version = version
        self.max_packet_size = max_packet_size
        self._buf = b""  # the bytes being parsed; _buf[_pos:] is not consumed yet
        self._pos = 0
        self._pending: list[bytes] = []  # chunks received after _buf, joined when needed
        self._pending_len = 0
        self._need = 0  # bytes the next packet needs from _pos, once its header is known
        self._error: CodecError | None = None

    def receive(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` to the stream (no parsing happens here; dropped once failed). A
        chunk that is not bytes is copied: its owner may reuse it."""
        if not data or self._error is not None:
            return
        if type(data) is not bytes:  # a bytearray or memoryview: copied (bytes() of bytes
            data = bytes(data)  # is no copy, but a call that looks for __bytes__ first)
        if self._pos >= len(self._buf) and not self._pending:
            self._buf = data
            self._pos = 0
        else:
            self._pending.append(data)
            self._pending_len += len(data)

    def feed(self, data: bytes) -> list[Packet]:
        """Append ``data`` and return every complete packet now in the stream."""
        self.receive(data)
        packets: list[Packet] = []
        packet = self.next_packet()
        while packet is not None:
            packets.append(packet)
            packet = self.next_packet()
        return packets

    def next_packet(self) -> Packet | None:
        """The next whole packet, or ``None`` until more bytes arrive; raises on bad input."""
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except CodecError as exc:
            self._error = exc
            self._buf = b""
            self._pending = []
            raise

    def _join(self) -> None:
        self._buf = b"".join([self._buf[self._pos :], *self._pending])
        self._pos = 0
        self._pending = []
        self._pending_len = 0

    def _next(self) -> Packet | None:
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if self._pending and (
            avail < 5 or (self._need and avail + self._pending_len >= self._need)
        ):
            self._join()
            buf = self._buf
            pos = 0
            avail = len(buf)
        if avail < 2:
            return None
        first = buf[pos]
        # Remaining Length: 1 to 4 bytes (MQTT 5.0 section 1.5.5, 2.1.4).
        byte = buf[pos + 1]
        length = byte & 0x7F
        i = pos + 2
        if byte & 0x80:
            shift = 7
            while True:
                if i - pos > 4:
                    raise MalformedPacket("Remaining Length longer than 4 bytes (MQTT 5.0 1.5.5)")
                if i >= len(buf):
                    return None  # header incomplete; it will be joined with what comes next
                byte = buf[i]
                length |= (byte & 0x7F) << shift
                i += 1
                if not byte & 0x80:
                    break
                shift += 7
        total = i - pos + length
        if total > avail:
            if not self._need:
                self._check_header(first, total)
                self._need = total
            if avail + self._pending_len >= total:
                self._join()
                return self._next()
            return None
        if not self._need:
            self._check_header(first, total)
        self._need = 0
        end = pos + total
        self._pos = end
        ptype = first >> 4
        if ptype == 1:
            try:
                packet = _connect(buf, i, end, first & 0x0F, 0)
            except (MalformedPacket, ProtocolError, TopicNameInvalid):
                # Past a valid protocol name and level, let the caller answer in the client's
                # format (a v5 CONNACK with the reason code, MQTT 5.0 section 4.13.1).
                self.version = _connect_level(buf, i, end) or self.version
                raise
            self.version = packet.protocol_level
            return packet
        version = self.version or 4
        if ptype == 3:
            publish = _publish(buf, i, end, first & 0x0F, version)
            minimal = 2 if length < 128 else 3 if length < 16384 else 4 if length < 2097152 else 5
            if i - pos == minimal:
                # Kept for byte-for-byte forwarding only when the Remaining Length is minimally
                # encoded, since what we send must be (MQTT-1.5.5-1).
                publish.raw = buf[pos:end]
            return publish
        parser = _PARSERS[ptype]
        assert parser is not None
        return parser(buf, i, end, first & 0x0F, version)

    def _check_header(self, first: int, total: int) -> None:
        """Validate the fixed header before the body is buffered (type, flags, size)."""
        ptype = first >> 4
        if ptype != 3:  # PUBLISH, the usual case, has no fixed flags
            flags = first & 0x0F
            if ptype == 0:
                raise MalformedPacket("packet type 0 is reserved")
            if ptype == 15 and (self.version or 4) != MQTT5:
                raise MalformedPacket("AUTH (type 15) is reserved before MQTT 5.0")
            required = _REQUIRED_FLAGS[ptype]
            if required is not None and flags != required:
                raise MalformedPacket(
                    f"packet type {ptype} with fixed-header flags {flags:#06b} (MQTT-2.1.3-1)"
                )
        if total > self.max_packet_size:
            raise PacketTooLarge(
                f"packet of {total} bytes exceeds the maximum packet size {self.max_packet_size}"
            )
