"""What the client hands its user: received messages and the results of requests."""

from __future__ import annotations

from dataclasses import dataclass, field

from midge.codec.packets import Properties
from midge.codec.properties import Prop


class Message:
    """A received PUBLISH, with its topic alias resolved.

    ``properties`` is the PUBLISH's MQTT 5 property dict (keyed by
    :class:`midge.codec.properties.Prop`); the common ones have accessors.
    """

    __slots__ = ("packet_id", "payload", "properties", "qos", "retain", "topic")

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        properties: Properties,
        packet_id: int | None = None,
    ) -> None:
        self.topic = topic
        #: The PUBLISH's packet identifier (QoS 1 and 2; None for QoS 0).
        self.packet_id = packet_id
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties

    @property
    def subscription_identifiers(self) -> list[int]:
        ids = self.properties.get(Prop.SUBSCRIPTION_IDENTIFIER)
        return list(ids) if ids else []

    @property
    def user_properties(self) -> list[tuple[str, str]]:
        return list(self.properties.get(Prop.USER_PROPERTY, []))

    @property
    def response_topic(self) -> str | None:
        value = self.properties.get(Prop.RESPONSE_TOPIC)
        return value if isinstance(value, str) else None

    @property
    def correlation_data(self) -> bytes | None:
        value = self.properties.get(Prop.CORRELATION_DATA)
        return value if isinstance(value, bytes) else None

    @property
    def content_type(self) -> str | None:
        value = self.properties.get(Prop.CONTENT_TYPE)
        return value if isinstance(value, str) else None

    def __repr__(self) -> str:
        return (
            f"Message({self.topic!r}, {self.payload[:64]!r}, qos={self.qos}, retain={self.retain}"
            f"{', properties=' + repr(self.properties) if self.properties else ''})"
        )


@dataclass(slots=True, frozen=True)
class PublishResult:
    """A PUBLISH the server accepted: for QoS 1 its PUBACK's reason code and properties, for
    QoS 2 its PUBREC's (the PUBCOMP that completes the flow has arrived too). QoS 0: 0, {}.
    ``reason_code`` is 0 Success or 0x10 No matching subscribers; failures raise MQTTError."""

    reason_code: int = 0
    properties: Properties = field(default_factory=dict)
    packet_id: int | None = None


@dataclass(slots=True, frozen=True)
class SubscribeResult:
    """A SUBACK: one granted QoS (0-2) per topic filter, and the SUBACK's properties."""

    reason_codes: list[int]
    properties: Properties = field(default_factory=dict)
    subscription_identifier: int | None = None


@dataclass(slots=True, frozen=True)
class ConnectResult:
    """The CONNACK of the current connection."""

    session_present: bool
    reason_code: int
    properties: Properties
