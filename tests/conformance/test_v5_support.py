"""Shared helpers for the MQTT 5.0 conformance tests (this module holds no tests).

The client (:class:`tests.rawclient.RawClient`, opened by the ``clients`` fixture of
tests/conformance/conftest.py), ``tap``, ``frames`` and ``raw_until_closed`` are in
tests/rawclient.py and re-exported here; this module adds the reason-code tables and hand-built
v5 properties.

Reason-code sets are the spec's tables (MQTT 5.0 sections 3.2.2.2, 3.4.2.1, 3.5.2.1, 3.6.2.1,
3.7.2.1, 3.9.3, 3.11.3, 3.14.2.1, 3.15.2.1).
"""

from __future__ import annotations

from midge.codec.properties import Prop
from tests.rawclient import (
    SOON,
    Clients,
    RawClient,
    frames,
    raw_packet,
    raw_until_closed,
    tap,
    varint,
)

__all__ = ["SOON", "Clients", "RawClient", "frames", "raw_until_closed", "tap"]

V5 = 5

#: Table 3-1, Connect Reason Codes.
CONNACK_REASONS = frozenset(
    {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95}
    | {0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F}
)
#: Tables 3-4 and 3-5, PUBACK and PUBREC Reason Codes.
PUBACK_REASONS = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})
PUBREC_REASONS = PUBACK_REASONS
#: Tables 3-6 and 3-7, PUBREL and PUBCOMP Reason Codes.
PUBREL_REASONS = frozenset({0x00, 0x92})
PUBCOMP_REASONS = PUBREL_REASONS
#: Table 3-8, Subscribe Reason Codes.
SUBACK_REASONS = frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2})
#: Table 3-9, Unsubscribe Reason Codes.
UNSUBACK_REASONS = frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91})
#: Table 3-10, Disconnect Reason Codes.
DISCONNECT_REASONS = frozenset(
    {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94}
    | {0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2}
)

MALFORMED = 0x81
PROTOCOL_ERROR = 0x82

# -- hand-built v5 properties (for packets the codec will not encode) -------------------------


def props(*encoded: bytes) -> bytes:
    """A v5 property block: the Property Length, then the given encoded properties."""
    body = b"".join(encoded)
    return varint(len(body)) + body


def p_byte(ident: int, value: int) -> bytes:
    return bytes([ident, value])


def p_u16(ident: int, value: int) -> bytes:
    return bytes([ident]) + value.to_bytes(2, "big")


def p_u32(ident: int, value: int) -> bytes:
    return bytes([ident]) + value.to_bytes(4, "big")


def p_varint(ident: int, value: int) -> bytes:
    return bytes([ident]) + varint(value)


def p_str(ident: int, value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return bytes([ident]) + len(data).to_bytes(2, "big") + data


def p_pair(name: str | bytes, value: str | bytes) -> bytes:
    n = name.encode() if isinstance(name, str) else name
    v = value.encode() if isinstance(value, str) else value
    return (
        bytes([Prop.USER_PROPERTY]) + len(n).to_bytes(2, "big") + n + len(v).to_bytes(2, "big") + v
    )


def raw_ack(first_byte: int, packet_id: int, reason: int | None = None, body: bytes = b"") -> bytes:
    """PUBACK/PUBREC/PUBREL/PUBCOMP bytes (``reason`` None: the 2-byte short form)."""
    data = packet_id.to_bytes(2, "big")
    if reason is not None:
        data += bytes([reason]) + (body or b"\x00")
    return raw_packet(first_byte, data)
