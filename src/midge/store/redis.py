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

Limits (docs/cluster.md): the whole snapshot is written on every change, so the cost of a write
grows with the session's queue; delayed wills are not kept here (they end with their node).
"""

from __future__ import annotations

import asyncio
import marshal
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from midge.broker.session import NEVER
from midge.store.base import StoreState

if TYPE_CHECKING:
    from midge.broker.broker import Broker
    from midge.broker.model import Delivery, Message, SubOptions
    from midge.cluster.redis_router import RedisRouter

#: Write (or delete, with no data) a session's snapshot unless a newer token owns the client id.
#: KEYS: session key, owner key; ARGV: token, data ("" : delete), TTL in ms (0: none).
FENCED_WRITE = """
local t = redis.call('HGET', KEYS[2], 'token')
if t and tonumber(t) > tonumber(ARGV[1]) then return 0 end
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


class RedisStore:
    """Persistent sessions as snapshots in Redis, written by the owning node."""

    durable = True

    def __init__(self, router: RedisRouter) -> None:
        self.router = router
        self.broker: Broker | None = None
        #: Client ids changed since the last flush -> deleted (True) or to write (False).
        self._dirty: dict[str, bool] = {}
        self._users: dict[str, str | None] = {}
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
            state = session.snapshot(self._users.get(client_id))
            ttl = 0
            if session.connection is None and session.expiry_interval != NEVER:
                ttl = max(1, session.expiry_interval) * 1000
            data = marshal.dumps(self.router.state_data(state))
            writer.send("EVAL", FENCED_WRITE, 2, key, owner, token, data, ttl)
        if not dirty and not callbacks:
            return
        self._writing += 1
        writer.send("PING", then=lambda _: self._written(callbacks))

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

    def session_detached(self, client_id: str, expiry_interval: int, at: float) -> None:
        self._touch(client_id)

    def session_deleted(self, client_id: str, messages: Iterable[Message]) -> None:
        self._dirty[client_id] = True
        self._users.pop(client_id, None)
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
        """Delayed wills stay on their node (not kept in Redis)."""

    def will_cleared(self, client_id: str) -> None:
        pass
