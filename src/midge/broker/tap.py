"""The web dashboard's tap on what is published: per topic, a count and the last values.

While a dashboard stream is open, :attr:`midge.broker.broker.Broker.tap` is a :class:`Tap` and
the broker adds each message published to it (a native call: this module is compiled with mypyc,
setup.py's HOT_MODULES, as the broker is); once a second :mod:`midge.observe.live` swaps in a
new one and folds the old one into its table.

Why not keep the messages themselves until the fold (a bounded deque, the first design): the
fold then walked every message in Python, and past 4,096 messages a second the counts were
estimates. Here the cost is one native call per message and the fold's work is per topic; a
topic holds at most :data:`KEEP` payloads, replaced in place: a busy topic's are let go within a
few of its own messages, a quiet topic's are few.
"""

from __future__ import annotations

from typing import Final

from midge.broker.model import Message

#: The last values kept per topic between two folds (the dashboard's history length).
KEEP: Final = 20


class TapTopic:
    """One topic's messages since the last fold: how many, and the last :data:`KEEP` payloads
    (with each one's QoS and retain flag).

    The payload, not the message: a message held here keeps its topic string, the PUBLISH as
    received and its properties alive as well, and the broker's allocator then hands each new
    message memory that is no longer in the CPU's cache (measured: a few per cent of the
    broker's CPU at 20,000 messages a second with the messages held, see docs/operations.md)."""

    __slots__ = ("count", "flags", "next", "payloads")

    def __init__(self) -> None:
        self.count = 0
        #: A ring: once full, ``next`` is where the oldest value is (and the next one goes).
        self.payloads: list[bytes] = []
        #: Each payload's QoS, plus :data:`RETAIN` when the message was retained.
        self.flags: list[int] = []
        self.next = 0

    def last(self) -> list[tuple[bytes, int, bool]]:
        """The values kept (payload, QoS, retain), oldest first."""
        i = self.next
        payloads = self.payloads[i:] + self.payloads[:i]
        flags = self.flags[i:] + self.flags[:i]
        return [(p, f & 3, f >= RETAIN) for p, f in zip(payloads, flags, strict=True)]


#: The retain flag in :attr:`TapTopic.flags` (the QoS is the two low bits).
RETAIN: Final = 4


class Tap:
    """What was published since the last fold, per topic (at most ``limit`` topics; the
    messages of topics past that are only counted in :attr:`untracked`)."""

    __slots__ = ("limit", "topics", "untracked")

    def __init__(self, limit: int) -> None:
        self.topics: dict[str, TapTopic] = {}
        self.limit = limit
        self.untracked = 0

    def add(self, message: Message) -> None:
        topics = self.topics
        entry = topics.get(message.topic)
        if entry is None:
            if len(topics) >= self.limit:
                self.untracked += 1
                return
            entry = TapTopic()
            topics[message.topic] = entry
        entry.count += 1
        flags = message.qos + RETAIN if message.retain else message.qos
        payloads = entry.payloads
        if len(payloads) < KEEP:
            payloads.append(message.payload)
            entry.flags.append(flags)
        else:
            i = entry.next
            payloads[i] = message.payload
            entry.flags[i] = flags
            entry.next = i + 1 if i + 1 < KEEP else 0
