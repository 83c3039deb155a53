"""The web dashboard's live view: server-sent events from the ``protocol http`` listener.

While at least one dashboard stream (``GET /api/stream``) is open, the broker's ``tap``
(:attr:`midge.broker.broker.Broker.tap`) is a :class:`~midge.broker.tap.Tap`
(compiled): every message published is counted under its topic and its values are kept (see
the tap for which). Once a second a timer swaps in a new tap and folds the old one into a table
of topics (count, rate, last value, the last :data:`HISTORY` values), samples the broker's
counters, and sends both to every open stream as one formatted chunk. The fold's work is per
topic, not per message. A stream that explores a topic (the page's topic explorer:
``/api/stream?explore=TOPIC``) also gets that topic's history each second it changed, so the
page needs no request of its own for it.

A topic's history holds every value of every second in which it had at most :data:`HISTORY`,
and every value of a second in which a stream explored it (the last :data:`HISTORY` of them);
of a busier second, with no stream exploring it, it holds the last value. Counts and rates are
exact, however busy the broker.

When the last stream closes, the tap goes back to None, the timer stops and the table is
dropped: with no dashboard open the broker pays one attribute check per publish and nothing
else.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from midge.broker.session import session_totals
from midge.broker.tap import KEEP, Tap
from midge.observe.metrics import dropped_total

if TYPE_CHECKING:
    from midge.broker.broker import Broker
    from midge.server import Server

#: Seconds between two updates.
TICK = 1.0
#: Values a topic's history keeps (the tap keeps as many per topic between two folds).
HISTORY = KEEP
#: Payload bytes kept per value (the history, the explorer's viewer).
PREVIEW = 4096
#: Payload bytes of the last value sent with each topic of an update (the tree's column).
SHORT = 256
#: Topics the table follows at most; messages of topics past that are only counted.
MAX_TOPICS = 10_000
#: Topics one update lists at most (the busiest first).
MAX_CHANGES = 2_000
#: Chunks a stream may fall behind by before it is closed (its page reconnects).
BACKLOG = 30

Held = tuple[int, int, bool, int, bytes]  # (time in ms, qos, retain, size, payload preview)


def _held(payload: bytes, qos: int, retain: bool, when: int) -> Held:
    preview = payload if len(payload) <= PREVIEW else payload[:PREVIEW]
    return (when, qos, retain, len(payload), preview)


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
        #: Each open stream's queue, and the topic it explores (None: none).
        self.streams: dict[asyncio.Queue[bytes | None], str | None] = {}
        self.topics: dict[str, TopicEntry] = {}
        #: Messages of topics past :data:`MAX_TOPICS`.
        self.untracked = 0
        self.tap = Tap(MAX_TOPICS)
        self.timer: asyncio.TimerHandle | None = None
        self.broker: Broker | None = None

    @property
    def active(self) -> bool:
        return bool(self.streams)

    # -- streams ---------------------------------------------------------------------------------

    def open(self, broker: Broker, explore: str | None = None) -> asyncio.Queue[bytes | None]:
        """A new stream (exploring ``explore``); the first one starts the tap, the table (seeded
        with the retained messages) and the timer."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=BACKLOG)
        if not self.streams:
            self.broker = broker
            self.tap = Tap(MAX_TOPICS)
            now = _now_ms()
            for pattern in ("#", "$SYS/#"):
                for message in broker.retained.match(pattern):
                    entry = self._entry(message.topic)
                    if entry is None:
                        break  # the table is full
                    entry.history.append(_held(message.payload, message.qos, message.retain, now))
            broker.tap = self.tap
            self.timer = asyncio.get_running_loop().call_later(TICK, self._tick)
        self.streams[queue] = explore
        if explore is not None:
            self.tap.explore(explore)
        return queue

    def close(self, queue: asyncio.Queue[bytes | None]) -> None:
        """A stream ended; the last one puts everything back as it was with no dashboard."""
        self.streams.pop(queue, None)
        if self.streams:
            return
        if self.broker is not None:
            self.broker.tap = None
        self.broker = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.tap = Tap(MAX_TOPICS)
        self.topics = {}
        self.untracked = 0

    def shutdown(self) -> None:
        """The listener stops: every stream ends now."""
        for queue in list(self.streams):
            _offer(queue, None)
            self.close(queue)

    def hello(self, explore: str | None = None) -> bytes:
        """A new stream's first chunk: the counters, every topic known, and the history of the
        topic it explores."""
        chunk = self._stats() + event("topics", self._topics(list(self.topics), full=True))
        if explore is not None:
            chunk += event("history", self.history(explore))
        return chunk

    # -- the table -------------------------------------------------------------------------------

    def _entry(self, topic: str) -> TopicEntry | None:
        entry = self.topics.get(topic)
        if entry is None:
            if len(self.topics) >= MAX_TOPICS:
                return None
            entry = self.topics[topic] = TopicEntry()
        return entry

    def absorb(self, tap: Tap, now: int) -> list[str]:
        """Fold one second's tap into the table; the topics that changed, busiest first."""
        for known in self.topics.values():
            known.rate = 0
        self.untracked += tap.untracked
        changed: list[tuple[int, str]] = []
        for topic, seen in tap.topics.items():
            entry = self._entry(topic)
            if entry is None:
                self.untracked += seen.count
                continue
            entry.count += seen.count
            entry.rate = seen.count
            entry.history.extend(_held(p, qos, retain, now) for p, qos, retain in seen.last())
            changed.append((-seen.count, topic))
        changed.sort()
        return [topic for _, topic in changed]

    def _tick(self) -> None:
        self.timer = None
        broker = self.broker
        if not self.streams or broker is None:
            return
        explored = self._explored()
        tap, self.tap = self.tap, Tap(MAX_TOPICS, set(explored))
        broker.tap = self.tap
        changed = self.absorb(tap, _now_ms())
        chunk = self._stats() + event("topics", self._topics(changed[:MAX_CHANGES]))
        # The explored topics that changed: their history, formatted once each.
        histories = {
            topic: event("history", self.history(topic))
            for topic in explored
            if topic in tap.topics
        }
        for queue, topic in list(self.streams.items()):
            more = histories.get(topic, b"") if topic is not None else b""
            if not _offer(queue, chunk + more):
                self.close(queue)  # too far behind: its page reconnects
        if self.streams:
            self.timer = asyncio.get_running_loop().call_later(TICK, self._tick)

    def _explored(self) -> set[str]:
        return {topic for topic in self.streams.values() if topic is not None}

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
        "connections": session_totals(broker.sessions).connected,
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
