"""Reason codes (MQTT 5.0 section 2.4), v3 CONNACK return codes, and the codec's errors.

Every failure the codec detects is a :class:`CodecError` carrying the MQTT 5 reason code the
server (or client) should answer with before closing the connection. For MQTT 3.1/3.1.1 there is
no DISCONNECT from the server; the connection layer just closes the socket.
"""

from __future__ import annotations

from enum import IntEnum


class Reason(IntEnum):
    """MQTT 5.0 reason codes (section 2.4, table 2-6)."""

    SUCCESS = 0x00  # also NORMAL_DISCONNECTION and GRANTED_QOS_0
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    RE_AUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


class ConnackV3(IntEnum):
    """MQTT 3.1/3.1.1 CONNACK return codes (3.1.1 section 3.2.2.3)."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USERNAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


#: How a v5 CONNACK refusal maps to a v3 return code (MQTT-3.2.2-5: v3 servers use 0x01-0x05).
V5_TO_V3_CONNACK: dict[int, int] = {
    Reason.UNSUPPORTED_PROTOCOL_VERSION: ConnackV3.UNACCEPTABLE_PROTOCOL_VERSION,
    Reason.CLIENT_IDENTIFIER_NOT_VALID: ConnackV3.IDENTIFIER_REJECTED,
    Reason.SERVER_UNAVAILABLE: ConnackV3.SERVER_UNAVAILABLE,
    Reason.SERVER_BUSY: ConnackV3.SERVER_UNAVAILABLE,
    Reason.SERVER_SHUTTING_DOWN: ConnackV3.SERVER_UNAVAILABLE,
    Reason.USE_ANOTHER_SERVER: ConnackV3.SERVER_UNAVAILABLE,
    Reason.SERVER_MOVED: ConnackV3.SERVER_UNAVAILABLE,
    Reason.CONNECTION_RATE_EXCEEDED: ConnackV3.SERVER_UNAVAILABLE,
    Reason.QUOTA_EXCEEDED: ConnackV3.SERVER_UNAVAILABLE,
    Reason.BAD_USER_NAME_OR_PASSWORD: ConnackV3.BAD_USERNAME_OR_PASSWORD,
    Reason.BAD_AUTHENTICATION_METHOD: ConnackV3.NOT_AUTHORIZED,
    Reason.NOT_AUTHORIZED: ConnackV3.NOT_AUTHORIZED,
    Reason.BANNED: ConnackV3.NOT_AUTHORIZED,
}


class CodecError(Exception):
    """A packet that cannot be accepted. ``reason`` is the MQTT 5 reason code to answer with."""

    reason: int = Reason.MALFORMED_PACKET

    def __init__(self, message: str, reason: int | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class MalformedPacket(CodecError):
    """The bytes do not form a valid packet (reason 0x81)."""

    reason = Reason.MALFORMED_PACKET


class ProtocolError(CodecError):
    """A well-formed packet the protocol forbids here (reason 0x82)."""

    reason = Reason.PROTOCOL_ERROR


class PacketTooLarge(CodecError):
    """The packet exceeds the configured maximum; detected from the fixed header (0x95)."""

    reason = Reason.PACKET_TOO_LARGE


class UnsupportedProtocolVersion(CodecError):
    """CONNECT with a protocol name/level pair we do not speak (v3 rc 1, v5 0x84).

    ``level`` is the protocol level read from the packet, so the caller can choose the CONNACK
    format.
    """

    reason = Reason.UNSUPPORTED_PROTOCOL_VERSION

    def __init__(self, message: str, level: int) -> None:
        super().__init__(message)
        self.level = level


class ClientIdentifierNotValid(CodecError):
    """CONNECT whose client identifier is not acceptable (v3 rc 2, v5 0x85)."""

    reason = Reason.CLIENT_IDENTIFIER_NOT_VALID


class TopicNameInvalid(CodecError):
    """A PUBLISH topic name that is not valid (0x90)."""

    reason = Reason.TOPIC_NAME_INVALID


def _codes(*codes: int) -> frozenset[int]:
    return frozenset(codes)


#: The v5 reason codes each packet type may carry (MQTT 5.0 section 2.4, table 2-6), keyed by
#: packet type number. The decoder treats any other value as a protocol error.
# fmt: off
REASONS_BY_PACKET: dict[int, frozenset[int]] = {
    2: _codes(  # CONNACK
        0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90,
        0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
    ),
    4: _codes(0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99),  # PUBACK
    5: _codes(0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99),  # PUBREC
    6: _codes(0x00, 0x92),  # PUBREL
    7: _codes(0x00, 0x92),  # PUBCOMP
    9: _codes(0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2),  # SUBACK
    11: _codes(0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91),  # UNSUBACK
    14: _codes(  # DISCONNECT
        0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93,
        0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
    ),
    15: _codes(0x00, 0x18, 0x19),  # AUTH
}
# fmt: on
