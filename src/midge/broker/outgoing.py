"""The outgoing side of one connection: PUBLISH packets encoded for the client.

A :class:`~midge.broker.session.Session` hands each delivery to its :class:`Sink` (the
connection's :class:`Outgoing` while one is attached) and never hears back but whether the
PUBLISH went out. Here live:

- the encoding once per distinct form: deliveries of one routed message share a
  :class:`FormCache` keyed by (version, QoS, retain, subscription ids, expiry); a packet id and
  DUP are patched into a copy of the shared bytes;
- raw forwarding: a received PUBLISH whose bytes need no change but the flags is sent as it came;
- the outgoing topic aliases (MQTT 5 3.3.2.3.4), this connection's own, registered only when
  the PUBLISH that sets one is written;
- the client's Maximum Packet Size (MQTT-3.1.2-24/-25 v5);
- :attr:`Sink.paused`, which tells the session that the client reads slower than we write: it then
  holds QoS 0 messages back (:meth:`midge.broker.session.Session.writable`) rather than pile them
  into the transport's buffer;
- the listener's ``mount_point``, removed from the topics this client receives.

Bytes go to the transport (``write``); coalescing them into one write per loop turn is the
transport's business (:mod:`midge.transport.writer`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from midge.codec.encode import encode
from midge.codec.packets import MQTT5, UNLIMITED_PACKET_SIZE, Properties, Publish, Pubrel
from midge.codec.properties import Prop

if TYPE_CHECKING:
    from midge.broker.clock import Scheduler
    from midge.broker.model import Message
    from midge.broker.session import Stats

#: A form of a PUBLISH: version, QoS, retain, subscription ids, Message Expiry sent (-1: none).
FormKey = tuple[int, int, bool, tuple[int, ...], int]


class FormCache:
    """The encodings of one routed message, shared by its deliveries: per form, the bytes (packet
    id 0 for QoS 1/2) and the offset of the packet id in them."""

    __slots__ = ("forms",)

    def __init__(self) -> None:
        self.forms: dict[FormKey, tuple[bytes, int]] = {}


class Sink:
    """Where a session's deliveries go while a client is attached: the interface a session
    calls, which :class:`Outgoing` implements.

    A base class to subclass rather than a ``Protocol``: compiled by mypyc, the session's call
    then goes through a native method table (a ``Protocol`` call is a generic Python call, which
    costs measurably once per delivery). It never calls back into the session.

    ``paused``: the transport asked us to stop writing (its buffer is above its high-water mark:
    the client reads slower than we write). The session then keeps QoS 0 messages back until
    the transport resumes (bounded by max_queued_messages / max_queued_bytes); QoS 1/2 are
    bounded by the in-flight window anyway.
    """

    __slots__ = ("paused",)

    def __init__(self) -> None:
        self.paused = False

    def publish(
        self,
        message: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        pid: int,
        dup: bool,
        cache: FormCache | None,
    ) -> bool:
        """Send one PUBLISH; False if it was not sent (expired, too large, closed)."""
        raise NotImplementedError

    def pubrel(self, pid: int) -> None:
        """Re-send PUBREL for ``pid`` (a released in-flight message, on reconnection)."""
        raise NotImplementedError


class Writer(Protocol):
    """What :class:`Outgoing` writes to: the connection's transport."""

    def write(self, data: bytes) -> None: ...

    def get_write_buffer_size(self) -> int: ...


class NativeWriter:
    """A transport may subclass this (:class:`midge.transport.writer.CoalescingTransport` does):
    compiled by mypyc, the outgoing side's write per packet is then a native call rather than a
    generic Python one. Any other :class:`Writer` works the same, a little slower."""

    __slots__ = ()

    def write(self, data: bytes) -> None:
        raise NotImplementedError


