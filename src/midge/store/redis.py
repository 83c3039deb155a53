"""Persistent sessions in the cluster's Redis: the :class:`~midge.store.base.Store` of a cluster
node (:mod:`midge.cluster.redis_router`), so that a session outlives its node and resumes on
another one.

Each persistent session is one Redis key, ``midge:session:{CLIENT_ID}``, holding the session's
whole snapshot (:meth:`midge.broker.session.Session.snapshot`: subscriptions, queue, in-flight
messages, inbound QoS 2 ids) as a :mod:`marshal`-encoded tuple. The core reports changes as to
any store; the store marks the session dirty and, once per loop turn (a group commit), writes
the snapshot of every dirty session through the router's ordered writer. :meth:`commit` callbacks
(the publishers' PUBACK/PUBREC, a node's acceptance of a message for its sessions) run once
Redis has acknowledged those writes.

Writes are fenced: a node writes a session only while it holds the client id's newest token
(``midge:owner:{CLIENT_ID}``, see the router), checked in Redis by the same script that writes.
A detached session's key expires with the session (PX = its expiry interval), so sessions of a
node that died do not stay forever.

Next to the snapshot the key holds what a node taking the session over after its node died
needs (:func:`encode_session`): the session's *marks*, for each node's stream the last entry
whose delivery the snapshot reflects (so that entries left in a dead node's stream are
delivered once, docs/cluster.md), and its pending will: a delayed will with its wall-clock due
time, or the will of its connected client (due its delay after the node's death).

A client whose session ends with its connection (v3.1.1 clean session, v5 session expiry 0) has
no session here, but its will is kept while it is connected, in the node's ``{midge:ID}:wills``
hash (:func:`wills_key`): if the node dies, the node that takes it over publishes those wills,
as the node would have when the connections ended.

A write that a newer token fenced off tells the router (:meth:`RedisRouter.fenced`): the
session belongs to another node now, and this node lets its client go.

Limits (docs/cluster.md): the whole snapshot is written on every change, so the cost of a write
grows with the session's queue.
"""

from __future__ import annotations

import asyncio
import functools
import marshal
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from midge.broker.session import NEVER
from midge.store.base import StoreState
from midge.transport.writer import CoalescingTransport

if TYPE_CHECKING:
    from midge.broker.broker import Broker
    from midge.broker.model import Delivery, Message, SubOptions
    from midge.cluster.redis_router import RedisRouter

#: Write (or delete, with no data) a session's snapshot if the writer's token is the one that
#: owns the client id (0 otherwise: another node holds it now, or it is nobody's).
#: KEYS: session key, owner key; ARGV: token, data ("" : delete), TTL in ms (0: none).
FENCED_WRITE = """
local t = redis.call('HGET', KEYS[2], 'token')
if not t or tonumber(t) ~= tonumber(ARGV[1]) then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
elseif ARGV[3] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
"""


def session_key(client_id: str) -> str:
    return f"midge:session:{{{client_id}}}"


def wills_key(node: str) -> str:
    """The wills of the clients connected to ``node`` whose session ends with their connection
    (hash: client id -> :func:`encode_connection_will`); see
    :meth:`RedisStore.connection_will_saved`."""
    return f"{{midge:{node}}}:wills"


def wills_taken_key(node: str) -> str:
    """The wills of ``node``'s connections that a node taking it over published (hash: client id
    -> the serial of that connection's will): if ``node`` was only cut off, it lets those
    connections go when it comes back (RedisRouter._check_wills)."""
    return f"{{midge:{node}}}:wills-taken"


def encode_connection_will(serial: int, data: Any, username: str | None) -> bytes:
    """A connection's will in :func:`wills_key`: ``serial`` (which tells this connection from
    another one of the same client id), a colon, then the message data and the username."""
    return b"%d:%b" % (serial, marshal.dumps((data, username)))


