"""The web dashboard's tap on what is published: per topic, a count and the last values.

While a dashboard stream is open, :attr:`midge.broker.broker.Broker.tap` is a :class:`Tap` and
the broker adds each message published to it (a native call: this module is compiled with mypyc,
setup.py's HOT_MODULES, as the broker is); once a second :mod:`midge.observe.live` swaps in a
new one and folds the old one into its table.

Why not keep the messages themselves until the fold (a bounded deque, the first design): the
fold then walked every message in Python, and past 4,096 messages a second the counts were
estimates. Here the cost is one native call per message and the fold's work is per topic.

What a topic keeps between two folds: every value while it has had at most :data:`KEEP` in
this second, and its last :data:`KEEP` once a dashboard explores it (a ring, replaced in
place). Past :data:`KEEP` values in one second, a topic nobody explores keeps only its latest:
a ring releases the payload it replaces, stored :data:`KEEP` of the topic's values earlier, by
then out of the CPU's cache; with every busy topic on a ring, that release was the tap's
largest cost (perf: +1.1 % of the loaded broker's CPU in the list store alone, see
docs/operations.md).
"""

from __future__ import annotations

from typing import Final

from midge.broker.model import Message

#: The values kept per topic between two folds (the dashboard's history length).
KEEP: Final = 20
#: The retain flag in the flags of a value (the QoS is the two low bits).
RETAIN: Final = 4


class TapTopic:
    """One topic's messages since the last fold: how many, and its values (each payload with
    its QoS and retain flag): all of them up to :data:`KEEP`; past that, the last :data:`KEEP`
    if ``explored``, else the latest only."""

    __slots__ = ("count", "explored", "flags", "latest", "latest_flags", "next", "payloads")

    def __init__(self, explored: bool) -> None:
        self.count = 0
        self.explored = explored
        #: The first :data:`KEEP` values; explored, a ring: once full, ``next`` is where the
        #: oldest value is (and the next one goes).
        self.payloads: list[bytes] = []
        #: Each payload's QoS, plus :data:`RETAIN` when the message was retained.
        self.flags: list[int] = []
        self.next = 0
        #: Not explored, past :data:`KEEP` values: the latest.
        self.latest = b""
        self.latest_flags = 0

    def explore(self) -> None:
        """Keep the last :data:`KEEP` values from now on (a dashboard explores the topic)."""
        if self.explored:
            return
        self.explored = True
        if self.count > KEEP:
            self.payloads = [self.latest]
            self.flags = [self.latest_flags]
            self.next = 0

    def last(self) -> list[tuple[bytes, int, bool]]:
        """The values kept (payload, QoS, retain), oldest first."""
        if self.count > KEEP and not self.explored:
            f = self.latest_flags
            return [(self.latest, f & 3, f >= RETAIN)]
        i = self.next
        payloads = self.payloads[i:] + self.payloads[:i]
        flags = self.flags[i:] + self.flags[:i]
        return [(p, f & 3, f >= RETAIN) for p, f in zip(payloads, flags, strict=True)]


class Tap:
    """What was published since the last fold, per topic (at most ``limit`` topics; the
    messages of topics past that are only counted in :attr:`untracked`). ``explored``: the
    topics a dashboard explores (their last :data:`KEEP` values are kept)."""

    __slots__ = ("explored", "limit", "topics", "untracked")

    def __init__(self, limit: int, explored: set[str] | None = None) -> None:
        self.topics: dict[str, TapTopic] = {}
        self.limit = limit
        self.untracked = 0
        self.explored: set[str] = explored if explored is not None else set()

    def explore(self, topic: str) -> None:
        """A dashboard explores ``topic`` from now on."""
        self.explored.add(topic)
        entry = self.topics.get(topic)
        if entry is not None:
            entry.explore()

    def add(self, message: Message) -> None:
        topics = self.topics
        entry = topics.get(message.topic)
        if entry is None:
            if len(topics) >= self.limit:
                self.untracked += 1
                return
            entry = TapTopic(message.topic in self.explored)
            topics[message.topic] = entry
        entry.count += 1
        flags = message.qos + RETAIN if message.retain else message.qos
        if entry.count > KEEP and not entry.explored:
            # The common case of a busy topic: two stores, what they replace still in cache.
            entry.latest = message.payload
            entry.latest_flags = flags
            return
        payloads = entry.payloads
        if len(payloads) < KEEP:
            payloads.append(message.payload)
            entry.flags.append(flags)
        else:
            i = entry.next
            payloads[i] = message.payload
            entry.flags[i] = flags
            entry.next = i + 1 if i + 1 < KEEP else 0
