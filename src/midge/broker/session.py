"""Per-client-id state that outlives a connection: subscriptions, windows, QoS state, queue.

A session is attached to at most one :class:`~midge.broker.connection.Connection` at a time; while
attached it has a :class:`~midge.broker.outgoing.Sink` (the connection's outgoing side) and the
windows the CONNECT negotiated (:meth:`Session.open`). Deliveries go out at once within the send
window (the client's Receive Maximum and our ``max_inflight_messages``, MQTT-4.9.0-1 v5); the rest
wait in the queue. While detached, QoS 1/2 messages are queued for a persistent session
(MQTT-3.1.2-5 3.1.1, MQTT-4.4 v5) up to the limits, and are sent when it reconnects, after the
unacknowledged ones are re-sent with DUP (MQTT-4.4.0-1).

The session owns all QoS state: outbound in-flight messages and inbound QoS 2 ids awaiting PUBREL.
The connection tells it what the client sent (plain calls) and never writes its fields; the sink
never calls back. :meth:`Session.snapshot` / :meth:`Session.restore` turn it into plain values
(:class:`~midge.broker.model.SessionState`) and back, for the store and the ``--workers`` hand-off.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Final

from midge.broker.model import Delivery, Message, SessionState, SubOptions

if TYPE_CHECKING:
    from midge.broker.connection import Connection
    from midge.broker.outgoing import FormCache, Sink
    from midge.store.base import Store

#: Session Expiry Interval meaning "never" (MQTT 5 3.1.2.11.2).
NEVER: Final = 0xFFFFFFFF
#: Payload bytes of held-back QoS 0 messages written per loop turn once the socket drains
#: (:meth:`Session.writable`): asyncio's default high-water mark, so the transport's buffer
#: never holds much more than that and what waits stays in the bounded backlog.
DRAIN_BYTES: Final = 64 * 1024


class Inflight:
    """A QoS 1/2 PUBLISH sent and not yet completed. ``released``: PUBREC received, PUBREL sent."""

    __slots__ = ("delivery", "released", "size")

    def __init__(self, delivery: Delivery, size: int) -> None:
        self.delivery = delivery
        self.released = False
        self.size = size


class Stats:
    """Counters for $SYS (:mod:`midge.broker.systree`) and metrics.

    Plain integer increments where the event happens; :mod:`midge.broker.systree` reads them
    every ``sys_interval`` and never resets them.
    """

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "clients_expired",
        "connects",
        "disconnects",
        "dropped_expired",
        "dropped_memory",
        "dropped_too_large",
        "held_bytes",
        "limited_connection_rate",
        "limited_connections",
        "limited_publish_rate",
        "limited_subscriptions",
        "limited_topics",
        "messages_dropped",
        "messages_received",
        "messages_sent",
        "no_subscribers",
        "packets_received",
        "packets_sent",
        "publish_bytes_received",
        "publish_bytes_sent",
        "publish_received",
        "publish_refused",
        "queue_dropped",
        "received_by_qos",
        "received_bytes_by_qos",
        "refused",
        "sent_by_qos",
        "sent_bytes_by_qos",
        "sockets",
    )

    def __init__(self) -> None:
        #: Messages routed: PUBLISH accepted from clients, wills, $SYS updates.
        self.messages_received = 0
        #: PUBLISH packets sent ($SYS/broker/publish/messages/sent).
        self.messages_sent = 0
        #: Every MQTT packet read from / written to a client, and their bytes on the wire
        #: ($SYS/broker/messages/received|sent, $SYS/broker/bytes/received|sent).
        self.packets_received = 0
        self.packets_sent = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        #: PUBLISH packets read, and the payload bytes of those read and sent
        #: ($SYS/broker/publish/messages/received, $SYS/broker/publish/bytes/received|sent).
        self.publish_received = 0
        self.publish_bytes_received = 0
        self.publish_bytes_sent = 0
        #: Connections accepted (sockets) and CONNECT packets handled ($SYS load averages).
        self.sockets = 0
        self.connects = 0
        #: Sessions ended by their expiry interval ($SYS/broker/clients/expired).
        self.clients_expired = 0
        #: Every message not delivered for want of room: full queues (slow consumers too), too
        #: large for the client, and the PUBLISHes refused over memory_limit.
        self.messages_dropped = 0
        #: Of those, the ones a full session queue dropped (max_queued_messages / _bytes): the
        #: offline queue, the queue behind the in-flight window, and the QoS 0 messages waiting
        #: for a connected client's socket to drain (:meth:`Session.writable`).
        self.queue_dropped = 0
        #: The payload bytes every session holds: queued, in flight, and QoS 0 waiting for a
        #: paused socket, counted once per session that holds them. With the retained messages'
        #: bytes, what ``memory_limit`` counts (:meth:`midge.broker.broker.Broker.memory_used`).
        self.held_bytes = 0
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
        #: What follows feeds /metrics (:mod:`midge.observe.metrics`), read only at scrape time.
        #: The PUBLISH packets read and sent, and their payload bytes, indexed by QoS.
        self.received_by_qos: list[int] = [0, 0, 0]
        self.received_bytes_by_qos: list[int] = [0, 0, 0]
        self.sent_by_qos: list[int] = [0, 0, 0]
        self.sent_bytes_by_qos: list[int] = [0, 0, 0]
        #: DISCONNECTs from clients by reason code (v3: 0); the broker's own are in ``refused``.
        self.disconnects: dict[int, int] = {}
        #: PUBLISHes from clients not routed, by the reason code of their refusal (0x87 not
        #: authorized, 0x83 over message_size_limit, 0x90 topic over the limits, 0x97 quota).
        self.publish_refused: dict[int, int] = {}
        #: Messages not delivered: their Message Expiry passed while held; too large for the
        #: client's Maximum Packet Size; refused over memory_limit (all in messages_dropped but
        #: the expired, which Mosquitto does not count as dropped either).
        self.dropped_expired = 0
        self.dropped_too_large = 0
        self.dropped_memory = 0
        #: PUBLISHes from clients that matched no subscription (v5 reason 0x10).
        self.no_subscribers = 0


class Session:
    """The state of one client id (MQTT 3.1.1 section 3.1.2.4, MQTT 5 section 4.1).

    Slotted, with the queue made on first use: an idle connection's session must stay small
    (the benchmark holds 19,000 of them to a few KB each).
    """

    __slots__ = (
        "_next_pid",
        "awaiting_rel",
        "backlog",
        "backlog_bytes",
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
        "receive_maximum",
        "resending",
        "resending_bytes",
        "send_quota",
        "send_quota_bytes",
        "sink",
        "stats",
        "store",
        "subscriptions",
        "version",
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
        #: The protocol level its client last connected with (Mosquitto's context->protocol):
        #: an MQTT 5 client gets one copy per matching subscription (Broker.route).
        self.version = 4
        #: The broker's counters (queue overflows are counted there too).
        self.stats = stats
        #: The attached connection (the broker's business: takeover, wills) and where
        #: deliveries go while it is attached (None: detached).
        self.connection: Connection | None = None
        self.sink: Sink | None = None
        #: The windows the CONNECT negotiated (:meth:`open`): outgoing, the client's Receive
        #: Maximum and our max_inflight_messages / max_inflight_bytes (0: no byte limit);
        #: incoming, our Receive Maximum for QoS 1/2 PUBLISH awaiting completion (v5).
        self.send_quota = 65535
        self.send_quota_bytes = 0
        self.receive_maximum = 65535
        self.subscriptions: dict[str, SubOptions] = {}
        #: Seconds the session lives after its connection closes; NEVER = forever.
        self.expiry_interval = 0
        self.inflight: dict[int, Inflight] = {}
        self.inflight_bytes = 0
        #: On a resumed session, the in-flight packet ids (in original order) not re-sent yet on
        #: this connection, and their bytes: they wait for room in the send window
        #: (MQTT-3.3.4-9 v5), and the window counts only the others.
        self.resending: dict[int, None] | None = None
        self.resending_bytes = 0
        self.queue: deque[Delivery] | None = None
        self.queued_bytes = 0
        #: QoS 0 deliveries waiting for the attached client's socket to drain (the transport
        #: paused writing: the client reads slower than we write), and their bytes. Bounded by
        #: max_queued_messages / max_queued_bytes apart from :attr:`queue`, as Mosquitto bounds
        #: the QoS 0 packets it has not written yet; None when there are none.
        self.backlog: deque[Delivery] | None = None
        self.backlog_bytes = 0
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

    # -- attachment -----------------------------------------------------------------------------

    def open(
        self, sink: Sink, send_quota: int, send_quota_bytes: int, receive_maximum: int
    ) -> None:
        """A client is attached (CONNACK): deliveries go to ``sink`` within these windows."""
        self.sink = sink
        self.send_quota = send_quota
        self.send_quota_bytes = send_quota_bytes
        self.receive_maximum = receive_maximum

    def set_expiry(self, expiry: int) -> None:
        """The client changed its Session Expiry Interval (v5 DISCONNECT, MQTT-3.14.2-2)."""
        self.expiry_interval = expiry

    def detached(self) -> None:
        """Its connection is gone (closed, or taken over): deliveries are queued from now on.
        QoS 0 messages still waiting for its socket go with it, as Mosquitto's unwritten packets
        do."""
        self.connection = None
        self.sink = None
        self.resending = None
        self.resending_bytes = 0
        if self.backlog is not None:
            self._held(-self.backlog_bytes)
            self.backlog = None
            self.backlog_bytes = 0

    def held(self) -> int:
        """The payload bytes this session holds (queued, in flight, waiting for its socket)."""
        return self.queued_bytes + self.inflight_bytes + self.backlog_bytes

    def _held(self, delta: int) -> None:
        stats = self.stats
        if stats is not None:
            stats.held_bytes += delta

    # -- delivery ---------------------------------------------------------------------------

    def deliver(
        self,
        message: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        cache: FormCache | None = None,
    ) -> None:
        """Send ``message`` now if the window allows, otherwise queue it (or drop it)."""
        sink = self.sink
        if qos == 0:
            if sink is not None:
                if sink.paused or self.backlog is not None:
                    self._hold((message, 0, retain, sub_ids))
                else:
                    sink.publish(message, 0, retain, sub_ids, 0, False, cache)
            elif self.queue_qos0:
                self._enqueue((message, 0, retain, sub_ids))
            return
        if sink is not None and not self.queue and not self.resending and self._window_open():
            self._send_new((message, qos, retain, sub_ids), sink, cache, False)
        else:
            self._enqueue((message, qos, retain, sub_ids))

    def _window_open(self) -> bool:
        count = len(self.inflight)
        size = self.inflight_bytes
        resending = self.resending
        if resending:
            # Not on the wire on this connection yet: outside the window.
            count -= len(resending)
            size -= self.resending_bytes
        quota = self.send_quota
        if quota and count >= quota:
            return False
        limit = self.send_quota_bytes
        return not (limit and size >= limit)

    def _full(self, queued: int, queued_bytes: int, size: int) -> bool:
        """Whether a queue holding ``queued`` messages of ``queued_bytes`` takes no message of
        ``size`` bytes more (max_queued_messages / max_queued_bytes, 0: no limit); if so, the
        message is dropped and counted (Mosquitto's policy: a full queue drops the new one)."""
        if (self.max_queued and queued >= self.max_queued) or (
            self.max_queued_bytes and queued_bytes >= self.max_queued_bytes
        ):
            # Bytes are queued until the limit is exceeded (the message that crosses it is
            # kept), as mosquitto.conf(5) says and Mosquitto does.
            self.dropped += 1
            stats = self.stats
            if stats is not None:
                stats.messages_dropped += 1
                stats.queue_dropped += 1
            return True
        return False

    def _enqueue(self, delivery: Delivery) -> None:
        size = len(delivery[0].payload)
        queued = len(self.queue) if self.queue is not None else 0
        if self._full(queued, self.queued_bytes, size):
            return
        if self.queue is None:
            self.queue = deque()
        self.queue.append(delivery)
        self.queued_bytes += size
        self._held(size)
        if self.store is not None:
            self.store.delivery_added(self.client_id, delivery, 0)

    def _hold(self, delivery: Delivery) -> None:
        """A QoS 0 delivery to a connected client whose socket is backed up: it waits for
        :meth:`writable`, within max_queued_messages / max_queued_bytes (Mosquitto's bound on
        the QoS 0 packets it has not written yet); beyond them it is dropped and counted."""
        size = len(delivery[0].payload)
        backlog = self.backlog
        if self._full(len(backlog) if backlog is not None else 0, self.backlog_bytes, size):
            return
        if backlog is None:
            backlog = self.backlog = deque()
        backlog.append(delivery)
        self.backlog_bytes += size
        self._held(size)

    def writable(self, budget: int = DRAIN_BYTES) -> bool:
        """The client's socket drained (the transport resumed writing): send the QoS 0 messages
        that waited for it, in order, until about ``budget`` payload bytes are written (at least
        one message) or it is backed up again. True if some still wait and it is not backed up:
        the caller calls again on the next loop turn, once what was written has reached the
        transport (which pauses it again if the client is still slow)."""
        backlog = self.backlog
        sink = self.sink
        written = 0
        while backlog and sink is not None and not sink.paused and written < budget:
            message, qos, retain, sub_ids = backlog.popleft()
            size = len(message.payload)
            self.backlog_bytes -= size
            self._held(-size)
            written += size + 1  # an empty payload is a message too
            sink.publish(message, qos, retain, sub_ids, 0, False, None)
            sink = self.sink  # sending may have closed it
        if backlog is None or self.backlog is not backlog:
            return False
        if not backlog:
            self.backlog = None
            return False
        return sink is not None and not sink.paused

    def _free_pid(self) -> int:
        """The next free packet id; taken (``_next_pid`` moves on) only once the PUBLISH
        carrying it is sent."""
        pid = self._next_pid
        inflight = self.inflight
        for _ in range(65535):
            if pid not in inflight:
                break
            pid = pid % 65535 + 1
        else:  # pragma: no cover - the window is far below 65535
            raise RuntimeError("no free packet identifier")
        return pid

    def _send_new(
        self, delivery: Delivery, sink: Sink, cache: FormCache | None, queued: bool
    ) -> None:
        """Send a delivery now; ``queued``: it is the head of the queue, just taken off it."""
        message, qos, retain, sub_ids = delivery
        store = self.store
        if qos == 0:
            sink.publish(message, 0, retain, sub_ids, 0, False, cache)
            if queued and store is not None:
                store.delivery_removed(self.client_id, message)
            return
        pid = self._free_pid()
        if sink.publish(message, qos, retain, sub_ids, pid, False, cache):
            self._next_pid = pid % 65535 + 1
            size = len(message.payload)
            self.inflight[pid] = Inflight(delivery, size)
            self.inflight_bytes += size
            self._held(size)
            if store is not None:
                if queued:
                    store.delivery_sent(self.client_id, pid)
                else:
                    store.delivery_added(self.client_id, delivery, pid)
        elif queued and store is not None:
            store.delivery_removed(self.client_id, message)

    def pump(self, now: float) -> None:
        """Move queued messages into the window while it has room (after an ack, or on connect):
        first the in-flight ones still to re-send, then the queue."""
        sink = self.sink
        if self.resending and sink is not None:
            self._resend_pending(sink)
            if self.resending:
                return
            sink = self.sink
        queue = self.queue
        if queue is None:
            return
        while queue and sink is not None and self._window_open():
            delivery = queue.popleft()
            size = len(delivery[0].payload)
            self.queued_bytes -= size
            self._held(-size)
            if delivery[0].expired(now):
                # MQTT-3.3.2-5 v5: an expired message is not delivered
                if self.stats is not None:
                    self.stats.dropped_expired += 1
                if self.store is not None:
                    self.store.delivery_removed(self.client_id, delivery[0])
                continue
            self._send_new(delivery, sink, None, True)
            sink = self.sink  # sending may have closed it

    # -- acknowledgements from the client --------------------------------------------------

    def acked(self, pid: int, qos: int) -> bool:
        """PUBACK (qos 1) or PUBCOMP (qos 2) for ``pid``; False if nothing matched."""
        out = self.inflight.get(pid)
        if out is None or out.delivery[1] != qos or (qos == 2 and not out.released):
            return False
        del self.inflight[pid]
        self.inflight_bytes -= out.size
        self._held(-out.size)
        self._not_resending(pid, out)
        if self.store is not None:
            self.store.delivery_done(self.client_id, pid, out.delivery[0])
        return True

    def _not_resending(self, pid: int, out: Inflight) -> None:
        """``pid`` needs no re-sending any more (acknowledged, or sent again)."""
        resending = self.resending
        if resending and pid in resending:
            del resending[pid]
            self.resending_bytes -= out.size

    def received(self, pid: int) -> bool:
        """PUBREC for ``pid``: the message is now the client's; PUBREL follows."""
        out = self.inflight.get(pid)
        if out is None or out.delivery[1] != 2:
            return False
        out.released = True
        self._not_resending(pid, out)  # its PUBREL goes now
        if self.store is not None:
            self.store.delivery_released(self.client_id, pid)
        return True

    def rejected(self, pid: int) -> None:
        """PUBREC with a failure reason (v5): the flow ends here (MQTT 5 4.3.3)."""
        out = self.inflight.pop(pid, None)
        if out is not None:
            self.inflight_bytes -= out.size
            self._held(-out.size)
            self._not_resending(pid, out)
            if self.store is not None:
                self.store.delivery_done(self.client_id, pid, out.delivery[0])

    # -- incoming QoS 2 ---------------------------------------------------------------------

    def qos2_known(self, pid: int) -> bool:
        """A QoS 2 PUBLISH with ``pid`` was received and its PUBREL has not come yet: a re-sent
        one is not routed again (MQTT-4.3.3-2)."""
        return pid in self.awaiting_rel

    def inbound_full(self) -> bool:
        """As many QoS 1/2 PUBLISH wait for completion as our Receive Maximum allows (v5)."""
        return len(self.awaiting_rel) >= self.receive_maximum

    def qos2_received(self, pid: int) -> None:
        """A QoS 2 PUBLISH was accepted: remember ``pid`` until its PUBREL (MQTT-4.3.3-9)."""
        self.awaiting_rel[pid] = None
        if self.store is not None:
            self.store.inbound_added(self.client_id, pid)

    def qos2_released(self, pid: int) -> bool:
        """PUBREL for ``pid``; False if no such PUBLISH was waiting."""
        if pid not in self.awaiting_rel:
            return False
        del self.awaiting_rel[pid]
        if self.store is not None:
            self.store.inbound_removed(self.client_id, pid)
        return True

    # -- reconnection -------------------------------------------------------------------------

    def resend(self) -> None:
        """Re-send unacknowledged PUBLISH (DUP) and PUBREL in original order (MQTT-4.4.0-1), as
        many as the send window allows (MQTT-3.3.4-9 v5: a client resuming with a smaller
        Receive Maximum); :meth:`pump` re-sends the rest as acks open the window."""
        sink = self.sink
        if sink is None or not self.inflight:
            return
        self.resending = dict.fromkeys(self.inflight)
        self.resending_bytes = self.inflight_bytes
        self._resend_pending(sink)

    def _resend_pending(self, sink: Sink) -> None:
        resending = self.resending
        inflight = self.inflight
        current: Sink | None = sink
        while resending and current is not None and self._window_open():
            pid = next(iter(resending))
            out = inflight[pid]
            del resending[pid]
            self.resending_bytes -= out.size
            if out.released:
                current.pubrel(pid)
            else:
                message, qos, retain, sub_ids = out.delivery
                if not current.publish(message, qos, retain, sub_ids, pid, True, None):
                    del inflight[pid]
                    self.inflight_bytes -= out.size
                    self._held(-out.size)
                    if self.store is not None:
                        self.store.delivery_done(self.client_id, pid, message)
            current = self.sink  # sending may have closed it

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
                size = len(message.payload)
                self.queued_bytes -= size
                self._held(-size)
            else:
                kept.append(delivery)
        if expired:
            self.queue = kept
            if self.store is not None:
                self.store.deliveries_expired(self.client_id, expired)
            if self.stats is not None:
                self.stats.dropped_expired += len(expired)
        return len(expired)

    def stored_messages(self) -> list[Message]:
        """The messages its queue and in-flight entries reference (for the store's counts)."""
        messages = [out.delivery[0] for out in self.inflight.values()]
        if self.queue:
            messages.extend(d[0] for d in self.queue)
        return messages

    def snapshot(self, username: str | None = None, version: int = 0) -> SessionState:
        """Everything the session holds as plain values (for another worker; the store keeps
        the same form, reported change by change)."""
        state = SessionState(
            self.client_id, version or self.version, self.expiry_interval, None, username
        )
        state.subscriptions = dict(self.subscriptions)
        state.inflight = [(pid, out.delivery, out.released) for pid, out in self.inflight.items()]
        state.queue = list(self.queue) if self.queue else []
        state.awaiting_rel = list(self.awaiting_rel)
        state.next_pid = self._next_pid
        state.dropped = self.dropped
        return state

    def restore(self, state: SessionState) -> None:
        """Take back a snapshot or what the store kept (start-up): subscriptions, expiry, the
        queue, the in-flight window (re-sent with DUP on reconnect, same packet ids,
        MQTT-4.4.0-1) and inbound QoS 2 ids. The broker subscribes it in its tree."""
        before = self.held()
        self.expiry_interval = state.expiry_interval
        if state.version:
            self.version = state.version
        self.subscriptions.update(state.subscriptions)
        if state.queue:
            self.queue = deque(state.queue)
            self.queued_bytes = sum(len(d[0].payload) for d in state.queue)
        for pid, delivery, released in state.inflight:
            out = Inflight(delivery, len(delivery[0].payload))
            out.released = released
            self.inflight[pid] = out
            self.inflight_bytes += out.size
            self._next_pid = pid % 65535 + 1
        if state.next_pid:
            self._next_pid = state.next_pid
        for pid in state.awaiting_rel:
            self.awaiting_rel[pid] = None
        self.dropped = state.dropped
        self._held(self.held() - before)

    def clear(self) -> None:
        """Forget everything (a clean start, MQTT-3.1.2-6 3.1.1 / MQTT-3.1.2-4 v5)."""
        self._held(-self.held())
        self.backlog = None
        self.backlog_bytes = 0
        self.subscriptions.clear()
        self.inflight.clear()
        self.inflight_bytes = 0
        self.resending = None
        self.resending_bytes = 0
        self.queue = None
        self.queued_bytes = 0
        self.awaiting_rel.clear()


class SessionTotals:
    """What a broker's sessions hold, summed (:func:`session_totals`): for ``/metrics``, the
    ``$SYS`` tree, the dashboard, and the numbers each worker sends worker 0."""

    __slots__ = (
        "connected",
        "deepest",
        "held",
        "held_bytes",
        "inflight",
        "inflight_bytes",
        "queued",
        "queued_bytes",
    )

    def __init__(self) -> None:
        #: Sessions with a connection.
        self.connected = 0
        #: Messages held to be sent (queued or in flight) and their payload bytes, the backlog
        #: excluded ($SYS "messages/stored").
        self.held = 0
        self.held_bytes = 0
        #: Messages waiting to be sent, the backlog included, and their payload bytes; the
        #: longest such queue of one session.
        self.queued = 0
        self.queued_bytes = 0
        self.deepest = 0
        #: QoS 1/2 messages sent and not yet acknowledged, and their payload bytes.
        self.inflight = 0
        self.inflight_bytes = 0


def session_totals(sessions: dict[str, Session]) -> SessionTotals:
    """Sum what ``sessions`` hold. It walks every session (a broker holds up to 100,000 of
    them per process), once a second on each worker, so it is compiled with the hot modules."""
    t = SessionTotals()
    connected = held = held_bytes = queued = queued_bytes = inflight = inflight_bytes = 0
    deepest = 0
    for session in sessions.values():
        if session.connection is not None:
            connected += 1
        queue = session.queue
        depth = len(queue) if queue else 0
        n = len(session.inflight)
        held += n + depth
        held_bytes += session.inflight_bytes + session.queued_bytes
        backlog = session.backlog
        if backlog:
            depth += len(backlog)
        queued += depth
        if depth > deepest:
            deepest = depth
        queued_bytes += session.queued_bytes + session.backlog_bytes
        inflight += n
        inflight_bytes += session.inflight_bytes
    t.connected = connected
    t.held = held
    t.held_bytes = held_bytes
    t.queued = queued
    t.queued_bytes = queued_bytes
    t.deepest = deepest
    t.inflight = inflight
    t.inflight_bytes = inflight_bytes
    return t
