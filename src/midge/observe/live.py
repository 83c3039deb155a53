"""The web dashboard's live view: server-sent events from the ``protocol http`` listener.

While at least one dashboard stream (``GET /api/stream``) is open, the broker's ``tap``
(:attr:`midge.broker.broker.Broker.tap`) is the bound ``append`` of a bounded deque: every
message published is appended to it (C code, nothing else on the publish path), and it keeps the
newest :data:`SAMPLE` of them, so a busy broker holds no more messages for the dashboard than
that, whatever its rate. Once a second a timer takes that sample and folds it into a table of
topics (count, rate, last value, the last :data:`HISTORY` values), samples the broker's
counters, and sends both to every open stream as one formatted chunk. When more than
:data:`SAMPLE` messages came in that second, each topic's count is its share of the sample
scaled to the broker's count of messages routed (an estimate, said in docs/operations.md).
When the last stream closes, the tap goes back to None, the timer stops and the table is
dropped: with no dashboard open the broker pays one attribute check per publish and nothing
else.

The per-message work at each tick runs in C where it can (``Counter`` over the topics, a dict
of the last message per topic); the Python loop that fills the histories walks back from the
newest message at most :data:`SCAN` messages, so a busy broker's tick stays short (a topic whose
messages are all older than that gets only its last value into its history for that second).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter, deque
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from midge.observe.metrics import dropped_total

if TYPE_CHECKING:
    from midge.broker.broker import Broker
    from midge.broker.model import Message
    from midge.server import Server

#: Seconds between two updates.
TICK = 1.0
#: Values a topic's history keeps.
HISTORY = 20
#: Payload bytes kept per value (the history, the explorer's viewer).
PREVIEW = 4096
#: Payload bytes of the last value sent with each topic of an update (the tree's column).
SHORT = 256
#: Topics the table follows at most; messages of topics past that are only counted.
MAX_TOPICS = 10_000
#: Topics one update lists at most (the busiest first).
MAX_CHANGES = 2_000
#: Messages of one second whose values go into the histories (newest first).
SCAN = 4_000
#: Messages the tap keeps (the newest): the sample a busy second's rates are estimated from.
SAMPLE = 4_096
#: Chunks a stream may fall behind by before it is closed (its page reconnects).
BACKLOG = 30

_TOPIC = attrgetter("topic")

Held = tuple[int, int, bool, int, bytes]  # (time in ms, qos, retain, size, payload preview)


def _held(message: Message, when: int) -> Held:
    payload = message.payload
    preview = payload if len(payload) <= PREVIEW else payload[:PREVIEW]
    return (when, message.qos, message.retain, len(payload), preview)


def held_json(item: Held, limit: int = PREVIEW) -> dict[str, Any]:
    when, qos, retain, size, preview = item
    return {
        "time": when,
        "qos": qos,
        "retain": retain,
        "size": size,
        "payload_base64": base64.b64encode(preview[:limit]).decode("ascii"),
    }


class TopicEntry:
    """What the dashboard knows of one topic since the first stream opened."""

    __slots__ = ("count", "history", "rate")

    def __init__(self) -> None:
        self.count = 0
        self.rate = 0
        self.history: deque[Held] = deque(maxlen=HISTORY)


def event(name: str, data: Any) -> bytes:
    """One server-sent event (``data`` as one line of JSON)."""
    text = json.dumps(data, separators=(",", ":"))
    return f"event: {name}\ndata: {text}\n\n".encode()


class Live:
    """The open dashboard streams of one server, and the topic table they share."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.streams: set[asyncio.Queue[bytes | None]] = set()
        self.topics: dict[str, TopicEntry] = {}
        #: Messages of topics past :data:`MAX_TOPICS`.
        self.untracked = 0
        self.pending: deque[Message] = deque(maxlen=SAMPLE)
        #: The broker's count of messages routed at the last tick (for the rates' scale).
        self.received = 0
        self.timer: asyncio.TimerHandle | None = None
        self.broker: Broker | None = None

    @property
    def active(self) -> bool:
        return bool(self.streams)

    # -- streams ---------------------------------------------------------------------------------

    def open(self, broker: Broker) -> asyncio.Queue[bytes | None]:
        """A new stream; the first one starts the tap, the table (seeded with the retained
        messages) and the timer."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=BACKLOG)
        if not self.streams:
            self.broker = broker
            self.pending = deque(maxlen=SAMPLE)
            self.received = broker.stats.messages_received
            now = _now_ms()
            for pattern in ("#", "$SYS/#"):
                for message in broker.retained.match(pattern):
                    entry = self._entry(message.topic)
                    if entry is None:
                        break  # the table is full
                    entry.history.append(_held(message, now))
            broker.tap = self.pending.append
            self.timer = asyncio.get_running_loop().call_later(TICK, self._tick)
        self.streams.add(queue)
        return queue

    def close(self, queue: asyncio.Queue[bytes | None]) -> None:
        """A stream ended; the last one puts everything back as it was with no dashboard."""
        self.streams.discard(queue)
        if self.streams:
            return
        if self.broker is not None:
            self.broker.tap = None
        self.broker = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.pending = deque(maxlen=SAMPLE)
        self.topics = {}
        self.untracked = 0

    def shutdown(self) -> None:
        """The listener stops: every stream ends now."""
        for queue in list(self.streams):
            _offer(queue, None)
            self.close(queue)

    def hello(self) -> bytes:
        """A new stream's first chunk: the counters and every topic known."""
        return self._stats() + event("topics", self._topics(list(self.topics), full=True))

    # -- the table -------------------------------------------------------------------------------

    def _entry(self, topic: str) -> TopicEntry | None:
        entry = self.topics.get(topic)
        if entry is None:
            if len(self.topics) >= MAX_TOPICS:
                return None
            entry = self.topics[topic] = TopicEntry()
        return entry

    def absorb(self, batch: list[Message], now: int, total: int | None = None) -> list[str]:
        """Fold one second of messages into the table; the topics that changed. ``total``:
        how many messages that second had, when ``batch`` is only the newest of them (each
        topic's count is then scaled to it)."""
        counts = Counter(map(_TOPIC, batch))
        if total is not None and batch and total > len(batch):
            scale = total / len(batch)
            counts = Counter({t: max(1, round(n * scale)) for t, n in counts.items()})
        last = dict(zip(map(_TOPIC, batch), batch, strict=True))
        for known in self.topics.values():
            known.rate = 0
        changed: list[str] = []
        fresh: dict[str, list[Held]] = {}
        for topic, n in counts.items():
            entry = self._entry(topic)
            if entry is None:
                self.untracked += n
                continue
            entry.count += n
            entry.rate = n
            changed.append(topic)
            fresh[topic] = []
        # The newest values first, at most HISTORY per topic and SCAN in all.
        wanted = {t: min(counts[t], HISTORY) for t in fresh}
        missing = sum(wanted.values())
        for message in batch[: -SCAN - 1 : -1]:
            values = fresh.get(message.topic)
            if values is not None and len(values) < wanted[message.topic]:
                values.append(_held(message, now))
                missing -= 1
                if not missing:
                    break
        for topic, values in fresh.items():
            if not values:
                values.append(_held(last[topic], now))
            self.topics[topic].history.extend(reversed(values))
        changed.sort(key=lambda t: -counts[t])
        return changed

    def _tick(self) -> None:
        self.timer = None
        broker = self.broker
        if not self.streams or broker is None:
            return
        batch = list(self.pending)
        self.pending = deque(maxlen=SAMPLE)
        broker.tap = self.pending.append
        received = broker.stats.messages_received
        total, self.received = received - self.received, received
        changed = self.absorb(batch, _now_ms(), total)
        chunk = self._stats() + event("topics", self._topics(changed[:MAX_CHANGES]))
        for queue in list(self.streams):
            if not _offer(queue, chunk):
                self.close(queue)  # too far behind: its page reconnects
        if self.streams:
            self.timer = asyncio.get_running_loop().call_later(TICK, self._tick)

    def _topics(self, names: list[str], full: bool = False) -> dict[str, Any]:
        items = []
        for name in names:
            entry = self.topics[name]
            item: dict[str, Any] = {"topic": name, "count": entry.count, "rate": entry.rate}
            if entry.history:
                item["last"] = held_json(entry.history[-1], SHORT)
            items.append(item)
        return {
            "time": _now_ms(),
            "full": full,
            "topics": items,
            "tracked": len(self.topics),
            "untracked": self.untracked,
        }

    def _stats(self) -> bytes:
        broker = self.broker
        if broker is None:
            return b""
        return event("stats", stats_sample(broker))

    def history(self, topic: str) -> dict[str, Any]:
        """The last values of ``topic`` the table holds, newest first."""
        entry = self.topics.get(topic)
        items = [held_json(h) for h in reversed(entry.history)] if entry is not None else []
        return {
            "topic": topic,
            "tracking": self.active,
            "count": entry.count if entry is not None else 0,
            "items": items,
        }


def stats_sample(broker: Broker) -> dict[str, Any]:
    """The broker's counters the overview charts (totals: the page computes the rates)."""
    stats = broker.stats
    tree = broker.tree
    return {
        "time": _now_ms(),
        "received": sum(stats.received_by_qos),
        "sent": sum(stats.sent_by_qos),
        "routed": stats.messages_received,
        # dropped: not delivered (queue full, expired, too large, refused...); a message no
        # one subscribes to is counted apart, as it is no sign of trouble
        "dropped": dropped_total(stats) - stats.no_subscribers,
        "no_subscribers": stats.no_subscribers,
        "connections": sum(1 for s in broker.sessions.values() if s.connection is not None),
        "sessions": len(broker.sessions),
        "subscriptions": tree.count,
        "retained": broker.retained.count,
    }


def _offer(queue: asyncio.Queue[bytes | None], chunk: bytes | None) -> bool:
    try:
        queue.put_nowait(chunk)
    except asyncio.QueueFull:
        return False
    return True


def _now_ms() -> int:
    return int(time.time() * 1000)
