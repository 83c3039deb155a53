"""Per-client-id state that outlives a connection: subscriptions, in-flight and queued messages.

A session is attached to at most one :class:`~midge.broker.connection.Connection` at a time. While
attached, deliveries go out at once within the send window (the client's Receive Maximum and our
``max_inflight_messages``, MQTT-4.9.0-1 v5); the rest wait in the queue. While detached, QoS 1/2
messages are queued for a persistent session (MQTT-3.1.2-5 3.1.1, MQTT-4.4 v5) up to the limits,
and are sent when it reconnects, after the unacknowledged ones are re-sent with DUP (MQTT-4.4.0-1).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Final

from midge.broker.message import Message, SubOptions

if TYPE_CHECKING:
    from midge.broker.connection import Connection
    from midge.store.base import Store

#: An outgoing QoS 1/2 delivery: message, QoS, retain flag, subscription ids.
Delivery = tuple[Message, int, bool, "tuple[int, ...]"]

#: Session Expiry Interval meaning "never" (MQTT 5 3.1.2.11.2).
NEVER: Final = 0xFFFFFFFF


class Outgoing:
    """A QoS 1/2 PUBLISH sent and not yet completed. ``released``: PUBREC received, PUBREL sent."""

    __slots__ = ("delivery", "released", "size")

    def __init__(self, delivery: Delivery, size: int) -> None:
        self.delivery = delivery
        self.released = False
        self.size = size


class Stats:
    """Counters for $SYS and metrics (observability comes in a later issue)."""

    __slots__ = (
        "limited_connection_rate",
        "limited_connections",
        "limited_publish_rate",
        "limited_subscriptions",
        "limited_topics",
        "messages_dropped",
        "messages_received",
        "messages_sent",
        "queue_dropped",
        "refused",
    )

    def __init__(self) -> None:
        self.messages_received = 0
        self.messages_sent = 0
        #: Every message not delivered for want of room: full queues, slow consumers, too large.
        self.messages_dropped = 0
        #: Of those, the ones a full session queue dropped (max_queued_messages / _bytes).
        self.queue_dropped = 0
        #: What the limits refused (docs/security.md, "Limits"): connections over
        #: max_connections / global_max_connections, over max_connection_rate, clients
        #: disconnected over max_publish_rate, subscriptions over max_subscriptions, topics over
        #: max_topic_levels / max_topic_length.
        self.limited_connections = 0
        self.limited_connection_rate = 0
        self.limited_publish_rate = 0
        self.limited_subscriptions = 0
        self.limited_topics = 0
        #: Every refusal by reason code: CONNACK failures and the broker's DISCONNECTs (v3
        #: clients too, by the MQTT 5 reason the close stands for): 0x95 packet too large,
        #: 0x9B QoS not supported, 0x9A retain not supported, 0x87 not authorized, ...
        self.refused: dict[int, int] = {}


class Session:
    """The state of one client id (MQTT 3.1.1 section 3.1.2.4, MQTT 5 section 4.1).

    Slotted, with the queue made on first use: an idle connection's session must stay small
    (the benchmark holds 19,000 of them to a few KB each).
    """

    __slots__ = (
        "_next_pid",
        "awaiting_rel",
        "client_id",
        "connection",
        "dropped",
        "expiry_handle",
        "expiry_interval",
        "inflight",
        "inflight_bytes",
        "max_queued",
        "max_queued_bytes",
        "queue",
        "queue_qos0",
        "queued_bytes",
        "stats",
        "store",
        "subscriptions",
        "will_handle",
    )

    def __init__(
        self,
        client_id: str,
        max_queued: int = 1000,
        max_queued_bytes: int = 0,
        queue_qos0: bool = False,
        stats: Stats | None = None,
    ) -> None:
        self.client_id = client_id
        #: The broker's counters (queue overflows are counted there too).
        self.stats = stats
        self.connection: Connection | None = None
        self.subscriptions: dict[str, SubOptions] = {}
        #: Seconds the session lives after its connection closes; NEVER = forever.
        self.expiry_interval = 0
        self.inflight: dict[int, Outgoing] = {}
        self.inflight_bytes = 0
        self.queue: deque[Delivery] | None = None
        self.queued_bytes = 0
        #: Inbound QoS 2 packet ids whose PUBREL has not come yet (MQTT-4.3.3-9 3.1.1); a dict
        #: used as a set (an empty dict is a third of an empty set's size).
        self.awaiting_rel: dict[int, None] = {}
        self.max_queued = max_queued
        self.max_queued_bytes = max_queued_bytes
        self.queue_qos0 = queue_qos0
        self.dropped = 0
        self._next_pid = 1
        #: Timer handles owned by the broker: session expiry and a delayed will.
        self.expiry_handle: Any = None
        self.will_handle: Any = None
        #: The durable store, while this session is persistent (expiry > 0) and the broker has
        #: one; None otherwise, so a clean session's traffic never touches the store.
        self.store: Store | None = None

    # -- delivery ---------------------------------------------------------------------------

    def deliver(
        self,
        message: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        cache: dict[Any, Any] | None = None,
    ) -> None:
        """Send ``message`` now if the window allows, otherwise queue it (or drop it)."""
        conn = self.connection
        if qos == 0:
            if conn is not None:
                conn.send_publish(message, 0, retain, sub_ids, 0, False, cache)
            elif self.queue_qos0:
                self._enqueue((message, 0, retain, sub_ids))
            return
        if conn is not None and not self.queue and self._window_open(conn):
            self._send_new((message, qos, retain, sub_ids), conn, cache, False)
        else:
            self._enqueue((message, qos, retain, sub_ids))

    def _window_open(self, conn: Connection) -> bool:
        quota = conn.send_quota
        if quota and len(self.inflight) >= quota:
            return False
        limit = conn.send_quota_bytes
        return not (limit and self.inflight_bytes >= limit)

    def _enqueue(self, delivery: Delivery) -> None:
        size = len(delivery[0].payload)
        queued = len(self.queue) if self.queue is not None else 0
        if (self.max_queued and queued >= self.max_queued) or (
            self.max_queued_bytes and self.queued_bytes + size > self.max_queued_bytes
        ):
            # Mosquitto's policy: a full queue drops the new message (counted).
            self.dropped += 1
            stats = self.stats
            if stats is not None:
                stats.messages_dropped += 1
                stats.queue_dropped += 1
            return
        if self.queue is None:
            self.queue = deque()
        self.queue.append(delivery)
        self.queued_bytes += size
        if self.store is not None:
            self.store.delivery_added(self.client_id, delivery, 0)

    def _allocate_pid(self) -> int:
        pid = self._next_pid
        inflight = self.inflight
        for _ in range(65535):
            if pid not in inflight:
                break
            pid = pid % 65535 + 1
        else:  # pragma: no cover - the window is far below 65535
            raise RuntimeError("no free packet identifier")
        self._next_pid = pid % 65535 + 1
        return pid

    def _send_new(
        self, delivery: Delivery, conn: Connection, cache: dict[Any, Any] | None, queued: bool
    ) -> None:
        """Send a delivery now; ``queued``: it is the head of the queue, just taken off it."""
        message, qos, retain, sub_ids = delivery
        store = self.store
        if qos == 0:
            conn.send_publish(message, 0, retain, sub_ids, 0, False, cache)
            if queued and store is not None:
                store.delivery_removed(self.client_id, message)
            return
        pid = self._allocate_pid()
        if conn.send_publish(message, qos, retain, sub_ids, pid, False, cache):
            size = len(message.payload)
            self.inflight[pid] = Outgoing(delivery, size)
            self.inflight_bytes += size
            if store is not None:
                if queued:
                    store.delivery_sent(self.client_id, pid)
                else:
                    store.delivery_added(self.client_id, delivery, pid)
        elif queued and store is not None:
            store.delivery_removed(self.client_id, message)

    def pump(self, now: float) -> None:
        """Move queued messages into the window while it has room (after an ack, or on connect)."""
        conn = self.connection
        queue = self.queue
        if queue is None:
            return
        while queue and conn is not None and self._window_open(conn):
            delivery = queue.popleft()
            self.queued_bytes -= len(delivery[0].payload)
            if delivery[0].expired(now):
                # MQTT-3.3.2-5 v5: an expired message is not delivered
                if self.store is not None:
                    self.store.delivery_removed(self.client_id, delivery[0])
                continue
            self._send_new(delivery, conn, None, True)
            conn = self.connection  # sending may have closed it

    # -- acknowledgements from the client --------------------------------------------------

    def acked(self, pid: int, qos: int) -> bool:
        """PUBACK (qos 1) or PUBCOMP (qos 2) for ``pid``; False if nothing matched."""
        out = self.inflight.get(pid)
        if out is None or out.delivery[1] != qos or (qos == 2 and not out.released):
            return False
        del self.inflight[pid]
        self.inflight_bytes -= out.size
        if self.store is not None:
            self.store.delivery_done(self.client_id, pid, out.delivery[0])
        return True

    def received(self, pid: int) -> bool:
        """PUBREC for ``pid``: the message is now the client's; PUBREL follows."""
        out = self.inflight.get(pid)
        if out is None or out.delivery[1] != 2:
            return False
        out.released = True
        if self.store is not None:
            self.store.delivery_released(self.client_id, pid)
        return True

    def rejected(self, pid: int) -> None:
        """PUBREC with a failure reason (v5): the flow ends here (MQTT 5 4.3.3)."""
        out = self.inflight.pop(pid, None)
        if out is not None:
            self.inflight_bytes -= out.size
            if self.store is not None:
                self.store.delivery_done(self.client_id, pid, out.delivery[0])

    # -- reconnection -------------------------------------------------------------------------

    def resend(self, conn: Connection) -> None:
        """Re-send unacknowledged PUBLISH (DUP) and PUBREL in original order (MQTT-4.4.0-1)."""
        for pid, out in list(self.inflight.items()):
            if out.released:
                conn.send_pubrel(pid)
            else:
                message, qos, retain, sub_ids = out.delivery
                if not conn.send_publish(message, qos, retain, sub_ids, pid, True, None):
                    self.inflight.pop(pid, None)
                    self.inflight_bytes -= out.size
                    if self.store is not None:
                        self.store.delivery_done(self.client_id, pid, message)

    def drop_expired(self, now: float) -> int:
        """Remove queued messages whose Message Expiry has passed (MQTT-3.3.2-5 v5) from a
        detached session's queue, so they leave the disk too; returns how many."""
        queue = self.queue
        if not queue:
            return 0
        kept: deque[Delivery] = deque()
        expired: list[Message] = []
        for delivery in queue:
            message = delivery[0]
            if message.expires_at is not None and message.expires_at <= now:
                expired.append(message)
                self.queued_bytes -= len(message.payload)
            else:
                kept.append(delivery)
        if expired:
            self.queue = kept
            if self.store is not None:
                self.store.deliveries_expired(self.client_id, expired)
        return len(expired)

    def stored_messages(self) -> list[Message]:
        """The messages its queue and in-flight entries reference (for the store's counts)."""
        messages = [out.delivery[0] for out in self.inflight.values()]
        if self.queue:
            messages.extend(d[0] for d in self.queue)
        return messages

    def restore(
        self,
        queue: list[Delivery],
        inflight: list[tuple[int, Delivery, bool]],
        awaiting_rel: list[int],
    ) -> None:
        """Take back what the store kept (start-up): the queue, the in-flight window (re-sent
        with DUP on reconnect, same packet ids, MQTT-4.4.0-1) and inbound QoS 2 ids."""
        if queue:
            self.queue = deque(queue)
            self.queued_bytes = sum(len(d[0].payload) for d in queue)
        for pid, delivery, released in inflight:
            out = Outgoing(delivery, len(delivery[0].payload))
            out.released = released
            self.inflight[pid] = out
            self.inflight_bytes += out.size
            self._next_pid = pid % 65535 + 1
        for pid in awaiting_rel:
            self.awaiting_rel[pid] = None

    def clear(self) -> None:
        """Forget everything (a clean start, MQTT-3.1.2-6 3.1.1 / MQTT-3.1.2-4 v5)."""
        self.subscriptions.clear()
        self.inflight.clear()
        self.inflight_bytes = 0
        self.queue = None
        self.queued_bytes = 0
        self.awaiting_rel.clear()