def decode_connection_will(raw: bytes) -> tuple[int, Any, str | None]:
    """(serial, message data, username) of :func:`encode_connection_will`; ValueError if
    ``raw`` is not one."""
    head, sep, rest = raw.partition(b":")
    if not sep or not head.isdigit():
        raise ValueError("not a connection will")
    data, username = marshal.loads(rest)
    return int(head), data, username


#: A session's pending will as kept in Redis: (message data, wall-clock due time or None for a
#: connected client's will, due its delay after its node died; username).
WillData = tuple[Any, float | None, str | None]


def encode_session(state_data: Any, marks: dict[str, str], will: WillData | None) -> bytes:
    """The value of a session's key: its snapshot, its marks (node -> last stream entry id
    reflected), its pending will."""
    return marshal.dumps((state_data, marks, will))


def decode_session(raw: bytes) -> tuple[Any, dict[str, str], WillData | None]:
    state_data, marks, will = marshal.loads(raw)
    return state_data, marks, will


class RedisStore:
    """Persistent sessions as snapshots in Redis, written by the owning node."""

    durable = True

    def __init__(self, router: RedisRouter) -> None:
        self.router = router
        self.broker: Broker | None = None
        #: Client ids changed since the last flush -> deleted (True) or to write (False).
        self._dirty: dict[str, bool] = {}
        self._users: dict[str, str | None] = {}
        #: Pending delayed wills of sessions held here: client id -> (message, due at).
        self._wills: dict[str, tuple[Message, float]] = {}
        #: Client ids whose connection's will is in Redis (connection_will_saved) -> the
        #: serial it was written with; the next serial (from a random start: a restarted
        #: node's serials are not its last life's).
        self._connected_wills: dict[str, int] = {}
        self._will_serial = int.from_bytes(os.urandom(5), "big")
        self._callbacks: list[Callable[[], None]] = []
        self._scheduled = False
        #: Flushes sent to Redis and not acknowledged yet.
        self._writing = 0

    def bind(self, broker: Broker) -> None:
        self.broker = broker

    @property
    def pending(self) -> bool:
        return bool(self._dirty) or self._writing > 0

    def load(self, now: float) -> StoreState:
        """Nothing at start-up: a session is read from Redis when its client connects here
        (:meth:`RedisRouter.claim`); retained messages come through the router."""
        return StoreState()

    def commit(self, callback: Callable[[], None]) -> None:
        if not self.pending:
            callback()
            return
        self._callbacks.append(callback)
        self._schedule()

    def close(self) -> None:
        self.flush()

    def _touch(self, client_id: str) -> None:
        if client_id not in self._dirty:
            self._dirty[client_id] = False
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write every dirty session's snapshot (or delete it), then run the callbacks waiting
        for them once Redis has answered."""
        self._scheduled = False
        writer = self.router.writer
        broker = self.broker
        if writer is None or broker is None:
            return
        dirty, self._dirty = self._dirty, {}
        callbacks, self._callbacks = self._callbacks, []
        owned = self.router.owned
        for client_id, deleted in dirty.items():
            token = owned.get(client_id, 0)
            key = session_key(client_id)
            owner = self.router.owner_key(client_id)
            if deleted:
                writer.send("EVAL", FENCED_WRITE, 2, key, owner, token, "", 0)
                continue
            session = broker.sessions.get(client_id)
            if session is None or session.store is not self:
                continue  # moved to another node meanwhile: no longer ours to write
            username = self._users.get(client_id)
            state = session.snapshot(username)
            ttl = 0
            conn = session.connection
            if conn is None and session.expiry_interval != NEVER:
                ttl = max(1, session.expiry_interval) * 1000
            will: WillData | None = None
            delayed = self._wills.get(client_id)
            if delayed is not None:
                will = (self.router.message_data(delayed[0]), delayed[1], username)
            elif conn is not None and conn.will is not None:
                will = (self.router.message_data(conn.will), None, conn.username)
            data = encode_session(
                self.router.state_data(state), self.router.marks_for(client_id), will
            )
            writer.send(
                "EVAL",
                FENCED_WRITE,
                2,
                key,
                owner,
                token,
                data,
                ttl,
                then=functools.partial(self._fenced, client_id),
            )
        if not dirty and not callbacks:
            return
        self._writing += 1
        writer.send("PING", then=lambda _: self._written(callbacks))

    def _fenced(self, client_id: str, result: Any) -> None:
        if not result:
            self.router.fenced(client_id)

    def _written(self, callbacks: list[Callable[[], None]]) -> None:
        self._writing -= 1
        for callback in callbacks:
            callback()
        if self._callbacks and not self.pending:
            waiting, self._callbacks = self._callbacks, []
            for callback in waiting:
                callback()

    # -- reports ----------------------------------------------------------------------------------

    def session_saved(
        self, client_id: str, version: int, expiry_interval: int, username: str | None = None
    ) -> None:
        self._users[client_id] = username
        self._touch(client_id)
        broker = self.broker
        session = broker.sessions.get(client_id) if broker is not None else None
        conn = session.connection if session is not None else None
        if conn is not None:
            transport = conn.transport
            if isinstance(transport, CoalescingTransport):
                # Durable before visible (TurnWrites.gate).
                transport.gated = True

    def session_detached(self, client_id: str, expiry_interval: int, at: float) -> None:
        self._touch(client_id)

    def session_deleted(self, client_id: str, messages: Iterable[Message]) -> None:
        self._dirty[client_id] = True
        self._users.pop(client_id, None)
        self._wills.pop(client_id, None)
        self._schedule()

    def subscription_added(self, client_id: str, topic_filter: str, options: SubOptions) -> None:
        self._touch(client_id)

    def subscription_removed(self, client_id: str, topic_filter: str) -> None:
        self._touch(client_id)

    def delivery_added(self, client_id: str, delivery: Delivery, pid: int) -> None:
        self._touch(client_id)

    def delivery_sent(self, client_id: str, pid: int) -> None:
        self._touch(client_id)

    def delivery_removed(self, client_id: str, message: Message) -> None:
        self._touch(client_id)

    def deliveries_expired(self, client_id: str, messages: list[Message]) -> None:
        self._touch(client_id)

    def delivery_released(self, client_id: str, pid: int) -> None:
        self._touch(client_id)

    def delivery_done(self, client_id: str, pid: int, message: Message) -> None:
        self._touch(client_id)

    def inbound_added(self, client_id: str, pid: int) -> None:
        self._touch(client_id)

    def inbound_removed(self, client_id: str, pid: int) -> None:
        self._touch(client_id)

    def retained_changed(self, message: Message) -> None:
        """Retained messages are the router's (``{midge}:retained``)."""

    def will_saved(self, client_id: str, message: Message, due_at: float) -> None:
        """Kept with the session's snapshot: if this node dies, the node that takes its
        sessions over publishes it when due (unless the client came back first)."""
        self._wills[client_id] = (message, due_at)
        self._touch(client_id)

    def will_cleared(self, client_id: str) -> None:
        if self._wills.pop(client_id, None) is not None and client_id in self._users:
            self._touch(client_id)

    def connection_will_saved(self, client_id: str, message: Message, username: str | None) -> None:
        """Kept in the node's ``{midge:ID}:wills`` while the connection lasts: if this node
        dies, the node that takes it over publishes it (RedisRouter._take_over)."""
        writer = self.router.writer
        if writer is None:
            return
        self._will_serial += 1
        self._connected_wills[client_id] = self._will_serial
        data = encode_connection_will(
            self._will_serial, self.router.message_data(message), username
        )
        writer.send("HSET", wills_key(self.router.me), client_id, data)

    def connected_wills(self) -> dict[str, int]:
        """The client ids whose connection's will this node keeps in Redis, with the serial
        each was written with."""
        return dict(self._connected_wills)

    def connection_will_cleared(self, client_id: str) -> None:
        if self._connected_wills.pop(client_id, None) is None:
            return
        writer = self.router.writer
        if writer is not None:
            writer.send("HDEL", wills_key(self.router.me), client_id)
