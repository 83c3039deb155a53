"""``$SYS/broker/...``: Mosquitto's broker status tree (``man mosquitto``, "BROKER STATUS").

:class:`SysTree` publishes the tree every ``sys_interval`` seconds through the broker's normal
retained publish path (:meth:`Broker.publish <midge.broker.broker.Broker.publish>`), so that a
``$SYS/#`` subscriber gets the values as they change and a new one gets them retained. It keeps
time only through the broker's :class:`~midge.broker.clock.Scheduler`, and reads counters the
hot path keeps as plain integer increments (:class:`~midge.broker.session.Stats`).

What is published follows Mosquitto 2.0.11's ``src/sys_tree.c`` (names, payload formats, QoS 2,
retained, the order within one update, and which topics are sent when):

- ``version`` once, at start (``midge version X``, where Mosquitto says ``mosquitto version X``);
- ``uptime`` (``N seconds``) at every update;
- the ``load/.../1min|5min|15min`` averages at the first update (``0.00``), then whenever one
  moved by 0.01 or more: an exponential moving average of the per-minute rate over the last
  interval, ``rate + exp(-dt/window) * (average - rate)``, printed with two decimals;
- every other value only when it changed since the last update (so the first update sends them
  all, except ``clients/maximum``, sent when the total first exceeds the largest seen so far).

Differences from Mosquitto, with their reasons, are in docs/mosquitto.md ("$SYS"): the messages
carry no Message Expiry Interval (Mosquitto gives each 60 seconds, so a value that stops changing
disappears from the retained set after a minute), ``heap/...`` is the process's memory (Python
has no allocator total worth its cost), and the store counts are per holder.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from midge import __version__
from midge.broker.model import Message
from midge.broker.session import session_totals

if TYPE_CHECKING:
    from midge.broker.broker import Broker
    from midge.broker.session import Stats

#: The QoS of every $SYS message, as in Mosquitto (SYS_TREE_QOS).
SYS_QOS: Final = 2
PREFIX: Final = "$SYS/broker/"

#: The load averages, in Mosquitto's order: name under ``$SYS/broker/load/`` and the counter
#: whose per-minute rate it averages.
LOADS: Final[tuple[tuple[str, Callable[[Stats], int]], ...]] = (
    ("messages/received", lambda s: s.packets_received),
    ("messages/sent", lambda s: s.packets_sent),
    ("publish/dropped", lambda s: s.messages_dropped),
    ("publish/received", lambda s: s.publish_received),
    ("publish/sent", lambda s: s.messages_sent),
    ("bytes/received", lambda s: s.bytes_received),
    ("bytes/sent", lambda s: s.bytes_sent),
    ("sockets", lambda s: s.sockets),
    ("connections", lambda s: s.connects),
)
#: The averaging windows: topic suffix and seconds.
WINDOWS: Final = (("1min", 60.0), ("5min", 300.0), ("15min", 900.0))

#: The counters sent when they change, in Mosquitto's order (after the store, subscription and
#: retained counts): topic under ``$SYS/broker/`` and the counter.
COUNTERS: Final[tuple[tuple[str, Callable[[Stats], int]], ...]] = (
    ("messages/received", lambda s: s.packets_received),
    ("messages/sent", lambda s: s.packets_sent),
    ("publish/messages/dropped", lambda s: s.messages_dropped),
    ("publish/messages/received", lambda s: s.publish_received),
    ("publish/messages/sent", lambda s: s.messages_sent),
    ("bytes/received", lambda s: s.bytes_received),
    ("bytes/sent", lambda s: s.bytes_sent),
    ("publish/bytes/received", lambda s: s.publish_bytes_received),
    ("publish/bytes/sent", lambda s: s.publish_bytes_sent),
)

#: Returns the process's (current, maximum) memory in bytes, for ``heap/current|maximum``.
MemoryProbe = Callable[[], tuple[int, int]]


class SysTree:
    """Publishes ``$SYS/broker/...`` for ``broker`` every ``interval`` seconds (see the module).

    ``memory``: where ``heap/current`` and ``heap/maximum`` come from (the server passes the
    process's resident memory); None publishes no ``heap/...``, as a Mosquitto built without
    memory tracking does.
    """

    def __init__(
        self,
        broker: Broker,
        interval: float,
        memory: MemoryProbe | None = None,
        version: str = f"midge version {__version__}",
        others: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.broker = broker
        #: With ``--workers``: the other workers' latest snapshots (midge.cluster.totals),
        #: added to this worker's numbers so that the tree shows the whole broker.
        self.others = others
        self.interval = interval
        self.memory = memory
        self.version = version
        self.started = 0.0
        self._handle: Any = None
        #: The value last sent per topic (the "only when changed" rule); None: never sent.
        self._sent: dict[str, str] = {}
        self._clients_max = 0
        #: The last update's time and counter readings (for the load averages); None before it.
        self._last: float | None = None
        self._readings: list[int] = []
        self._loads: list[float] = [0.0] * (len(LOADS) * len(WINDOWS))

    @property
    def loads(self) -> list[float]:
        """The load averages now: for each window of WINDOWS, each counter of LOADS."""
        return self._loads

    def start(self) -> None:
        """Publish the version and the first update now, then one every ``interval``."""
        scheduler = self.broker.scheduler
        self.started = scheduler.time()
        self._publish("version", self.version)
        self.update()
        self._handle = scheduler.call_later(self.interval, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def set_interval(self, interval: float) -> None:
        """A new ``sys_interval`` (SIGHUP): the next update comes ``interval`` from now."""
        self.interval = interval
        if self._handle is not None:
            self._handle.cancel()
            self._handle = self.broker.scheduler.call_later(interval, self._tick)

    def _tick(self) -> None:
        self._handle = None
        if self.broker.shutting_down:
            return
        self.update()
        self._handle = self.broker.scheduler.call_later(self.interval, self._tick)

    def _publish(self, topic: str, value: str) -> None:
        self.broker.publish(Message(PREFIX + topic, value.encode(), SYS_QOS, True))

    def _changed(self, topic: str, value: str) -> None:
        """Publish ``value`` on ``topic`` unless it is what was sent last."""
        if self._sent.get(topic) != value:
            self._sent[topic] = value
            self._publish(topic, value)

    def update(self) -> None:
        """One update of the tree (Mosquitto's ``sys_tree__update``)."""
        broker = self.broker
        stats = broker.stats
        others = self.others() if self.others is not None else []
        if others:
            from midge.cluster.totals import add_stats

            stats = add_stats(stats, others)
        now = broker.scheduler.time()
        self._publish("uptime", f"{int(now - self.started)} seconds")
        # -- clients
        sessions = broker.sessions
        total = len(sessions)
        t = session_totals(sessions)
        connected, held, held_bytes = t.connected, t.held, t.held_bytes
        for other in others:
            total += other["sessions"]
            connected += other["connected"]
            held += other["held"]
            held_bytes += other["held_bytes"]
        if self._sent.get("clients/total") != str(total):
            self._changed("clients/total", str(total))
            if total > self._clients_max:
                self._clients_max = total
                self._publish("clients/maximum", str(total))
        disconnected = str(total - connected)
        if self._sent.get("clients/disconnected") != disconnected:
            self._changed("clients/inactive", disconnected)
            self._changed("clients/disconnected", disconnected)
        if self._sent.get("clients/connected") != str(connected):
            self._changed("clients/active", str(connected))
            self._changed("clients/connected", str(connected))
        self._changed("clients/expired", str(stats.clients_expired))
        # -- load averages
        readings = [counter(stats) for _, counter in LOADS]
        last = self._last
        loads = self._loads
        k = 0
        for suffix, window in WINDOWS:
            exponent = math.exp(-(now - last) / window) if last is not None else 0.0
            for i, (name, _) in enumerate(LOADS):
                topic = f"load/{name}/{suffix}"
                current = loads[k]
                if last is None:
                    self._publish(topic, f"{current:.2f}")
                elif now > last:
                    rate = (readings[i] - self._readings[i]) * 60.0 / (now - last)
                    new = rate + exponent * (current - rate)
                    if abs(new - current) >= 0.01:
                        self._publish(topic, f"{new:.2f}")
                    loads[k] = new
                k += 1
        self._last = now
        self._readings = readings
        # -- what the broker holds
        retained = broker.retained
        stored = str(retained.count + held)
        if self._sent.get("store/messages/count") != stored:
            self._changed("messages/stored", stored)
            self._changed("store/messages/count", stored)
        self._changed("store/messages/bytes", str(retained.payload_bytes + held_bytes))
        tree = broker.tree
        subscriptions = tree.count - tree.shared_count + sum(o["subscriptions"] for o in others)
        shared = tree.shared_count + sum(o["shared_subscriptions"] for o in others)
        self._changed("subscriptions/count", str(subscriptions))
        self._changed("shared_subscriptions/count", str(shared))
        self._changed("retained messages/count", str(broker.retained.count))
        if self.memory is not None:
            current_heap, max_heap = self.memory()
            current_heap += sum(o["memory"] for o in others)
            max_heap += sum(o["memory_peak"] for o in others)
            self._changed("heap/current", str(current_heap))
            self._changed("heap/maximum", str(max_heap))
        for topic, counter in COUNTERS:
            self._changed(topic, str(counter(stats)))
