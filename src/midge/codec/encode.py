"""MQTT packet encoding: typed packets out as bytes, for protocol level 3, 4 or 5 (sans-IO).

The encoder trusts its input (the broker builds the packets) but always writes a packet that is
valid for the version asked for: fields a version lacks are dropped (properties and reason codes
below v5), v5 reason codes become v3 return codes (CONNACK, SUBACK), and the v5 forms are
canonical, so whatever :class:`midge.codec.decode.Decoder` reads from ``encode(p, v)`` encodes to
the same bytes:

* Variable Byte Integers are minimal (MQTT-1.5.5-1);
* PUBACK/PUBREC/PUBREL/PUBCOMP omit reason code 0 with no properties (remaining length 2) and the
  property length when there are none (remaining length 3), MQTT 5.0 section 3.4.2.1;
* DISCONNECT omits reason 0 with no properties (remaining length 0) and the property length when
  there are none (section 3.14.2.1); AUTH omits both only together (section 3.15.2.1).

Programming errors (a string longer than 65,535 bytes, AUTH below v5, a property with the wrong
value type) raise ``ValueError``/``TypeError``; they are not :class:`CodecError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from midge.codec.packets import (
    MQTT5,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
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
    Unsuback,
    Unsubscribe,
)
from midge.codec.properties import SPEC, Prop, PropType
from midge.codec.reasons import V5_TO_V3_CONNACK, ConnackV3

__all__ = ["encode", "encode_properties", "encode_varint"]

_LEN1 = [bytes((n,)) for n in range(128)]
_U16 = [n.to_bytes(2) for n in range(256)]  # the common small packet ids/lengths

_PROP_TYPE: dict[int, int] = {int(k): int(t) for k, (t, _) in SPEC.items()}
_BYTE, _TWO, _FOUR, _VARINT = PropType.BYTE, PropType.TWO_BYTE, PropType.FOUR_BYTE, PropType.VARINT
_UTF8, _BINARY, _PAIR = PropType.UTF8, PropType.BINARY, PropType.UTF8_PAIR
_USER_PROPERTY: Final = int(Prop.USER_PROPERTY)
_SUB_ID: Final = int(Prop.SUBSCRIPTION_IDENTIFIER)


def encode_varint(value: int) -> bytes:
    """The minimal Variable Byte Integer for ``value`` (0 .. 268,435,455; MQTT 5.0 1.5.5)."""
    if value < 128:
        if value < 0:
            raise ValueError(f"negative Variable Byte Integer {value}")
        return _LEN1[value]
    if value > 268_435_455:
        raise ValueError(f"{value} does not fit a Variable Byte Integer")
    out = bytearray()
    while value > 127:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _u16(value: int) -> bytes:
    if value < 256:
        return _U16[value]
    return value.to_bytes(2)


def _str(text: str) -> bytes:
    data = text.encode("utf-8")
    n = len(data)
    if n > 65535:
        raise ValueError(f"string of {n} bytes is longer than 65,535")
    return _u16(n) + data


def _bin(data: bytes) -> bytes:
    n = len(data)
    if n > 65535:
        raise ValueError(f"binary data of {n} bytes is longer than 65,535")
    return _u16(n) + bytes(data)


def _prop(pid: int, ptype: int, value: Any) -> bytes:
    head = _LEN1[pid]
    if ptype == _BYTE:
        return head + bytes((value,))
    if ptype == _TWO:
        return head + int(value).to_bytes(2)
    if ptype == _FOUR:
        return head + int(value).to_bytes(4)
    if ptype == _VARINT:
        return head + encode_varint(value)
    if ptype == _UTF8:
        return head + _str(value)
    if ptype == _BINARY:
        return head + _bin(value)
    name, val = value
    return head + _str(name) + _str(val)


def encode_properties(props: Properties) -> bytes:
    """A v5 property list, its length first, in the dict's order (repeatable ones in list order).

    ``Prop.USER_PROPERTY`` is a list of ``(name, value)`` pairs and
    ``Prop.SUBSCRIPTION_IDENTIFIER`` a list of ints (a single pair/int is accepted too).
    """
    if not props:
        return b"\x00"
    parts: list[bytes] = []
    for pid, value in props.items():
        ptype = _PROP_TYPE.get(pid)
        if ptype is None:
            raise ValueError(f"unknown property identifier {pid!r}")
        if pid == _USER_PROPERTY:
            pairs = [value] if isinstance(value, tuple) else value
            parts.extend(_prop(pid, ptype, pair) for pair in pairs)
        elif pid == _SUB_ID:
            ids = [value] if isinstance(value, int) else value
            parts.extend(_prop(pid, ptype, sub_id) for sub_id in ids)
        else:
            parts.append(_prop(pid, ptype, value))
    body = b"".join(parts)
    return encode_varint(len(body)) + body


def _packet(first: int, body: bytes) -> bytes:
    n = len(body)
    if n < 128:
        return bytes((first, n)) + body
    return bytes((first,)) + encode_varint(n) + body


# --- one encoder per packet class ----------------------------------------------------------------


def _connect(p: Connect, version: int) -> bytes:
    name, level = p.protocol_name, p.protocol_level
    if (name, level) == ("MQTT", 4):  # the defaults: write what this version calls itself
        name, level = ("MQIsdp", 3) if version == 3 else ("MQTT", version)
    if p.bridge and level in (3, 4):
        level |= 0x80  # Mosquitto's bridge marker (try_private)
    will = p.will
    flags = 0x02 if p.clean_start else 0
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if p.password is not None:
        flags |= 0x40
    if p.username is not None:
        flags |= 0x80
    parts = [_str(name), bytes((level, flags)), _u16(p.keep_alive)]
    if version == MQTT5:
        parts.append(encode_properties(p.properties))
    parts.append(_str(p.client_id))
    if will is not None:
        if version == MQTT5:
            parts.append(encode_properties(will.properties))
        parts.append(_str(will.topic))
        parts.append(_bin(will.payload))
    if p.username is not None:
        parts.append(_str(p.username))
    if p.password is not None:
        parts.append(_bin(p.password))
    return _packet(0x10, b"".join(parts))


def _connack(p: Connack, version: int) -> bytes:
    code = p.reason_code
    if version != MQTT5 and code > 5:
        code = V5_TO_V3_CONNACK.get(code, ConnackV3.SERVER_UNAVAILABLE)
    # A refused connection never has a session (MQTT-3.2.2-4, v5 MQTT-3.2.2-6).
    head = bytes((1 if p.session_present and not code else 0, code))
    if version == MQTT5:
        return _packet(0x20, head + encode_properties(p.properties))
    return b"\x20\x02" + head


def _publish(p: Publish, version: int) -> bytes:
    qos = p.qos
    first = 0x30 | (qos << 1)
    if p.retain:
        first |= 0x01
    if p.dup:
        first |= 0x08
    topic = p.topic.encode("utf-8")
    n = len(topic)
    if n > 65535:
        raise ValueError(f"topic of {n} bytes is longer than 65,535")
    parts = [_u16(n), topic]
    if qos:
        parts.append(_u16(p.packet_id or 0))
    if version == MQTT5:
        parts.append(encode_properties(p.properties) if p.properties else b"\x00")
    parts.append(p.payload)
    body = b"".join(parts)
    return _packet(first, body)


def _ack(first: int) -> Callable[[Any, int], bytes]:
    # The fixed headers of the two short forms, made once (an ack is sent per QoS 1/2 message).
    short = bytes((first, 2))
    with_reason = bytes((first, 3))

    def encode_ack(p: Puback | Pubrec | Pubrel | Pubcomp, version: int) -> bytes:
        pid = _u16(p.packet_id)
        if version != MQTT5 or (not p.reason_code and not p.properties):
            return short + pid
        if not p.properties:
            return with_reason + pid + bytes((p.reason_code,))
        return _packet(first, pid + bytes((p.reason_code,)) + encode_properties(p.properties))

    return encode_ack


def _subscribe(p: Subscribe, version: int) -> bytes:
    parts = [_u16(p.packet_id)]
    if version == MQTT5:
        parts.append(encode_properties(p.properties))
        for s in p.subscriptions:
            opts = s.qos | (s.no_local << 2) | (s.retain_as_published << 3)
            parts.append(_str(s.topic_filter) + bytes((opts | (s.retain_handling << 4),)))
    else:
        for s in p.subscriptions:
            parts.append(_str(s.topic_filter) + bytes((s.qos,)))
    return _packet(0x82, b"".join(parts))


def _suback(p: Suback, version: int) -> bytes:
    if version == MQTT5:
        body = _u16(p.packet_id) + encode_properties(p.properties) + bytes(p.reason_codes)
    else:
        # v3/v4 know 0, 1, 2 and 0x80 only (MQTT-3.9.3-2): any v5 failure becomes 0x80.
        codes = bytes(c if c < 3 else 0x80 for c in p.reason_codes)
        body = _u16(p.packet_id) + codes
    return _packet(0x90, body)


def _unsubscribe(p: Unsubscribe, version: int) -> bytes:
    parts = [_u16(p.packet_id)]
    if version == MQTT5:
        parts.append(encode_properties(p.properties))
    parts.extend(_str(f) for f in p.topic_filters)
    return _packet(0xA2, b"".join(parts))


def _unsuback(p: Unsuback, version: int) -> bytes:
    if version == MQTT5:
        body = _u16(p.packet_id) + encode_properties(p.properties) + bytes(p.reason_codes)
        return _packet(0xB0, body)
    return b"\xb0\x02" + _u16(p.packet_id)


def _pingreq(p: Pingreq, version: int) -> bytes:
    return b"\xc0\x00"


def _pingresp(p: Pingresp, version: int) -> bytes:
    return b"\xd0\x00"


def _disconnect(p: Disconnect, version: int) -> bytes:
    if version != MQTT5 or (not p.reason_code and not p.properties):
        return b"\xe0\x00"
    if not p.properties:
        return bytes((0xE0, 1, p.reason_code))
    return _packet(0xE0, bytes((p.reason_code,)) + encode_properties(p.properties))


def _auth(p: Auth, version: int) -> bytes:
    if version != MQTT5:
        raise ValueError("AUTH exists only in MQTT 5.0")
    if not p.reason_code and not p.properties:
        return b"\xf0\x00"
    return _packet(0xF0, bytes((p.reason_code,)) + encode_properties(p.properties))


_ENCODERS: dict[type, Callable[[Any, int], bytes]] = {
    Connect: _connect,
    Connack: _connack,
    Publish: _publish,
    Puback: _ack(0x40),
    Pubrec: _ack(0x50),
    Pubrel: _ack(0x62),
    Pubcomp: _ack(0x70),
    Subscribe: _subscribe,
    Suback: _suback,
    Unsubscribe: _unsubscribe,
    Unsuback: _unsuback,
    Pingreq: _pingreq,
    Pingresp: _pingresp,
    Disconnect: _disconnect,
    Auth: _auth,
}


def encode(packet: Packet, version: int) -> bytes:
    """The wire bytes of ``packet`` for protocol level ``version`` (3, 4 or 5)."""
    return _ENCODERS[type(packet)](packet, version)
