"""The seam between the broker core and whatever routes messages beyond this process.

The core (:class:`~midge.broker.broker.Broker`) holds ``router: Router | None``. A single
process has None: publishing then costs one attribute check more than it did before the seam, and
nothing else. With ``--workers N`` each worker's broker holds a
:class:`~midge.cluster.workers.WorkerRouter`, which forwards messages to the other workers whose
subscribers want them and hands the ones they forward back to the core through
:meth:`Broker.publish_from_peer <midge.broker.broker.Broker.publish_from_peer>`.

:class:`LocalRouter` is the trivial implementation, for code that wants a Router object rather
than None: everything stays in this process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from midge.broker.broker import Broker
    from midge.broker.model import Message


class ClusterError(Exception):
    """A cluster node cannot join (Redis unreachable, its node id taken): the message says
    what to fix."""


class Router(Protocol):
    """What the broker core calls when routing may leave this process."""

    def bind(self, broker: Broker) -> None:
        """Called once, before any connection, with the broker this router serves."""

    def publish(self, message: Message) -> bool:
        """Route a message published here: locally (``broker.route``) and to every other node
        whose interest matches, once each. True if anyone, here or there, subscribes."""

    def interest_added(self, topic_filter: str) -> None:
        """A local subscription to ``topic_filter`` was added (called once per client and
        filter; the router keeps the count)."""

    def interest_removed(self, topic_filter: str) -> None:
        """A local subscription to ``topic_filter`` was removed."""

    def when_known(self, filters: list[str], done: Callable[[], None]) -> bool:
        """Whether every other node already routes messages matching ``filters`` (subscribed
        here) to this one. If not, return False and call ``done`` once they all do: the SUBACK
        waits for it, since after a SUBACK every matching message must be delivered."""

    def acks_wait(self) -> bool:
        """Whether a PUBACK/PUBREC sent now must wait (:meth:`after_stored`): a retained
        message published here is not yet stored on every other node."""

    def after_stored(self, done: Callable[[], None]) -> None:
        """Call ``done`` once every other node stores every retained message published here
        so far (at once if they all do): a retained message is visible everywhere before its
        PUBACK or PUBREC. Calls keep their order."""

    def claim(self, client_id: str, clean_start: bool, done: Callable[[], None]) -> None:
        """A CONNECT for ``client_id`` was accepted here: make every other node give the client
        id up (taking its connection over, MQTT-3.1.4-3 v5) and move its session here unless
        ``clean_start``, then call ``done`` (the connection answers CONNACK then)."""

    def connection_will(
        self, client_id: str, will: Message, username: str | None, expiry: int
    ) -> None:
        """A client connected here with ``will``, its session expiring ``expiry`` seconds after
        its connection ends: kept where another process of the broker (another worker, a
        cluster's Redis) publishes it if this one dies with the connection open."""

    def connection_ended(self, client_id: str) -> None:
        """That connection ended here (its will published or discarded), was taken over, or
        its session moved to another process."""


class AckGate(Protocol):
    """A router whose copies to other nodes are acknowledged (:attr:`Broker.ack_gate`)."""

    def can_guarantee(self, message: Message) -> bool:
        """Called before :meth:`Router.publish` of a QoS 1/2 message from a client: False if
        the message would go to other nodes that cannot be reached with the QoS guarantees now
        (the cluster's Redis is unavailable); the PUBLISH is then refused."""
        ...

    def wait_accepted(self, done: Callable[[], None]) -> bool:
        """Called right after :meth:`Router.publish` of a QoS 1/2 message from a client: True
        if every node it was sent to has accepted it already (or it went to none); otherwise
        False, and ``done`` is called once they all have (or are gone): the publisher's PUBACK
        or PUBREC waits for it."""
        ...


class LocalRouter:
    """Single-node routing: nothing leaves the process."""

    def __init__(self) -> None:
        self.broker: Broker | None = None

    def bind(self, broker: Broker) -> None:
        self.broker = broker

    def publish(self, message: Message) -> bool:
        assert self.broker is not None
        return self.broker.route(message)

    def interest_added(self, topic_filter: str) -> None:
        pass

    def interest_removed(self, topic_filter: str) -> None:
        pass

    def when_known(self, filters: list[str], done: Callable[[], None]) -> bool:
        return True

    def acks_wait(self) -> bool:
        return False

    def after_stored(self, done: Callable[[], None]) -> None:
        done()

    def claim(self, client_id: str, clean_start: bool, done: Callable[[], None]) -> None:
        done()

    def connection_will(
        self, client_id: str, will: Message, username: str | None, expiry: int
    ) -> None:
        pass

    def connection_ended(self, client_id: str) -> None:
        pass
