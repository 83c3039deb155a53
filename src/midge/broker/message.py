"""An application message as the broker routes it, and subscription options.

Both are ``__slots__`` classes: one is made per PUBLISH received and one per subscription, and the
hot path reads their attributes directly (no dataclass machinery, no dict copies).
"""

from __future__ import annotations

from midge.codec.packets import Properties
from midge.codec.properties import Prop

#: Properties that belong to one hop of a PUBLISH and are never forwarded as they came
#: (MQTT-3.3.2-7 topic alias is per connection; subscription identifiers are the receiver's).
_HOP_PROPS = (Prop.TOPIC_ALIAS, Prop.SUBSCRIPTION_IDENTIFIER, Prop.MESSAGE_EXPIRY_INTERVAL)


class Message:
    """One application message: what a PUBLISH (or a will) carries, routed to many sessions.

    ``expires_at`` is a wall-clock time (the scheduler's ``wall()``) so that expiry survives a
    restart once messages are persisted; None means the message never expires (MQTT-3.3.2-5 v5).
    ``origin`` is the publishing client id, for No Local (MQTT-3.8.3-3 v5).
    """

    __slots__ = (
        "expires_at",
        "origin",
        "payload",
        "properties",
        "qos",
        "raw",
        "raw_v5",
        "retain",
        "store_id",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
        expires_at: float | None = None,
        origin: str | None = None,
        raw: bytes | None = None,
        raw_v5: bool = False,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties: Properties = properties if properties is not None else {}
        self.expires_at = expires_at
        self.origin = origin
        #: The PUBLISH as received, when it can be forwarded byte for byte (see Connection).
        self.raw = raw
        self.raw_v5 = raw_v5
        #: The durable store's id for it, once a persistent session or the retained store
        #: references it (0: not stored); see midge.store.base.
        self.store_id = 0

    @classmethod
    def from_publish(
        cls,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        properties: Properties,
        origin: str | None,
        now: float,
        raw: bytes | None = None,
        raw_v5: bool = False,
    ) -> Message:
        """Build a message from a received PUBLISH or a will, stripping per-hop properties.

        ``now`` is the wall-clock time (read only when the message has an expiry)."""
        expires_at = None
        if properties:
            expiry = properties.get(Prop.MESSAGE_EXPIRY_INTERVAL)
            if expiry is not None:
                expires_at = now + expiry
            if any(p in properties for p in _HOP_PROPS):
                properties = {k: v for k, v in properties.items() if k not in _HOP_PROPS}
        return cls(topic, payload, qos, retain, properties, expires_at, origin, raw, raw_v5)

    def remaining_expiry(self, now: float) -> int | None:
        """Seconds left to live (MQTT-3.3.2-6 v5: the forwarded value is decremented); None = never.

        Returns 0 or less once expired.
        """
        if self.expires_at is None:
            return None
        left = self.expires_at - now
        # Round up so a message with 0.3 s left is still forwarded with 1 rather than 0.
        return int(left) + (1 if left > int(left) else 0)

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def __repr__(self) -> str:
        return (
            f"Message({self.topic!r}, {self.payload[:32]!r}, qos={self.qos}, retain={self.retain})"
        )


class SubOptions:
    """A subscription's options as granted (QoS already capped by the server's maximum QoS)."""

    __slots__ = ("no_local", "qos", "retain_as_published", "retain_handling", "subscription_id")

    def __init__(
        self,
        qos: int = 0,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        subscription_id: int | None = None,
    ) -> None:
        self.qos = qos
        self.no_local = no_local
        self.retain_as_published = retain_as_published
        self.retain_handling = retain_handling
        self.subscription_id = subscription_id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SubOptions):
            return NotImplemented
        return (
            self.qos == other.qos
            and self.no_local == other.no_local
            and self.retain_as_published == other.retain_as_published
            and self.retain_handling == other.retain_handling
            and self.subscription_id == other.subscription_id
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"SubOptions(qos={self.qos}, no_local={self.no_local}, "
            f"rap={self.retain_as_published}, rh={self.retain_handling}, "
            f"id={self.subscription_id})"
        )
