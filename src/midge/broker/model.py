"""The broker's data: an application message, subscription options, a delivery, and the stored
form of a session.

- :class:`Message`: what a PUBLISH (or a will) carries, routed to many sessions.
- :class:`SubOptions`: a subscription's options as granted.
- :data:`Delivery`: one message on its way to one session (message, QoS, retain, subscription ids).
- :class:`SessionState`: everything a session holds, as plain values: what
  :meth:`midge.broker.session.Session.snapshot` gives and ``restore`` takes back. The durable
  store hands these back at start-up and the ``--workers`` hand-off moves them between processes.

The first two are ``__slots__`` classes: one is made per PUBLISH received and one per subscription,
and the hot path reads their attributes directly (no dataclass machinery, no dict copies).
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
        "source",
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
        #: Who published it, for check_retain_source (set on retained messages and wills):
        #: (username, listener port) of ``origin``; None: not known (the broker's own).
        self.source: tuple[str | None, int] | None = None

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


def will_delay(will: Message, expiry: int) -> int:
    """Seconds until ``will`` is due once its connection has ended: its Will Delay Interval
    (v5; 0 without one), or less if its session, which lives ``expiry`` seconds after the
    connection (0: it ends with it), ends first (MQTT-3.1.3-9)."""
    props = will.properties
    delay = int(props.get(Prop.WILL_DELAY_INTERVAL, 0)) if props else 0
    return min(delay, expiry)


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


#: An outgoing delivery: message, QoS, retain flag, subscription ids. A tuple: one is made per
#: queued or in-flight QoS 1/2 delivery.
Delivery = tuple[Message, int, bool, tuple[int, ...]]


class SessionState:
    """A session as plain values (MQTT-4.1 v5: subscriptions, in-flight and queued messages, QoS 2
    packet ids awaiting PUBREL), for the store and for the worker a client moves to.

    ``disconnected_at`` is the wall-clock time its connection closed (None: connected, or not
    known; its expiry then counts from now). ``username`` is the user its client last
    authenticated as. ``inflight`` holds (packet id, delivery, released) in the order they were
    sent (released: PUBREC received, PUBREL is what is re-sent); ``queue`` the waiting deliveries
    in order; ``next_pid`` the next packet id to try (0: after the last in-flight one);
    ``dropped`` how many its full queue dropped.
    """

    __slots__ = (
        "awaiting_rel",
        "client_id",
        "disconnected_at",
        "dropped",
        "expiry_interval",
        "inflight",
        "next_pid",
        "queue",
        "subscriptions",
        "username",
        "version",
    )

    def __init__(
        self,
        client_id: str,
        version: int,
        expiry_interval: int,
        disconnected_at: float | None = None,
        username: str | None = None,
    ) -> None:
        self.client_id = client_id
        self.username = username
        self.version = version
        self.expiry_interval = expiry_interval
        self.disconnected_at = disconnected_at
        self.subscriptions: dict[str, SubOptions] = {}
        self.queue: list[Delivery] = []
        self.inflight: list[tuple[int, Delivery, bool]] = []
        self.awaiting_rel: list[int] = []
        self.next_pid = 0
        self.dropped = 0
