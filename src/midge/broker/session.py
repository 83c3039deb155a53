"""Per-client-id state that outlives a connection: subscriptions, in-flight and queued messages.

A session is attached to at most one :class:`~midge.broker.connection.Connection` at a time. While
attached, deliveries go out at once within the send window (the client's Receive Maximum and our
``max_inflight_messages``, MQTT-4.9.0-1 v5); the rest wait in the queue. While detached, QoS 1/2
messages are queued for a persistent session (MQTT-3.1.2-5 3.1.1, MQTT-4.4 v5) up to the limits,
and are sent when it reconnects, after the unacknowledged ones are re-sent with DUP (MQTT-4.4.0-1).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from midge.broker.message import Message, SubOptions

if TYPE_CHECKING:
    from midge.broker.connection import Connection

#: An outgoing QoS 1/2 delivery: message, QoS, retain flag, subscription ids.
Delivery = tuple[Message, int, bool, "tuple[int, ...]"]

#: Session Expiry Interval meaning "never" (MQTT 5 3.1.2.11.2).
NEVER = 0xFFFFFFFF


class Outgoing:
    """A QoS 1/2 PUBLISH sent and not yet completed. ``released``: PUBREC received, PUBREL sent."""

    __slots__ = ("delivery", "released", "size")

    def __init__(self, delivery: Delivery, size: int) -> None:
        self.delivery = delivery
        self.released = False
        self.size = size


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
        "subscriptions",
        "will_handle",
    )

    def __init__(
        self,
        client_id: str,
        max_queued: int = 1000,
        max_queued_bytes: int = 0,
        queue_qos0: bool = False,
    ) -> None:
        self.client_id = client_id
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
            self._send_new((message, qos, retain, sub_ids), conn, cache)
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
            return
        if self.queue is None:
            self.queue = deque()
        self.queue.append(delivery)
        self.queued_bytes += size

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

    def _send_new(self, delivery: Delivery, conn: Connection, cache: dict[Any, Any] | None) -> None:
        message, qos, retain, sub_ids = delivery
        if qos == 0:
            conn.send_publish(message, 0, retain, sub_ids, 0, False, cache)
            return
        pid = self._allocate_pid()
        if conn.send_publish(message, qos, retain, sub_ids, pid, False, cache):
            size = len(message.payload)
            self.inflight[pid] = Outgoing(delivery, size)
            self.inflight_bytes += size

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
                continue  # MQTT-3.3.2-5 v5: an expired message is not delivered
            self._send_new(delivery, conn, None)
            conn = self.connection  # sending may have closed it

    # -- acknowledgements from the client --------------------------------------------------

    def acked(self, pid: int, qos: int) -> bool:
        """PUBACK (qos 1) or PUBCOMP (qos 2) for ``pid``; False if nothing matched."""
        out = self.inflight.get(pid)
        if out is None or out.delivery[1] != qos or (qos == 2 and not out.released):
            return False
        del self.inflight[pid]
        self.inflight_bytes -= out.size
        return True

    def received(self, pid: int) -> bool:
        """PUBREC for ``pid``: the message is now the client's; PUBREL follows."""
        out = self.inflight.get(pid)
        if out is None or out.delivery[1] != 2:
            return False
        out.released = True
        return True

    def rejected(self, pid: int) -> None:
        """PUBREC with a failure reason (v5): the flow ends here (MQTT 5 4.3.3)."""
        out = self.inflight.pop(pid, None)
        if out is not None:
            self.inflight_bytes -= out.size

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

    def clear(self) -> None:
        """Forget everything (a clean start, MQTT-3.1.2-6 3.1.1 / MQTT-3.1.2-4 v5)."""
        self.subscriptions.clear()
        self.inflight.clear()
        self.inflight_bytes = 0
        self.queue = None
        self.queued_bytes = 0
        self.awaiting_rel.clear()