class Outgoing(Sink):
    """One connection's :class:`Sink`: encodes PUBLISH for its client and writes it.

    ``open`` is False until CONNACK and after close: nothing is written then.
    """

    __slots__ = (
        "alias_max",
        "aliases",
        "clock",
        "held",
        "max_packet",
        "mount",
        "native",
        "open",
        "stats",
        "transport",
        "version",
    )

    def __init__(self, transport: Writer, stats: Stats, clock: Scheduler) -> None:
        super().__init__()
        self.transport = transport
        self.native: NativeWriter | None = (
            transport if isinstance(transport, NativeWriter) else None
        )
        self.stats = stats
        self.clock = clock
        self.version = 4
        self.open = False
        #: The client's Maximum Packet Size (v5) and Topic Alias Maximum.
        self.max_packet = UNLIMITED_PACKET_SIZE
        self.alias_max = 0
        # Made on first use (most clients take no aliases; idle connections must stay small).
        self.aliases: dict[str, int] | None = None
        #: Not None between :meth:`hold` and :meth:`release`: the packets written meanwhile.
        self.held: list[bytes] | None = None
        #: The length of the listener's mount_point (0: none): every topic this client is sent
        #: starts with it (its subscriptions were prefixed) and is sent without it.
        self.mount = 0

    def start(self, version: int, max_packet: int, alias_max: int) -> None:
        """The CONNECT is accepted with what it negotiated: PUBLISH may go out from now on."""
        self.version = version
        self.max_packet = max_packet
        self.alias_max = alias_max
        self.open = True

    def publish(
        self,
        message: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        pid: int,
        dup: bool,
        cache: FormCache | None,
    ) -> bool:
        """Write one PUBLISH for ``message``; False if it was not sent (expired, too large)."""
        if not self.open:
            return False
        version = self.version
        topic = message.topic
        mount = self.mount
        if mount:
            if len(topic) <= mount:
                return False  # the mount point itself: nothing left to send (as Mosquitto)
            topic = topic[mount:]
            cache = None  # the bytes are this listener's own
        key: FormKey | None = None
        new_alias = 0
        if version < MQTT5:
            props: Properties = message.properties if not message.raw_v5 else {}
            if cache is not None:
                key = (4, qos, retain, (), -1)
        else:
            props = message.properties
            expiry = -1
            if message.expires_at is not None:
                left = message.remaining_expiry(self.clock.wall())
                expiry = left if left is not None else -1
                if expiry <= 0:
                    if not dup:
                        self.stats.dropped_expired += 1
                        return False  # MQTT-3.3.2-5 v5
                    # Onward delivery has started: a re-send is not expired (MQTT-4.3.3-7 v5).
                    expiry = 1
            if expiry >= 0 or sub_ids:
                # Mosquitto's order: Subscription Identifiers, the message's properties as
                # published, the Message Expiry Interval left.
                props = {Prop.SUBSCRIPTION_IDENTIFIER: list(sub_ids)} if sub_ids else {}
                props.update(message.properties)
                if expiry >= 0:
                    props[Prop.MESSAGE_EXPIRY_INTERVAL] = expiry
            if cache is not None:
                key = (5, qos, retain, sub_ids, expiry)
            if self.alias_max:
                aliases = self.aliases
                if aliases is None:
                    aliases = self.aliases = {}
                alias = aliases.get(topic)
                if alias is None and len(aliases) < self.alias_max:
                    # Registered only once the packet is written (below): a PUBLISH dropped as
                    # too large must not leave an alias the client never learned.
                    new_alias = len(aliases) + 1
                    props = dict(props)
                    props[Prop.TOPIC_ALIAS] = new_alias
                elif alias is not None:
                    props = dict(props)
                    props[Prop.TOPIC_ALIAS] = alias
                    topic = ""
                cache = None  # aliases make the bytes this connection's own
        cached = cache.forms.get(key) if cache is not None and key is not None else None
        if cached is None:
            raw = message.raw
            if (
                raw is not None
                and qos == message.qos
                and props is message.properties
                and topic
                and not mount
                and (version == MQTT5) == message.raw_v5
            ):
                # Nothing in the received bytes must change but the flags (and the packet id,
                # patched below): forward them as they came, no re-encoding.
                first = 0x30 | (qos << 1) | retain
                data = raw if raw[0] == first else bytes((first,)) + raw[1:]
            else:
                data = encode(
                    Publish(topic, message.payload, qos, retain, False, 1 if qos else None, props),
                    version,
                )
            offset = 0
            if qos or cache is not None:
                # Where the packet id goes: after the fixed header and the topic name.
                hl = 2
                while data[hl - 1] & 0x80:
                    hl += 1
                offset = hl + 2 + (data[hl] << 8 | data[hl + 1])
                if cache is not None and key is not None:
                    cache.forms[key] = (data, offset)
        else:
            data, offset = cached
        if len(data) > self.max_packet:
            # MQTT-3.1.2-24/-25 v5: never send more than the client allows; drop it for them.
            self.stats.messages_dropped += 1
            self.stats.dropped_too_large += 1
            return False
        if qos or dup:
            buf = bytearray(data)
            if qos:
                buf[offset] = pid >> 8
                buf[offset + 1] = pid & 0xFF
            if dup:
                buf[0] |= 0x08
            data = bytes(buf)
        self.write(data)
        if new_alias:
            aliases = self.aliases
            if aliases is not None:
                aliases[topic] = new_alias
        stats = self.stats
        stats.messages_sent += 1
        size = len(message.payload)
        stats.publish_bytes_sent += size
        stats.sent_by_qos[qos] += 1
        stats.sent_bytes_by_qos[qos] += size
        return True

    def pubrel(self, pid: int) -> None:
        if self.open:
            self.write(encode(Pubrel(pid), self.version))

    def hold(self) -> None:
        """Keep the packets written from now on until :meth:`release` (a QoS 2 PUBLISH is being
        routed, and its PUBREC must go before the copies to this client)."""
        if self.held is None:
            self.held = []

    def release(self, first: bytes | None) -> None:
        """Write ``first`` (if any), then the packets held since :meth:`hold`, in order."""
        held = self.held
        self.held = None
        if first is not None:
            self.write(first)
        if held:
            for data in held:
                self.write(data)

    def write(self, data: bytes) -> None:
        """Hand one packet to the transport (every packet of the connection goes through here;
        the transport coalesces them); counted for $SYS when it is written."""
        held = self.held
        if held is not None:
            held.append(data)
            return
        stats = self.stats
        stats.packets_sent += 1
        stats.bytes_sent += len(data)
        native = self.native
        if native is not None:
            native.write(data)
        else:
            self.transport.write(data)
