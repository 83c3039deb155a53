"""MQTT 5.0 properties (section 2.2.2.2): identifiers, wire types, and where each is allowed."""

from __future__ import annotations

from enum import IntEnum

from midge.codec.packets import PacketType


class Prop(IntEnum):
    PAYLOAD_FORMAT_INDICATOR = 0x01
    MESSAGE_EXPIRY_INTERVAL = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_IDENTIFIER = 0x0B
    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTHENTICATION_METHOD = 0x15
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


class PropType(IntEnum):
    BYTE = 1
    TWO_BYTE = 2
    FOUR_BYTE = 4
    VARINT = 5
    UTF8 = 6
    BINARY = 7
    UTF8_PAIR = 8


#: Pseudo packet type for the Will Properties inside CONNECT.
WILL = 0

_C, _CA, _P = PacketType.CONNECT, PacketType.CONNACK, PacketType.PUBLISH
_PA, _PREC, _PREL, _PC = PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBREL, PacketType.PUBCOMP
_S, _SA, _U, _UA = (
    PacketType.SUBSCRIBE,
    PacketType.SUBACK,
    PacketType.UNSUBSCRIBE,
    PacketType.UNSUBACK,
)
_D, _A = PacketType.DISCONNECT, PacketType.AUTH

#: Property -> (wire type, the packet types (and WILL) that may carry it).
SPEC: dict[int, tuple[PropType, frozenset[int]]] = {
    Prop.PAYLOAD_FORMAT_INDICATOR: (PropType.BYTE, frozenset({_P, WILL})),
    Prop.MESSAGE_EXPIRY_INTERVAL: (PropType.FOUR_BYTE, frozenset({_P, WILL})),
    Prop.CONTENT_TYPE: (PropType.UTF8, frozenset({_P, WILL})),
    Prop.RESPONSE_TOPIC: (PropType.UTF8, frozenset({_P, WILL})),
    Prop.CORRELATION_DATA: (PropType.BINARY, frozenset({_P, WILL})),
    Prop.SUBSCRIPTION_IDENTIFIER: (PropType.VARINT, frozenset({_P, _S})),
    Prop.SESSION_EXPIRY_INTERVAL: (PropType.FOUR_BYTE, frozenset({_C, _CA, _D})),
    Prop.ASSIGNED_CLIENT_IDENTIFIER: (PropType.UTF8, frozenset({_CA})),
    Prop.SERVER_KEEP_ALIVE: (PropType.TWO_BYTE, frozenset({_CA})),
    Prop.AUTHENTICATION_METHOD: (PropType.UTF8, frozenset({_C, _CA, _A})),
    Prop.AUTHENTICATION_DATA: (PropType.BINARY, frozenset({_C, _CA, _A})),
    Prop.REQUEST_PROBLEM_INFORMATION: (PropType.BYTE, frozenset({_C})),
    Prop.WILL_DELAY_INTERVAL: (PropType.FOUR_BYTE, frozenset({WILL})),
    Prop.REQUEST_RESPONSE_INFORMATION: (PropType.BYTE, frozenset({_C})),
    Prop.RESPONSE_INFORMATION: (PropType.UTF8, frozenset({_CA})),
    Prop.SERVER_REFERENCE: (PropType.UTF8, frozenset({_CA, _D})),
    Prop.REASON_STRING: (
        PropType.UTF8,
        frozenset({_CA, _PA, _PREC, _PREL, _PC, _SA, _UA, _D, _A}),
    ),
    Prop.RECEIVE_MAXIMUM: (PropType.TWO_BYTE, frozenset({_C, _CA})),
    Prop.TOPIC_ALIAS_MAXIMUM: (PropType.TWO_BYTE, frozenset({_C, _CA})),
    Prop.TOPIC_ALIAS: (PropType.TWO_BYTE, frozenset({_P})),
    Prop.MAXIMUM_QOS: (PropType.BYTE, frozenset({_CA})),
    Prop.RETAIN_AVAILABLE: (PropType.BYTE, frozenset({_CA})),
    Prop.USER_PROPERTY: (
        PropType.UTF8_PAIR,
        frozenset({_C, _CA, _P, WILL, _PA, _PREC, _PREL, _PC, _S, _SA, _U, _UA, _D, _A}),
    ),
    Prop.MAXIMUM_PACKET_SIZE: (PropType.FOUR_BYTE, frozenset({_C, _CA})),
    Prop.WILDCARD_SUBSCRIPTION_AVAILABLE: (PropType.BYTE, frozenset({_CA})),
    Prop.SUBSCRIPTION_IDENTIFIER_AVAILABLE: (PropType.BYTE, frozenset({_CA})),
    Prop.SHARED_SUBSCRIPTION_AVAILABLE: (PropType.BYTE, frozenset({_CA})),
}

#: Properties that may appear more than once; they are held as lists.
REPEATABLE = frozenset({Prop.USER_PROPERTY, Prop.SUBSCRIPTION_IDENTIFIER})
