"""The storage interface the broker core calls.

The core holds the live state (sessions, subscriptions, queues, retained messages) in memory and
*reports* each change to its store, so that a durable store can record it and give it back at
start-up (:meth:`Store.load`). Reports are plain, cheap method calls that never block: a durable
store batches them and writes them in group commits. :meth:`Store.commit` is how the core waits
for durability without blocking: the callback runs once everything reported so far is durable, and
that is when a PUBACK (QoS 1) or PUBREC (QoS 2) goes back to the publisher.

What is reported, and what is not:

* Only *persistent* sessions (Session Expiry Interval > 0, or a v3 clean-session-0 session) and
  retained messages are stored. A clean session never touches the store, nor does online QoS 0.
* A message is stored once (:meth:`Store.delivery_added` stores it on its first reference, giving
  it ``Message.store_id``) and referenced by each session's queue or in-flight entry; the store
  counts the references and deletes the message with the last one.
* A session's queue is FIFO: entries are added at the tail (``pid`` 0) and leave from the head
  (:meth:`Store.delivery_sent` moves the head into flight with a packet id,
  :meth:`Store.delivery_removed` drops it). In-flight entries are named by packet id.

The in-memory store (:mod:`midge.store.memory`) has ``durable = False``: the core then skips the
reports altogether. The SQLite store (:mod:`midge.store.sqlite`) is the embedded default; a Redis
store (cluster issue) implements the same methods.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from midge.broker.model import SessionState

if TYPE_CHECKING:
    from midge.broker.model import Delivery, Message, SubOptions


class StoreError(Exception):
    """The store cannot be opened or used; the message names the file and what to do."""


class StoredWill:
    """A delayed will (MQTT-3.1.3-9 v5) that was pending: published at ``due_at`` (wall clock)."""

    __slots__ = ("client_id", "due_at", "message")

    def __init__(self, client_id: str, message: Message, due_at: float) -> None:
        self.client_id = client_id
        self.message = message
        self.due_at = due_at


class StoreState:
    """Everything :meth:`Store.load` restores at start-up."""

    __slots__ = ("retained", "sessions", "wills")

    def __init__(self) -> None:
        #: The persistent sessions, in the form a session's snapshot takes.
        self.sessions: list[SessionState] = []
        self.retained: list[Message] = []
        self.wills: list[StoredWill] = []


class Store(Protocol):
    """What the broker reports to its store. Every method is cheap and never blocks."""

    #: False: the store keeps nothing (memory); the core then reports nothing but retained changes.
    durable: bool

    @property
    def pending(self) -> bool:
        """Changes have been reported that are not known to be durable yet."""
        ...

    def load(self, now: float) -> StoreState:
        """The state to restore at start-up (before any client connects); what expired by
        ``now`` (wall-clock seconds, the broker's Scheduler.wall()) is purged, not restored."""
        ...

    def commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (on the broker's loop) once everything reported so far is durable;
        at once when nothing is pending."""

    def close(self) -> None:
        """Make everything reported durable and release resources (at shutdown)."""

    # -- sessions -------------------------------------------------------------------------------

    def session_saved(
        self, client_id: str, version: int, expiry_interval: int, username: str | None = None
    ) -> None:
        """A persistent session is connected (new, resumed, or its expiry changed), by a client
        authenticated as ``username``."""

    def session_detached(self, client_id: str, expiry_interval: int, at: float) -> None:
        """Its connection closed at wall-clock ``at``; it expires ``expiry_interval`` later."""

    def session_deleted(self, client_id: str, messages: Iterable[Message]) -> None:
        """The session ended; ``messages`` are those its queue and in-flight entries referenced."""

    def subscription_added(self, client_id: str, topic_filter: str, options: SubOptions) -> None:
        """Added or replaced."""

    def subscription_removed(self, client_id: str, topic_filter: str) -> None: ...

    # -- outgoing QoS 1/2 (and queued) deliveries -----------------------------------------------

    def delivery_added(self, client_id: str, delivery: Delivery, pid: int) -> None:
        """Queued at the tail (``pid`` 0) or sent at once with packet id ``pid``."""

    def delivery_sent(self, client_id: str, pid: int) -> None:
        """The head of the queue was sent with packet id ``pid``."""

    def delivery_removed(self, client_id: str, message: Message) -> None:
        """The head of the queue (``message``) left it unsent (expired, QoS 0, too large)."""

    def deliveries_expired(self, client_id: str, messages: list[Message]) -> None:
        """These messages expired and left the session's queue, wherever they were in it."""

    def delivery_released(self, client_id: str, pid: int) -> None:
        """PUBREC received for ``pid``: PUBREL is what is re-sent from now on."""

    def delivery_done(self, client_id: str, pid: int, message: Message) -> None:
        """The in-flight ``pid`` is complete (PUBACK, PUBCOMP) or abandoned."""

    # -- incoming QoS 2 --------------------------------------------------------------------------

    def inbound_added(self, client_id: str, pid: int) -> None:
        """A QoS 2 PUBLISH was received; its PUBREL has not come yet (MQTT-4.3.3-9 3.1.1)."""

    def inbound_removed(self, client_id: str, pid: int) -> None: ...

    # -- retained messages and delayed wills ------------------------------------------------------

    def retained_changed(self, message: Message) -> None:
        """``message`` is now its topic's retained message (an empty payload: none is)."""

    def will_saved(self, client_id: str, message: Message, due_at: float) -> None:
        """A delayed will is pending until wall-clock ``due_at``."""

    def will_cleared(self, client_id: str) -> None:
        """The pending will was published or cancelled."""
