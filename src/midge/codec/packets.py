"""Typed MQTT control packets, shared by every protocol version.

One class per packet type. Fields that do not exist in a version are left at their defaults when
decoding it and ignored when encoding for it (e.g. ``properties`` and ``reason_code`` below v5).

``version`` everywhere in midge is the protocol level byte of CONNECT: 3 (MQTT 3.1, "MQIsdp"),
4 (MQTT 3.1.1) or 5 (MQTT 5.0).

Properties are a plain ``dict`` keyed by :class:`midge.codec.properties.Prop`. Values are ``int``,
``str`` or ``bytes`` per the property's type, except the two properties that may repeat:
``Prop.USER_PROPERTY`` is always a ``list[tuple[str, str]]`` and ``Prop.SUBSCRIPTION_IDENTIFIER``
is always a ``list[int]`` (a SUBSCRIBE carries at most one).
"""

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final, TypeAlias

Properties: TypeAlias = dict[int, Any]

UNLIMITED_PACKET_SIZE = 268_435_460  # 1 + 4 + 268,435,455: the largest packet MQTT can express

MQTT31: Final = 3
MQTT311: Final = 4
MQTT5: Final = 5


class PacketType(IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


@dataclass(slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Connect:
    client_id: str
    protocol_level: int = MQTT311
    protocol_name: str = "MQTT"
    clean_start: bool = True
    keep_alive: int = 60
    will: Will | None = None
    username: str | None = None
    password: bytes | None = None
    properties: Properties = field(default_factory=dict)
    #: Mosquitto's bridge marker: bit 0x80 of the protocol level (``try_private``), which
    #: Mosquitto's brokers take as "a bridge: do not send its own messages back to it".
    bridge: bool = False


@dataclass(slots=True)
class Connack:
    session_present: bool = False
    reason_code: int = 0  # v3: the return code 0-5; v5: a reason code
    properties: Properties = field(default_factory=dict)


# The packets of the message path (PUBLISH and its acknowledgements) write their ``__init__``
# out: a dataclass's generated one is interpreted even in the mypyc build, and these are made
# once per message. Fields, defaults, equality and repr are the dataclass's as everywhere else.


@dataclass(slots=True, init=False)
class Publish:
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None  # present iff qos > 0
    properties: Properties = field(default_factory=dict)
    #: The packet's bytes as received (set by the Decoder), so the broker can forward them
    #: unchanged when nothing in them must change for a subscriber. Not part of equality.
    raw: bytes | None = field(default=None, compare=False, repr=False)

    def __init__(
        self,
        topic: str,
        payload: bytes = b"",
        qos: int = 0,
        retain: bool = False,
        dup: bool = False,
        packet_id: int | None = None,
        properties: Properties | None = None,
        raw: bytes | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.packet_id = packet_id
        self.properties = {} if properties is None else properties
        self.raw = raw


@dataclass(slots=True, init=False)
class Puback:
    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)

    def __init__(
        self, packet_id: int, reason_code: int = 0, properties: Properties | None = None
    ) -> None:
        self.packet_id = packet_id
        self.reason_code = reason_code
        self.properties = {} if properties is None else properties


@dataclass(slots=True, init=False)
class Pubrec:
    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)

    def __init__(
        self, packet_id: int, reason_code: int = 0, properties: Properties | None = None
    ) -> None:
        self.packet_id = packet_id
        self.reason_code = reason_code
        self.properties = {} if properties is None else properties


@dataclass(slots=True, init=False)
class Pubrel:
    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)

    def __init__(
        self, packet_id: int, reason_code: int = 0, properties: Properties | None = None
    ) -> None:
        self.packet_id = packet_id
        self.reason_code = reason_code
        self.properties = {} if properties is None else properties


@dataclass(slots=True, init=False)
class Pubcomp:
    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)

    def __init__(
        self, packet_id: int, reason_code: int = 0, properties: Properties | None = None
    ) -> None:
        self.packet_id = packet_id
        self.reason_code = reason_code
        self.properties = {} if properties is None else properties


@dataclass(slots=True)
class Subscription:
    """One topic filter of a SUBSCRIBE with its options (v5 options are 0/False below v5)."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(slots=True)
class Subscribe:
    packet_id: int
    subscriptions: list[Subscription]
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Suback:
    packet_id: int
    reason_codes: list[int]  # granted QoS 0-2 or a failure code (v3: 0x80)
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Unsubscribe:
    packet_id: int
    topic_filters: list[str]
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Unsuback:
    packet_id: int
    reason_codes: list[int] = field(default_factory=list)  # v5 only; empty below v5
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Pingreq:
    pass


@dataclass(slots=True)
class Pingresp:
    pass


@dataclass(slots=True)
class Disconnect:
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Auth:
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


Packet: TypeAlias = (
    Connect
    | Connack
    | Publish
    | Puback
    | Pubrec
    | Pubrel
    | Pubcomp
    | Subscribe
    | Suback
    | Unsubscribe
    | Unsuback
    | Pingreq
    | Pingresp
    | Disconnect
    | Auth
)
