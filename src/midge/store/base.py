"""The storage interface the broker core calls.

The core holds the live state (sessions, subscriptions, queues, retained messages) in memory and
tells the store what changed, so that a durable store can record it and give it back at start-up.
The in-memory store (:mod:`midge.store.memory`) keeps nothing beyond the process; the SQLite store
(a later issue) implements the same methods, batching writes into group commits.

Nothing on the QoS 0 path calls the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from midge.broker.message import Message


class Store(Protocol):
    """What the broker reports to its store. Every method is cheap and never blocks."""

    def retained_changed(self, message: Message) -> None:
        """``message`` is now its topic's retained message (an empty payload: none is)."""

    def retained(self) -> list[Message]:
        """The retained messages to restore at start-up."""
        ...

    def close(self) -> None:
        """Flush and release resources at shutdown."""
