"""A cluster of midge nodes that meet in Redis: the :class:`RedisRouter` implementation of the
:class:`~midge.cluster.router.Router` seam (``midge broker --cluster redis://... --node-id NAME``).

Every node is a whole single-process broker. What they share lives in Redis (docs/cluster.md):

``{midge}:nodes`` (set) and ``{midge}:node:ID`` (a key with a TTL, the heartbeat)
    the live nodes. A node refreshes its key every :data:`HEARTBEAT` seconds; a node whose key
    has expired is removed by whichever node sees it first (:data:`_EXPIRE_NODE`, atomic), which
    tells the others (``DOWN``).
``{midge:ID}:routes`` (hash: filter -> 1)
    the filters node ID has local subscribers for (``$share/...`` included). Every change is
    also announced on ``midge:all`` (``SUB``/``UNSUB``), so each node keeps a replica of the
    whole route table in a :class:`TopicTree` whose "client ids" are node ids; a node (re)reads
    every hash whenever its subscription to the channels is (re)made (:meth:`_resync`).
``{midge}:retained`` (hash: topic -> message)
    the retained messages; every change is announced on ``midge:all`` (``RETAIN``) and applied
    to each node's own retained tree.
``{midge:ID}:q`` (stream, consumer group ``nodes``)
    QoS 1 and 2 messages for node ID. The node reads them with XREADGROUP, delivers them to its
    sessions, then XACKs them and tells the publishing node (``ACCEPTED``): the publisher's
    PUBACK/PUBREC waits for that from every node the message went to (:attr:`Broker.ack_gate`).
``midge:to:ID`` (channel)
    everything else addressed to node ID: QoS 0 messages (``MSG``), acknowledgements of route
    changes (``KNOWN``) and of stream entries (``ACCEPTED``), client id claims (``CLAIM`` /
    ``RELEASED``).
``midge:owner:{CLIENT_ID}`` (hash: node, token, prev)
    which node owns a client id, with a fencing token from one counter (``{midge}:tokens``,
    never reused): a claim takes it atomically unless a newer token holds it
    (:data:`_CLAIM_OWNER`); a node asked to give up a client id for an older token refuses.
    Deleted once the client id's session ended (:meth:`RedisRouter._sweep_owned`).
``{midge:ID}:clients`` (set), ``{midge}:dead`` (hash: node -> the node taking it over)
    the client ids node ID holds, and the dead nodes being taken over: the node that declares
    a node dead adopts its persistent sessions from Redis, then delivers to them what its
    stream still holds, each entry once (:meth:`RedisRouter._take_over`, docs/cluster.md).

A session moving between live nodes (a takeover: its client reconnects to node Y while the
session is on node X) leaves a *stand-in* on X (:meth:`Broker.release` with ``stand_in``):
an empty session with its subscriptions, which queues what still reaches X for it. Once Y's
routes for the moved subscriptions are known everywhere, Y adds a *fence* entry to X's stream
(every message a node routed to X alone is already in that stream before it); when X reads
the fence it sends what the stand-in queued to Y's stream (a *hand-over* entry) and ends the
stand-in; Y adds to the session what it did not get itself (told apart by the stream
entries' identity: origin node, incarnation, number; and a copy of what the released
snapshot reflects, by the marks RELEASED carries, is not delivered to it on Y), and only then
answers CONNACK
(:meth:`RedisRouter._hand_over`, :meth:`RedisRouter._on_rest`, docs/cluster.md).

Frames are :mod:`marshal`-encoded tuples of plain data (strings, bytes, numbers): Redis is part
of the cluster's trusted base, and every node runs the same midge.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import marshal
import math
import os
import socket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from midge.broker.model import Message, SubOptions, will_delay
from midge.broker.topictree import TopicTree
from midge.cluster.router import ClusterError
from midge.cluster.targets import peer_targets
from midge.cluster.workers import (
    message_from_data,
    message_to_data,
    state_from_data,
    state_to_data,
)
from midge.config.checks import SENTINEL_SCHEME, parse_sentinel_url

if TYPE_CHECKING:
    from midge.broker.broker import Broker
    from midge.broker.session import Session
    from midge.store.redis import RedisStore

log = logging.getLogger("midge.cluster")

#: Seconds between heartbeats; a node silent for NODE_TTL seconds is dead.
HEARTBEAT = 1.0
NODE_TTL = 3.0
#: How long a PUBACK/PUBREC waits for live nodes a message went to (then it goes, logged); a
#: node that dies is stopped being waited for as soon as it is declared dead (NODE_TTL).
ACK_TIMEOUT = 60.0
#: How long a SUBACK waits for the other nodes to acknowledge a new filter.
KNOWN_TIMEOUT = 5.0
#: How long a CONNECT waits for the node that held its client id: longer than a dead node
#: takes to be declared dead (NODE_TTL and a heartbeat), so that a client reconnecting at once
#: after its node died gets its session from the node that takes the dead one's sessions over.
CLAIM_TIMEOUT = 8.0
#: Seconds between attempts while Redis cannot be reached.
RETRY = 0.5
#: The consumer group of every node's stream (one consumer: the node).
GROUP = "nodes"
#: Stream entries read at once.
BATCH = 200
#: Stream entries remembered to deliver each once (see RedisRouter._on_entry).
SEEN = 100_000
#: How long a stand-in (a session moving away from this node) waits for the fence of the node
#: it moves to before it hands over what it has (longer than that node's wait for its routes,
#: KNOWN_TIMEOUT); the claimant waits a little longer for the hand-over.
STAND_IN_TIMEOUT = 10.0
HANDOVER_TIMEOUT = STAND_IN_TIMEOUT + 2.0

#: What a broken or refusing Redis raises (a Redis Cluster's own errors included).
ERRORS = (RedisError, RedisClusterException, OSError)

(
    MSG,
    SUB,
    UNSUB,
    UP,
    DOWN,
    RETAIN,
    KNOWN,
    ACCEPTED,
    CLAIM,
    RELEASED,
    RECOVERED,
    SYNCED,
    RECHECK,
) = range(13)

#: Keys carry a hash tag (``{...}``) so that a Redis Cluster keeps together what one script
#: touches: the node registry and the retained set in one slot, each node's routes and stream in
#: one, each client id's owner and session in one.
NODES = "{midge}:nodes"
ALL = "midge:all"
RETAINED = "{midge}:retained"
#: Dead nodes whose sessions and stream are being taken over: node -> the node doing it.
DEAD = "{midge}:dead"
#: The fencing tokens of every client id come from this one counter (never reused, even once
#: a client id's owner key is deleted).
TOKENS = "{midge}:tokens"

#: Options of a remote node's interest (only the filter matters).
_INTEREST = SubOptions()

#: Remove a node whose heartbeat key expired, once (1 for whichever node sees it first, which
#: then takes its sessions and stream over: recorded in DEAD until that is done).
#: KEYS: its key, NODES, DEAD; ARGV: the node, this node.
_EXPIRE_NODE = """
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('SREM', KEYS[2], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
  return 1
end
return 0
"""

#: The heartbeat's registration: -1 while this node (declared dead) is being taken over, else
#: whether it was added (1: it had been removed). KEYS: NODES, DEAD; ARGV: this node.
_JOIN = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return -1 end
return redis.call('SADD', KEYS[1], ARGV[1])
"""

#: Take over the take-over of a dead node whose first handler died. KEYS: DEAD; ARGV: the dead
#: node, its handler as read, this node.
_TAKE_DEAD = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"""

#: Take a client id with ``token`` (from TOKENS): unless a newer token holds it (then 0), this
#: node owns it; who held it before (node, token) is returned, and remembered as ``prev`` while
#: the claim runs (a dead previous owner's take-over takes the session from the claim).
#: KEYS: owner key; ARGV: this node, token.
_CLAIM_OWNER = """
local old = redis.call('HMGET', KEYS[1], 'node', 'token')
if old[2] and tonumber(old[2]) > tonumber(ARGV[2]) then return {0, old[1], old[2]} end
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'token', ARGV[2])
if old[1] and old[1] ~= ARGV[1] then redis.call('HSET', KEYS[1], 'prev', old[1]) end
return {tonumber(ARGV[2]), old[1], old[2]}
"""

#: A claim is complete: ``prev`` goes. KEYS: owner key; ARGV: this node.
_SETTLE_OWNER = """
if redis.call('HGET', KEYS[1], 'node') == ARGV[1] then redis.call('HDEL', KEYS[1], 'prev') end
return 0
"""

#: A dead node's client id, taken over with ``token`` if the dead node holds it (or a claim
#: from it is running), unless a newer token holds it. KEYS: owner key; ARGV: the dead node,
#: this node, token.
_TAKE_FROM = """
local o = redis.call('HMGET', KEYS[1], 'node', 'prev', 'token')
if o[3] and tonumber(o[3]) > tonumber(ARGV[3]) then return 0 end
if o[1] == ARGV[1] or o[2] == ARGV[1] then
  redis.call('HSET', KEYS[1], 'node', ARGV[2], 'token', ARGV[3])
  redis.call('HDEL', KEYS[1], 'prev')
  return 1
end
return 0
"""

#: A node's connection wills (midge.store.redis.wills_key), read and deleted at once, so that
#: only one node publishes them; each one's client id and serial is added to the node's
#: wills-taken hash (midge.store.redis.wills_taken_key), so that the node, if it was only cut
#: off, lets those connections go when it comes back. KEYS: the wills, the wills taken; ARGV:
#: how long the wills taken are kept (ms).
_TAKE_WILLS = """
local wills = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
for i = 1, #wills, 2 do
  redis.call('HSET', KEYS[2], wills[i], string.match(wills[i + 1], '^(%d+):') or '0')
end
if #wills > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[1]) end
return wills
"""

#: A node that registered again reads its wills taken and the wills it has in Redis.
#: KEYS: the wills taken, the wills.
_READ_WILLS = """
return {redis.call('HGETALL', KEYS[1]), redis.call('HKEYS', KEYS[2])}
"""

#: A node has acted on the wills taken that it read (_READ_WILLS): each goes, unless a later
#: take-over of this node changed it since (its own record stays, for the next check).
#: KEYS: the wills taken; ARGV: client id, serial, client id, serial, ...
_FORGET_TAKEN = """
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 0
"""

#: How long the wills taken are kept for a node that does not come back (ms).
WILLS_TAKEN_TTL = 24 * 3600 * 1000

#: The client id is no longer used here (its session ended): its owner key goes, unless
#: another token holds it now. KEYS: owner key; ARGV: token.
_DROP_OWNER = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

#: Registered again: this node's client id, unless another token holds it (0) or it is
#: nobody's (written again: Redis lost it). KEYS: owner key; ARGV: this node, token.
_REASSERT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'node', ARGV[1], 'token', ARGV[2])
  return 1
end
local o = redis.call('HMGET', KEYS[1], 'node', 'token')
if o[1] == ARGV[1] and o[2] == ARGV[2] then return 1 end
return 0
"""

#: The token counter is at least ARGV[1] (Redis lost it). KEYS: TOKENS.
_BUMP = """
local t = tonumber(redis.call('GET', KEYS[1]) or '0')
if t < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 0
"""

#: Whether a node not live is about to be (still registered) or being taken over.
#: KEYS: NODES, DEAD; ARGV: the node.
_DYING = """
return redis.call('SISMEMBER', KEYS[1], ARGV[1]) + redis.call('HEXISTS', KEYS[2], ARGV[1])
"""


def node_key(node: str) -> str:
    return f"{{midge}}:node:{node}"


def routes_key(node: str) -> str:
    return f"{{midge:{node}}}:routes"


def stream_key(node: str) -> str:
    return f"{{midge:{node}}}:q"


def clients_key(node: str) -> str:
    return f"{{midge:{node}}}:clients"


def channel(node: str) -> str:
    return f"midge:to:{node}"


def owner_key(client_id: str) -> str:
    return f"midge:owner:{{{client_id}}}"


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry_id(value: str) -> tuple[int, int]:
    """A stream entry id ("MS-SEQ") in its order."""
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


class _AckWait:
    """A QoS 1/2 message sent to other nodes: its PUBACK/PUBREC waits until each accepted it."""

    __slots__ = ("done", "entries", "handle", "waiting")

    def __init__(self, waiting: set[str]) -> None:
        #: The nodes that have not accepted it yet ("" : the retained write to Redis).
        self.waiting = waiting
        #: Its entry in each node's stream, once written (:meth:`RedisRouter._recheck_accepted`).
        self.entries: dict[str, str] = {}
        self.done: Callable[[], None] | None = None
        self.handle: asyncio.TimerHandle | None = None

    def written(self, node: str, entry_id: Any) -> None:
        """XADD's answer: its entry in ``node``'s stream."""
        self.entries[node] = _str(entry_id)

    def settle(self, node: str) -> bool:
        """``node`` accepted it (or is gone); True once none is left."""
        self.waiting.discard(node)
        if self.waiting:
            return False
        self.fire()
        return True

    def fire(self) -> None:
        done, self.done = self.done, None
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        if done is not None:
            done()


class _KnownWait:
    """A SUBACK (or a CONNACK with a moved session) waiting for route acknowledgements."""

    __slots__ = ("done", "handle", "need")

    def __init__(self, need: int, done: Callable[[], None]) -> None:
        self.need = need
        self.done: Callable[[], None] | None = done
        self.handle: asyncio.TimerHandle | None = None

    def fire(self) -> None:
        done, self.done = self.done, None
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        if done is not None:
            done()


class _StandIn:
    """What a session that moved to another node left here: its stand-in (an empty session
    with its subscriptions), which queues what still comes here for it until that node's
    fence, and the timer that bounds the wait."""

    __slots__ = ("handle", "start", "stub")

    def __init__(self, stub: Session, handle: asyncio.TimerHandle, start: int) -> None:
        self.stub = stub
        self.handle = handle
        #: The first message recorded for it (RedisRouter._record).
        self.start = start


#: A message's identity across the cluster: (origin node, its incarnation, its number).
Ident = tuple[str, str, int]


class _Incoming:
    """A session moved here from a live node that keeps a stand-in for it: what reached the
    session here directly since it was adopted (``direct``), so that the hand-over adds only
    the rest."""

    __slots__ = ("claim", "direct", "known", "marks", "rested", "session", "source", "start")

    def __init__(
        self, claim: _Claim, session: Session, source: str, start: int, marks: dict[Any, int]
    ) -> None:
        self.claim = claim
        self.session = session
        self.source = source
        #: (origin node, incarnation) -> the last number of that origin the old node had
        #: routed when it released the session: the session's snapshot reflects those, so a
        #: copy of them that reaches this node is not delivered to it again.
        self.marks = marks
        #: The first message recorded for it (RedisRouter._record).
        self.start = start
        self.direct: set[Ident] = set()
        #: Every live node routes here for the session's filters (the fence was sent).
        self.known = False
        #: The hand-over came.
        self.rested = False


class _Claim:
    __slots__ = (
        "clean_start",
        "client_id",
        "done",
        "filters",
        "handle",
        "incoming",
        "load",
        "reclaim",
        "sessions",
        "stale",
        "target",
        "token",
    )

    def __init__(self, client_id: str, clean_start: bool, done: Callable[[], None]) -> None:
        self.client_id = client_id
        self.clean_start = clean_start
        self.done = done
        self.token = 0
        #: The node asked to release the client id (None: none to ask).
        self.target: str | None = None
        self.handle: asyncio.TimerHandle | None = None
        self.sessions: list[Session] = []
        self.filters: list[str] = []
        #: A newer claim won meanwhile: the connection is taken over as soon as it attaches.
        self.stale = False
        #: The session is to be read from Redis (the node that held it is gone).
        self.load = False
        #: Taken again after the node asked died (its sessions were taken over elsewhere).
        self.reclaim = False
        #: The session moved here waits for its old node's hand-over (then CONNACK).
        self.incoming: _Incoming | None = None


def _let_go(broker: Broker, client_id: str) -> None:
    """Let ``client_id`` go here as a take-over by another node would (v5: DISCONNECT 0x8E, its
    will as the take-over rules say, Broker.release), and drop what its session held here."""
    released, _ = broker.release(client_id, False)
    if released is not None:
        released.clear()


class _Writer:
    """Commands to Redis in the order they are asked, pipelined once per loop turn; ``then``
    gets each result. While Redis cannot be reached the batch is retried (so a command may
    run twice if the connection broke after Redis executed it)."""

    def __init__(self, client: Any, on_error: Callable[[BaseException], None]) -> None:
        self.client = client
        self.on_error = on_error
        self.queue: list[tuple[tuple[Any, ...], Callable[[Any], None] | None]] = []
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()

    def send(self, *args: Any, then: Callable[[Any], None] | None = None) -> None:
        self.queue.append((args, then))
        self.idle.clear()
        self.wake.set()

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            batch, self.queue = self.queue, []
            if not batch:
                if not self.queue:
                    self.idle.set()
                continue
            while True:
                try:
                    pipe = self.client.pipeline(transaction=False)
                    for args, _ in batch:
                        pipe.execute_command(*args)
                    results = await pipe.execute(raise_on_error=False)
                    break
                except ERRORS as exc:
                    self.on_error(exc)
                    await asyncio.sleep(RETRY)
            for (args, then), result in zip(batch, results, strict=True):
                if isinstance(result, Exception):
                    log.error("redis %s failed: %s", args[0], result)
                elif then is not None:
                    try:
                        then(result)
                    except Exception:
                        log.exception("internal error after redis %s", args[0])
            if not self.queue:
                self.idle.set()
            else:
                self.wake.set()


class RedisRouter:
    """This node's view of the cluster: the other nodes' interest, and the Redis links."""

    def __init__(self, url: str, node_id: str | None = None) -> None:
        self.url = url
        self.me = node_id or default_node_id()
        self.broker: Broker | None = None
        #: The other live nodes.
        self.nodes: set[str] = set()
        #: The other nodes' interest: "client id" = node id.
        self.remote = TopicTree()
        self.remote_filters: dict[str, dict[str, None]] = {}
        #: Local subscriptions per filter (advertised on 0 -> 1, withdrawn on 1 -> 0).
        self.local_interest: dict[str, int] = {}
        #: The SUB announcements: the last number, the one that advertised each local filter,
        #: the last one each node acknowledged (KNOWN), and the SUBACKs waiting.
        self._seq = 0
        self._advertised: dict[str, int] = {}
        self._known: dict[str, int] = {}
        self._known_waits: list[_KnownWait] = []
        #: Round-robin position per shared group (name, filter), over the nodes serving it.
        self.turn: dict[tuple[str, str], int] = {}
        #: QoS 1/2 messages sent to other nodes, waiting for their ACCEPTED; the last one
        #: published (for :meth:`wait_accepted`).
        self.acks: dict[int, _AckWait] = {}
        self._next_ack = 0
        self._last: _AckWait | None = None
        #: This process's id among the node's lives (in each stream entry), and the entries
        #: delivered lately, by (origin node, its incarnation, its ack number): a stream entry
        #: seen twice is delivered once.
        self.incarnation = os.urandom(6).hex()
        self._seen: dict[tuple[str, str, int], None] = {}
        #: The last entry number routed here from each (origin node, incarnation): each origin
        #: numbers its entries in order and this node reads them in order, so a session
        #: released now reflects every entry of that origin up to it (sent with RELEASED).
        self._routed: dict[tuple[str, str], int] = {}
        #: Client id claims of this node in flight, by number and by client id; claims from
        #: other nodes waiting for ours to finish; the fencing token of each client id held here.
        self.claims: dict[int, _Claim] = {}
        self._claiming: dict[str, _Claim] = {}
        self._deferred: dict[str, list[tuple[Any, ...]]] = {}
        self._next_claim = 0
        self.owned: dict[str, int] = {}
        #: The last entry of this node's stream delivered here (the mark written with each
        #: session's snapshot: what it reflects).
        self.position = "0-0"
        self._position = (0, 0)
        #: Take-overs of dead nodes running here: dead node -> the client ids taken from it;
        #: client id -> its dead node; the marks of those sessions for the dead nodes' streams;
        #: the entries routed here (through our stream) meanwhile, and the entries of a dead
        #: node's stream delivered to its sessions (key -> client ids): each delivered once.
        self._recovering: dict[str, set[str]] = {}
        self._recovering_cids: dict[str, str] = {}
        self._foreign_marks: dict[str, dict[str, str]] = {}
        self._routed_during: dict[str, set[tuple[str, str, int]]] = {}
        self._absorbed: dict[tuple[str, str, int], set[str]] = {}
        #: Dead nodes announced as taken over (DOWN), with the node that took them.
        self._downs: dict[str, str] = {}
        #: Sessions moving between live nodes. Away from here: their stand-ins, by (claimant
        #: node, its claim number), and that key by client id. To here: the hand-overs awaited,
        #: by (old node, our claim number). While either is open (``_windows``), each message
        #: routed here is recorded by object (``_ids``: its identity or None; ``_keep`` holds
        #: them, so that ids stay unique, until no open window began before them; ``_dropped``
        #: counts those let go). ``_handed``: identities handed over to sessions here, not
        #: delivered to them again if they also come through our stream.
        self._stand_ins: dict[tuple[str, int], _StandIn] = {}
        self._stand_in_of: dict[str, tuple[str, int]] = {}
        self._incoming: dict[tuple[str, int], _Incoming] = {}
        self._windows = 0
        self._ids: dict[int, Ident | None] = {}
        self._keep: deque[Message] = deque()
        self._dropped = 0
        self._handed: dict[Ident, set[str]] = {}
        #: Set while this node is a registered member (its stream is read only then: a node
        #: declared dead must not read what its take-over delivers elsewhere).
        self.member = asyncio.Event()
        #: Whether Redis answers (False: degraded, logged once per outage), and since when
        #: (loop time; -inf: since this node started).
        self.healthy = False
        self._healthy_since = -math.inf
        self._synced = asyncio.Event()
        self._first_sync = True
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = False
        #: redis-py clients (``Redis``, or ``RedisCluster`` when the URL names a node of a Redis
        #: Cluster): commands, the channel subscription, the blocking stream reads.
        self.client: Any = None
        self._listen_client: Any = None
        #: This node registered again: its wills are checked (:meth:`_check_wills`) at the
        #: first heartbeat with no take-over of it running, and again while that fails.
        self._wills_unchecked = False
        self._stream_client: Any = None
        #: Whether the URL names a node of a Redis Cluster (found at start).
        self.redis_cluster = False
        self.writer: _Writer | None = None
        #: The store of persistent sessions in Redis (midge.store.redis), when sessions are
        #: kept (durability other than "none"): a claim reads the session there when the node
        #: that held it is gone.
        self.store: RedisStore | None = None
        #: Frames of other kinds addressed to this node, by kind (midge.cluster.cluster_view).
        self.handlers: dict[int, Callable[[Any], None]] = {}

    # The forms the store (midge.store.redis) writes, given here so that it imports nothing of
    # the cluster.
    owner_key = staticmethod(owner_key)
    state_data = staticmethod(state_to_data)
    message_data = staticmethod(message_to_data)

    def marks_for(self, client_id: str) -> dict[str, str]:
        """What a snapshot of ``client_id``'s session written now reflects: every entry of this
        node's stream up to :attr:`position`, and of dead nodes' streams taken over here."""
        marks = {self.me: self.position}
        foreign = self._foreign_marks.get(client_id)
        if foreign:
            marks.update(foreign)
        return marks

    # -- life -------------------------------------------------------------------------------------

    def bind(self, broker: Broker) -> None:
        self.broker = broker
        broker.ack_gate = self

    def _connect(self) -> Any:
        # No retries inside redis-py: a broken connection must reach our loops, which resync.
        if self.url.startswith(SENTINEL_SCHEME):
            sentinels, service, db, password = parse_sentinel_url(self.url)
            sentinel = Sentinel(sentinels, password=password, db=db, retry=Retry(NoBackoff(), 0))
            return sentinel.master_for(service)
        if self.redis_cluster:
            return aioredis.RedisCluster.from_url(self.url, retry=Retry(NoBackoff(), 0))
        return aioredis.Redis.from_url(self.url, retry=Retry(NoBackoff(), 0))

    async def _probe(self) -> None:
        """Whether the URL names a node of a Redis Cluster (then the clients are cluster
        clients, which follow the slots)."""
        if self.url.startswith(SENTINEL_SCHEME):
            return  # Sentinel: the master it names
        probe = aioredis.Redis.from_url(self.url, retry=Retry(NoBackoff(), 0))
        try:
            info = await probe.info("cluster")
            self.redis_cluster = bool(info.get("cluster_enabled"))
        finally:
            await probe.aclose()

    async def start(self) -> None:
        """Join: register this node (its id must not be live already), read the route table
        and the retained messages, and start the heartbeat, the listener and the stream reader.
        Raises :class:`ClusterError` if Redis cannot be reached or the node id is taken."""
        try:
            await self._probe()
        except ERRORS as exc:
            raise ClusterError(f"cannot join the cluster at {self.url}: {exc}") from None
        self.client = self._connect()
        self._listen_client = self._connect()
        self._stream_client = self._connect()
        client = self.client
        try:
            await client.ping()
            if not await client.set(node_key(self.me), "1", nx=True, px=int(NODE_TTL * 1000)):
                raise ClusterError(
                    f"node id {self.me!r} is taken by a live node ({node_key(self.me)} exists in "
                    f"{self.url}): give this node another --node-id (cluster_node_id), or wait "
                    f"{NODE_TTL:g} s if that node has just stopped"
                )
            pipe = client.pipeline(transaction=False)
            pipe.sadd(NODES, self.me)
            pipe.delete(routes_key(self.me))
            await pipe.execute()
            await self._create_group()
        except ERRORS as exc:
            raise ClusterError(f"cannot join the cluster at {self.url}: {exc}") from None
        self.healthy = True
        self.member.set()
        self.writer = _Writer(client, self._redis_failed)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.writer.run()),
            loop.create_task(self._listen()),
            loop.create_task(self._heartbeat()),
            loop.create_task(self._consume()),
        ]
        try:
            await asyncio.wait_for(self._synced.wait(), 10.0)
        except TimeoutError:
            raise ClusterError(f"could not read the cluster's state from {self.url}") from None
        from midge.store.redis import wills_taken_key

        try:
            # This node's id ran before and went down with clients connected (and no node took
            # it over yet): their wills are due.
            await self._publish_lost_wills(self.me)
            await client.delete(wills_taken_key(self.me))  # of no connection of this life
        except ERRORS as exc:
            raise ClusterError(f"cannot join the cluster at {self.url}: {exc}") from None
        self.writer.send("PUBLISH", ALL, marshal.dumps((UP, self.me)))
        log.info(
            "node %s joined the cluster at %s%s (%d other nodes)",
            self.me,
            self.url,
            " (a Redis Cluster)" if self.redis_cluster else "",
            len(self.nodes),
        )

    async def _create_group(self) -> None:
        assert self.client is not None
        try:
            await self.client.xgroup_create(stream_key(self.me), GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def stop(self) -> None:
        """Leave: flush what is being written, withdraw this node, close the links."""
        self._stopping = True
        for key in list(self._stand_ins):
            self._hand_over(key, "this node stops")
        writer = self.writer
        if writer is not None and self.healthy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(writer.idle.wait(), 2.0)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks = []
        client = self.client
        if client is not None and self.healthy:
            from midge.store.redis import wills_key, wills_taken_key

            with contextlib.suppress(*ERRORS, TimeoutError):
                pipe = client.pipeline(transaction=False)
                pipe.delete(node_key(self.me))
                pipe.delete(routes_key(self.me))
                # Every connection ended (Broker.shutdown).
                pipe.delete(wills_key(self.me), wills_taken_key(self.me))
                pipe.srem(NODES, self.me)
                pipe.execute_command("PUBLISH", ALL, marshal.dumps((DOWN, self.me, "", 0)))
                await asyncio.wait_for(pipe.execute(), 2.0)
        for c in (self.client, self._listen_client, self._stream_client):
            if c is not None:
                with contextlib.suppress(Exception):
                    await c.aclose()
        for wait in list(self.acks.values()):
            wait.fire()
        self.acks.clear()

    def _redis_failed(self, exc: BaseException) -> None:
        if self.healthy and not self._stopping:
            log.error("cluster: Redis at %s cannot be reached: %s", self.url, exc)
        self.healthy = False
        # The stream is read again once the heartbeat finds this node still a member (or
        # registered again after its take-over).
        self.member.clear()

    def _redis_back(self) -> None:
        if not self.healthy:
            log.warning("cluster: Redis at %s answers again", self.url)
            self._healthy_since = asyncio.get_running_loop().time()
        self.healthy = True

    # -- the channels ---------------------------------------------------------------------------

    async def _listen(self) -> None:
        """Subscribe to ``midge:all`` and this node's channel, read the whole state, then apply
        every frame; after a broken connection, the same again (nothing announced meanwhile is
        missed: the state is read after the subscription is made)."""
        assert self._listen_client is not None
        subscribed = False
        while not self._stopping:
            pubsub = self._listen_client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(ALL, channel(self.me))
                await self._resync()
                if subscribed:
                    await self._recheck_accepted()
                    # The RETAIN frames sent meanwhile were missed, not their messages (read
                    # just now): their publishers ask again (RECHECK), and are answered.
                    assert self.writer is not None
                    self.writer.send("PUBLISH", ALL, marshal.dumps((SYNCED, self.me)))
                subscribed = True
                self._redis_back()
                self._synced.set()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    try:
                        self._on_frame(marshal.loads(message["data"]))
                    except Exception:
                        log.exception("internal error handling a cluster frame")
            except ERRORS as exc:
                self._redis_failed(exc)
                await asyncio.sleep(RETRY)
            except Exception:
                log.exception("cluster: internal error reading the channels")
                await asyncio.sleep(RETRY)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _recheck_accepted(self) -> None:
        """Subscribed again after a broken connection: an ACCEPTED sent to this node while it
        was not subscribed is lost. A node that accepts a message removes it from its stream
        first (XACK, XDEL, then ACCEPTED, in that order), so a message still waited for whose
        entry is no longer in that node's stream was accepted (or the node's stream went with
        the node): it is settled. One still there is accepted from now on, heard."""
        client = self._listen_client
        assert client is not None
        for wid, wait in list(self.acks.items()):
            for node, eid in list(wait.entries.items()):
                if node in wait.waiting and not await client.xrange(stream_key(node), eid, eid):
                    self._settle(wid, node)
        for node in self.nodes:
            self._recheck_retained(node)

    def _recheck_retained(self, node: str) -> None:
        """Ask ``node`` again whether it has applied each retained message this node still
        waits for it to accept (its ACCEPTED, or the RETAIN frame, may have been lost while a
        channel's connection was being made again). ``node`` handles the RECHECK after the
        RETAIN (one writer here sends both, in order), or, if it missed the RETAIN, after
        reading the retained messages from Redis (the message was written there first): it
        answers at once either way."""
        who = f"r:{node}"
        for wid, wait in self.acks.items():
            if who in wait.waiting:
                self._send(node, (RECHECK, self.me, wid))

    async def _resync(self) -> None:
        """Read the live nodes, their routes and the retained messages; write ours again (Redis
        may have lost them)."""
        client = self._listen_client
        broker = self.broker
        assert client is not None and broker is not None
        if not self._first_sync and self.writer is not None:
            # What was written meanwhile (queued while Redis was unavailable) goes first.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.writer.idle.wait(), 5.0)
        members = [_str(m) for m in await client.smembers(NODES)]
        others = [m for m in members if m != self.me]
        pipe = client.pipeline(transaction=False)
        for node in others:
            pipe.hkeys(routes_key(node))
        pipe.hgetall(RETAINED)
        results = await pipe.execute()
        remote = TopicTree()
        remote_filters: dict[str, dict[str, None]] = {}
        for k, node in enumerate(others):
            # A member whose key expired is one until a heartbeat declares it dead (and its
            # take-over delivers what was sent to it): after an outage, its key may have
            # expired while it could not reach Redis, as this node could not, and it is
            # about to refresh it (see _heartbeat).
            filters = remote_filters[node] = {}
            for raw in results[k]:
                topic_filter = _str(raw)
                filters[topic_filter] = None
                remote.subscribe(node, topic_filter, _INTEREST)
        gone = self.nodes - set(remote_filters)
        self.remote = remote
        self.remote_filters = remote_filters
        self.nodes = set(remote_filters)
        for node in self.nodes:
            self._known.setdefault(node, self._seq)
        for node in gone:
            self._forget_node(node, None)
        retained: dict[str, Any] = results[-1]
        in_redis: set[str] = set()
        for data in retained.values():
            message = message_from_data(marshal.loads(data))
            in_redis.add(message.topic)
            broker.retained.set(message)
        if self._first_sync:
            self._first_sync = False
        else:
            # Reconcile after an outage: what this node retained that Redis no longer has
            # (Redis restarted empty) is written back.
            assert self.writer is not None
            for message in list(broker.retained.match("#")):
                if message.topic not in in_redis and message.payload:
                    self.writer.send(
                        "HSET", RETAINED, message.topic, marshal.dumps(message_to_data(message))
                    )
        # Our own routes, in case Redis lost them (the heartbeat re-registers the node).
        if self.local_interest:
            mapping: dict[str, str] = dict.fromkeys(self.local_interest, "1")
            await client.hset(routes_key(self.me), mapping=mapping)
        self._check_known()

    def _send(self, node: str, frame: tuple[Any, ...]) -> None:
        assert self.writer is not None
        self.writer.send("PUBLISH", channel(node), marshal.dumps(frame))

    def _on_frame(self, frame: Any) -> None:
        kind = frame[0]
        if kind == MSG:
            assert self.broker is not None
            groups = frame[2]
            self.broker.publish_from_peer(
                message_from_data(frame[1]), {(g[0], g[1]) for g in groups} if groups else None
            )
        elif kind == SUB:
            node = frame[1]
            if node == self.me:
                return
            self._node_up(node)
            self.remote.subscribe(node, frame[2], _INTEREST)
            self.remote_filters[node][frame[2]] = None
            self._send(node, (KNOWN, self.me, frame[3]))
        elif kind == UNSUB:
            node = frame[1]
            filters = self.remote_filters.get(node)
            if filters is not None and frame[2] in filters:
                del filters[frame[2]]
                self.remote.unsubscribe(node, frame[2])
        elif kind == KNOWN:
            node, seq = frame[1], frame[2]
            if seq > self._known.get(node, 0):
                self._known[node] = seq
                self._check_known()
        elif kind == ACCEPTED:
            self._settle(frame[2], frame[1])
        elif kind == RETAIN:
            node = frame[1]
            if node != self.me:
                assert self.broker is not None
                self.broker.retained.set(message_from_data(frame[2]))
                if frame[3]:
                    self._send(node, (ACCEPTED, f"r:{self.me}", frame[3]))
        elif kind == RECHECK:
            self._send(frame[1], (ACCEPTED, f"r:{self.me}", frame[2]))
        elif kind == SYNCED:
            if frame[1] != self.me:
                self._recheck_retained(frame[1])
        elif kind == UP:
            if frame[1] != self.me:
                self._node_up(frame[1])
        elif kind == DOWN:
            node, handler, seq = frame[1], frame[2], frame[3]
            if node != self.me:
                self._forget_node(node, handler)
            if seq and handler != self.me:
                self._send(handler, (KNOWN, self.me, seq))
        elif kind == RECOVERED:
            dead = frame[1]
            for wid, wait in list(self.acks.items()):
                if dead in wait.waiting and wait.settle(dead):
                    del self.acks[wid]
        elif kind == CLAIM:
            self._on_claim(*frame[1:])
        elif kind == RELEASED:
            self._on_released(*frame[1:])
        elif kind in self.handlers:
            self.handlers[kind](frame)

    # -- nodes ------------------------------------------------------------------------------------

    def _node_up(self, node: str) -> None:
        self._downs.pop(node, None)
        if node not in self.nodes:
            self.nodes.add(node)
            self.remote_filters.setdefault(node, {})
            # It reads our routes from Redis when it joins.
            self._known[node] = self._seq
            log.info("cluster: node %s is up", node)

    def _forget_node(self, node: str, handler: str | None) -> None:
        """``node`` stopped or died: forget its interest. ``handler`` None: that is all (it
        may be being taken over; its DOWN says more). ``""``: it stopped (or nobody takes it
        over): stop waiting for it, and the claims that asked it read their session from
        Redis. Otherwise ``handler`` took its sessions over: the messages sent to it are
        accepted by ``handler`` once delivered to them, and the claims that asked it ask again
        (their client id is ``handler``'s now)."""
        was = node in self.nodes
        self.nodes.discard(node)
        for key in [k for k in self._stand_ins if k[0] == node]:
            self._hand_over(key)  # (not sent: it is gone) ended
        for incoming in [i for i in self._incoming.values() if i.source == node]:
            if incoming.claim.incoming is incoming:
                self._finish(incoming.claim)
        for topic_filter in self.remote_filters.pop(node, {}):
            self.remote.unsubscribe(node, topic_filter)
        self._known.pop(node, None)
        if handler is not None:
            for wid, wait in list(self.acks.items()):
                wait.waiting.discard(f"r:{node}")
                if not handler and wait.settle(node):
                    del self.acks[wid]
            if handler:
                self._downs[node] = handler
                while len(self._downs) > 1000:
                    del self._downs[next(iter(self._downs))]
            for claim in list(self.claims.values()):
                if claim.target == node:
                    if handler:
                        self._reclaim(claim)
                    else:
                        claim.load = not claim.clean_start
                        self._finish(claim)
        self._check_known()
        if was:
            log.warning("cluster: node %s is gone", node)

    async def _heartbeat(self) -> None:
        """Refresh this node's key; remove the nodes whose key expired."""
        client = self.client
        assert client is not None
        while True:
            # While Redis does not answer, sooner: the node must refresh its key before it
            # expires (NODE_TTL) once Redis is back.
            await asyncio.sleep(HEARTBEAT if self.healthy else RETRY)
            try:
                pipe = client.pipeline(transaction=False)
                pipe.set(node_key(self.me), "1", px=int(NODE_TTL * 1000))
                pipe.eval(_JOIN, 2, NODES, DEAD, self.me)
                pipe.smembers(NODES)
                pipe.hgetall(DEAD)
                _, added, members, dead = await pipe.execute()
                if added:
                    # Removed meanwhile (Redis restarted, or we were silent too long: the
                    # others declared us dead and took our sessions over): the client ids
                    # that are another node's now are let go here.
                    self.member.clear()
                    await self._check_owned()
                    # Its connections' wills, once no take-over of it runs (not at -1: one
                    # may not have published them yet).
                    self._wills_unchecked = True
                if added == -1:
                    # Still being taken over: not a member until that is done.
                    self._redis_back()
                    continue
                if self._wills_unchecked:
                    await self._check_wills()
                if added:
                    log.warning("cluster: node %s registered again", self.me)
                    await self._create_group()
                    assert self.writer is not None
                    for seq_filter in self.local_interest:
                        self._seq += 1
                        self._advertised[seq_filter] = self._seq
                        self.writer.send("HSET", routes_key(self.me), seq_filter, "1")
                        self.writer.send(
                            "PUBLISH", ALL, marshal.dumps((SUB, self.me, seq_filter, self._seq))
                        )
                    self.writer.send("PUBLISH", ALL, marshal.dumps((UP, self.me)))
                self.member.set()
                others = [_str(m) for m in members if _str(m) != self.me]
                live = {self.me}
                # A node judges the others only once it has reached Redis for a whole expiry
                # itself: a key that expired while this node could not reach Redis may have
                # expired in the same outage (a failover, a stall, a fault in front of Redis),
                # its node alive and on its way back, as this one is. (Not healthy here: this
                # is the first heartbeat that got through.)
                judging = (
                    self.healthy
                    and asyncio.get_running_loop().time() - self._healthy_since >= NODE_TTL
                )
                if others:
                    pipe = client.pipeline(transaction=False)
                    for node in others:
                        pipe.exists(node_key(node))
                    alive = await pipe.execute()
                    for node, is_alive in zip(others, alive, strict=True):
                        if is_alive or not judging:
                            live.add(node)
                            continue
                        first: Any = await client.eval(
                            _EXPIRE_NODE, 3, node_key(node), NODES, DEAD, node, self.me
                        )
                        if first:
                            log.warning("cluster: node %s is dead: taking it over", node)
                            self._start_recovery(node)
                # Take-overs whose node died (or stopped) before finishing: taken over here.
                for raw_node, raw_handler in (dead or {}).items():
                    node, handler = _str(raw_node), _str(raw_handler)
                    if node in self._recovering or node == self.me:
                        continue
                    if handler == self.me or handler not in live:
                        taken: Any = await client.eval(_TAKE_DEAD, 1, DEAD, node, handler, self.me)
                        if taken:
                            self._start_recovery(node)
                self._sweep_owned()
                self._redis_back()
            except ERRORS as exc:
                self._redis_failed(exc)
            except Exception:
                # A bug of ours must cost one heartbeat, never the node's membership.
                log.exception("cluster: internal error in the heartbeat")

    # -- publishing -------------------------------------------------------------------------------

    def publish(self, message: Message) -> bool:
        """Route locally and send one copy to each node that has a matching subscriber, or that
        serves a shared group picked for this message; a retained message is written to Redis
        for every node. ``$SYS`` stays on its node (each node has its own)."""
        broker = self.broker
        assert broker is not None
        self._last = None
        topic = message.topic
        if topic.startswith("$SYS"):
            return broker.route(message)
        if not self.healthy and not message.qos and not message.retain:
            # Redis is unavailable: QoS 0 (at most once) stays on this node rather than
            # piling up for later. (QoS 1/2 ones bound elsewhere were refused: can_guarantee.)
            return broker.route(message)
        targets, interested, local_groups = peer_targets(
            broker.tree, self.me, self.remote, self.turn, topic
        )
        wait: _AckWait | None = None
        wid = 0
        if message.qos and (targets or message.retain):
            wait = _AckWait(set(targets))
            self._next_ack += 1
            wid = self._next_ack
            self.acks[wid] = wait
        if message.retain:
            self._share_retained(message, wait, wid)
        if targets:
            writer = self.writer
            assert writer is not None
            data = message_to_data(message)
            if message.qos == 0:
                for node, groups in targets.items():
                    writer.send(
                        "PUBLISH", channel(node), marshal.dumps((MSG, data, groups or None))
                    )
            else:
                assert wait is not None
                for node, groups in targets.items():
                    entry = marshal.dumps((self.me, wid, data, groups or None, self.incarnation))
                    writer.send(
                        "XADD",
                        stream_key(node),
                        "*",
                        "m",
                        entry,
                        then=functools.partial(wait.written, node),
                    )
        if wait is not None:
            if wait.waiting:
                self._last = wait
            else:
                del self.acks[wid]
        if self._windows:
            # A session moves: this message is told apart by its stream identity (what went
            # to other nodes carries it).
            ident = (self.me, self.incarnation, wid) if wid else None
            self._record(message, ident)
            if ident is not None:
                for incoming in self._incoming.values():
                    incoming.direct.add(ident)
        return broker.route(message, local_groups) or interested

    def _share_retained(self, message: Message, wait: _AckWait | None, wid: int) -> None:
        """Write the retained message (or its clear) to Redis and tell every node. With
        ``wait`` (QoS 1/2), the publisher's ack also waits for the write and for every live
        node to have applied it ("r:NODE"): after the PUBACK, a SUBSCRIBE on any node gets it."""
        writer = self.writer
        assert writer is not None
        data = message_to_data(message)
        then: Callable[[Any], None] | None = None
        if wait is not None:
            wait.waiting.add("")
            wait.waiting.update(f"r:{node}" for node in self.nodes)
            then = lambda _: self._settle(wid, "")  # noqa: E731
        if message.payload:
            writer.send("HSET", RETAINED, message.topic, marshal.dumps(data), then=then)
        else:
            writer.send("HDEL", RETAINED, message.topic, then=then)
        writer.send("PUBLISH", ALL, marshal.dumps((RETAIN, self.me, data, wid)))

    def connection_will(
        self, client_id: str, will: Message, username: str | None, expiry: int
    ) -> None:
        """A persistent session's snapshot holds its client's will; one that ends with its
        connection has none, so the will goes to the node's wills hash in Redis
        (midge.store.redis.RedisStore.connection_will_saved)."""
        if not expiry and self.store is not None:
            self.store.connection_will_saved(client_id, will, username)

    def connection_ended(self, client_id: str) -> None:
        if self.store is not None:
            self.store.connection_will_cleared(client_id)

    def clear_retained(self, topic: str) -> bool:
        """The admin API cleared ``topic``'s retained message on this node: clear it in Redis
        and on every other node too, as an empty retained PUBLISH would (without routing it).
        False before the node has joined (nothing to tell)."""
        if self.writer is None:
            return False
        self._share_retained(Message(topic, b"", 0, True), None, 0)
        return True

    def _settle(self, wid: int, who: str) -> None:
        wait = self.acks.get(wid)
        if wait is not None and wait.settle(who):
            del self.acks[wid]

    def can_guarantee(self, message: Message) -> bool:
        """The :class:`~midge.cluster.router.AckGate` check: while Redis is unavailable, a
        QoS 1/2 message that would leave this node (a matching remote route, or retained: the
        other nodes must have it before the PUBACK) cannot be guaranteed."""
        if self.healthy or message.topic.startswith("$SYS"):
            return True
        if message.retain:
            return False
        rsubs, rshared = self.remote.match(message.topic)
        return not rsubs and not rshared

    def wait_accepted(self, done: Callable[[], None]) -> bool:
        """The :class:`~midge.cluster.router.AckGate` of the message just published."""
        wait, self._last = self._last, None
        if wait is None or not wait.waiting:
            return True
        wait.done = done
        wait.handle = asyncio.get_running_loop().call_later(ACK_TIMEOUT, self._ack_timeout, wait)
        return False

    def _ack_timeout(self, wait: _AckWait) -> None:
        wait.handle = None
        if wait.done is not None:
            log.warning("cluster: nodes %s did not accept a message in time", sorted(wait.waiting))
            wait.fire()

    async def _consume(self) -> None:
        """Read this node's stream: first what was delivered before and not acknowledged (a
        restart), then new entries; each is delivered here, then acknowledged."""
        client = self._stream_client
        assert client is not None
        key = stream_key(self.me)
        start = "0"
        while True:
            if not self.member.is_set():
                await self.member.wait()
                start = "0"
            try:
                response: Any = await client.xreadgroup(
                    GROUP, self.me, {key: start}, count=BATCH, block=1000
                )
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    with contextlib.suppress(*ERRORS):
                        await self._create_group()
                else:
                    log.error("cluster: reading %s: %s", key, exc)
                await asyncio.sleep(RETRY)
                continue
            except ERRORS as exc:
                self._redis_failed(exc)
                await asyncio.sleep(RETRY)
                start = "0"
                continue
            except Exception:
                log.exception("cluster: internal error reading %s", key)
                await asyncio.sleep(RETRY)
                start = "0"
                continue
            entries: list[Any] = [e for _, batch in response or () for e in batch]
            if start != ">":
                # Our pending entries (delivered before a restart or a broken connection, not
                # acknowledged), in order from ``start``; then new ones.
                if not entries:
                    start = ">"
                    continue
                start = _str(entries[-1][0])
            for entry_id, fields in entries:
                if not fields:
                    continue  # acknowledged meanwhile (deleted)
                try:
                    self._on_entry(key, entry_id, fields)
                except Exception:
                    log.exception("internal error handling a cluster message")

    def _on_entry(self, key: str, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        broker = self.broker
        assert broker is not None
        raw = fields.get(b"m")
        if raw is None:
            self._on_control(key, entry_id, fields)
            return
        origin, wid, data, groups, incarnation = marshal.loads(raw)
        eid = _str(entry_id)
        position = _entry_id(eid)
        # An entry can come twice: XADD re-sent after a broken connection, or our own pending
        # entries read again after one (the XACK not written yet). Delivered once.
        seen = (origin, incarnation, wid)
        if seen not in self._seen:
            self._seen[seen] = None
            self._routed[(origin, incarnation)] = wid
            if len(self._seen) > SEEN:
                del self._seen[next(iter(self._seen))]
            for routed in self._routed_during.values():
                routed.add(seen)
            message = message_from_data(data)
            peer_groups = {(g[0], g[1]) for g in groups} if groups else None
            skip = self._absorbed.get(seen)
            if self._windows:
                self._record(message, seen)
                for incoming in self._incoming.values():
                    if not groups and wid <= incoming.marks.get((origin, incarnation), 0):
                        # Routed on the old node before it released the session: in its
                        # snapshot already.
                        cid = incoming.session.client_id
                        skip = skip | {cid} if skip else {cid}
                    else:
                        incoming.direct.add(seen)
            if self._handed:
                handed = self._handed.get(seen)
                if handed:
                    # Handed over to these sessions by the node they moved from already.
                    skip = skip | handed if skip else handed
            if skip:
                # Also sent to a dead node whose stream was delivered to the sessions taken
                # over from it: they have it already.
                self._route_only(
                    message,
                    peer_groups or set(),
                    {c: s for c, s in broker.sessions.items() if c not in skip},
                )
            else:
                broker.publish_from_peer(message, peer_groups)
        if position > self._position:
            self._position = position
            self.position = eid

        def accepted() -> None:
            assert self.writer is not None
            self.writer.send("XACK", key, GROUP, entry_id)
            self.writer.send("XDEL", key, entry_id)
            self._send(origin, (ACCEPTED, self.me, wid))

        store = broker.durable_store
        if store is not None and store.pending:
            store.commit(accepted)
        else:
            accepted()

    def _on_control(self, key: str, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        """A stream entry that is not a message: a fence (a session that moved away from
        here is routed to its new node by every node, and every message routed here alone is
        before this entry) or a hand-over (what a session moved here had queued on its old
        node meanwhile)."""
        broker = self.broker
        writer = self.writer
        assert broker is not None and writer is not None
        eid = _str(entry_id)
        position = _entry_id(eid)
        if position > self._position:
            self._position = position
            self.position = eid

        def accepted() -> None:
            writer.send("XACK", key, GROUP, entry_id)
            writer.send("XDEL", key, entry_id)

        fence = fields.get(b"f")
        if fence is not None:
            claimant, cid = marshal.loads(fence)
            self._hand_over((claimant, cid))
            accepted()
            return
        rest = fields.get(b"h")
        if rest is not None:
            old, cid, items = marshal.loads(rest)
            self._on_rest(old, cid, items)
        # Deleted once the session with what was handed over is in Redis.
        store = broker.durable_store
        if store is not None and store.pending:
            store.commit(accepted)
        else:
            accepted()

    def _route_only(
        self, message: Message, groups: set[tuple[str, str]], sessions: dict[str, Session]
    ) -> None:
        """Deliver ``message`` here to ``sessions`` only (the broker's routing, with its
        sessions narrowed for one call)."""
        broker = self.broker
        assert broker is not None
        saved = broker.sessions
        broker.sessions = sessions
        try:
            broker.route(message, groups)
        finally:
            broker.sessions = saved

    # -- taking a dead node over ------------------------------------------------------------------

    async def _publish_lost_wills(self, node: str) -> int:
        """Publish the wills of the clients that were connected to ``node`` when it died (or
        when this node, restarted with its id, went down) and whose session ended with their
        connection: those connections ended without a DISCONNECT (MQTT-3.1.2-8), and their
        sessions with them, so each will is published now, its delay not waited for
        (MQTT-3.1.3-9 v5: a will is due when its session ends). Read and deleted in one step:
        one node publishes them. Returns how many."""
        from midge.store.redis import decode_connection_will, wills_key, wills_taken_key

        client = self.client
        broker = self.broker
        assert client is not None and broker is not None
        flat = await client.eval(
            _TAKE_WILLS, 2, wills_key(node), wills_taken_key(node), WILLS_TAKEN_TTL
        )
        published = 0
        for k in range(0, len(flat or ()) - 1, 2):
            try:
                _, data, username = decode_connection_will(flat[k + 1])
                message = message_from_data(data)
            except (ValueError, EOFError, TypeError):
                log.error("cluster: unreadable will of %s left by node %s", _str(flat[k]), node)
                continue
            broker.publish_will(message, username)
            published += 1
        if published:
            log.info(
                "cluster: %d will%s of node %s's lost connections published",
                published,
                "" if published == 1 else "s",
                node,
            )
        return published

    def _start_recovery(self, dead: str) -> None:
        if dead in self._recovering or self._stopping:
            return
        self._recovering[dead] = set()
        task = asyncio.get_running_loop().create_task(self._recover(dead))
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _recover(self, dead: str) -> None:
        """Take over a dead node: its persistent sessions (with their pending wills) come
        here, then, once every node has stopped sending to it, what its stream still holds is
        delivered to them (each entry once: an entry the session's snapshot already reflects,
        by its mark, is not delivered again), and each such message is accepted for it."""
        try:
            await self._take_over(dead)
        except ERRORS as exc:
            # Redis failed: the take-over stays recorded (DEAD); the heartbeat runs it again.
            log.error("cluster: taking node %s over failed: %s", dead, exc)
            self._end_recovery(dead)
        except Exception:
            log.exception("cluster: internal error taking node %s over", dead)
            self._end_recovery(dead)

    async def _take_over(self, dead: str) -> None:
        broker = self.broker
        client = self.client
        writer = self.writer
        assert broker is not None and client is not None and writer is not None
        from midge.store.redis import decode_session, session_key

        cids = [_str(c) for c in await client.smembers(clients_key(dead))]
        tokens: dict[str, int] = {}
        if cids:
            last = int(await client.incrby(TOKENS, len(cids)))
            first = last - len(cids) + 1
            pipe = client.pipeline(transaction=False)
            for k, cid in enumerate(cids):
                pipe.eval(_TAKE_FROM, 1, owner_key(cid), dead, self.me, first + k)
            for k, (cid, took) in enumerate(zip(cids, await pipe.execute(), strict=True)):
                if took:
                    tokens[cid] = first + k
                    # Claims from other nodes wait until its stream is delivered.
                    self._recovering_cids[cid] = dead
        raws: list[Any] = []
        if tokens:
            pipe = client.pipeline(transaction=False)
            for cid in tokens:
                pipe.get(session_key(cid))
            raws = await pipe.execute()
        taken = self._recovering[dead]
        taken.update(tokens)
        adopted: list[str] = []
        now = broker.scheduler.wall()
        # Our own publishes go to its sessions here from now on, no longer to its stream.
        self._forget_node(dead, None)
        for (cid, token), raw in zip(tokens.items(), raws, strict=True):
            if raw is None:
                # No persistent session (a clean one ended with its node): the client id is
                # free.
                writer.send("EVAL", _DROP_OWNER, 1, owner_key(cid), token)
                continue
            if cid in broker.sessions:
                continue  # its client connected here meanwhile
            state_data, marks, will = decode_session(raw)
            self.owned[cid] = token
            writer.send("SADD", clients_key(self.me), cid)
            state = state_from_data(state_data)
            session = broker.new_session(state)
            marks.pop(self.me, None)
            self._foreign_marks[cid] = marks
            adopted.append(cid)
            broker.adopt(session)
            broker.adopted(session)
            if self.store is not None and session.store is not None:
                # Written with the user its client last authenticated as.
                self.store.session_saved(
                    cid, session.version, session.expiry_interval, state.username
                )
            if will is not None:
                message = message_from_data(will[0])
                due = will[1]
                if due is None:
                    # Its client was connected: the connection ended with the node.
                    due = now + will_delay(message, session.expiry_interval)
                broker.schedule_will(cid, message, due, will[2])
        log.info("cluster: %d sessions of node %s taken over", len(adopted), dead)
        await self._publish_lost_wills(dead)
        # Every node forgets it (its routes, and claims to it ask here); once each has, nothing
        # more is added to its stream (each node's writes are in order).
        self._routed_during[dead] = set()
        self._seq += 1
        seq = self._seq
        writer.send("DEL", routes_key(dead))
        writer.send("PUBLISH", ALL, marshal.dumps((DOWN, dead, self.me, seq)))
        loop = asyncio.get_running_loop()
        known = loop.create_future()

        def all_known() -> None:
            if not known.done():
                known.set_result(None)

        if not self._when_seq(seq, all_known):
            await known
        # Read through the writer: after our own writes to its stream (in order).
        read = loop.create_future()

        def got(entries: Any) -> None:
            if not read.done():
                read.set_result(entries)

        writer.send("XRANGE", stream_key(dead), "-", "+", then=got)
        raw_entries: Any = await read
        routed = self._routed_during.pop(dead, set())
        sessions = {cid: broker.sessions[cid] for cid in adopted if cid in broker.sessions}
        origins: list[tuple[str, int]] = []
        count = 0
        for entry_id, fields in raw_entries or ():
            if not fields or b"m" not in fields:
                continue
            origin, wid, data, groups, incarnation = marshal.loads(fields[b"m"])
            origins.append((origin, wid))
            key = (origin, incarnation, wid)
            if key in routed or key in self._absorbed:
                continue  # routed here (through our stream) to these sessions already
            eid = _str(entry_id)
            position = _entry_id(eid)
            eligible: dict[str, Session] = {}
            for cid, session in sessions.items():
                marks = self._foreign_marks.setdefault(cid, {})
                mark = marks.get(dead)
                if mark is None or _entry_id(mark) < position:
                    eligible[cid] = session
                    marks[dead] = eid
            if eligible:
                count += 1
                self._absorbed[key] = set(eligible)
                while len(self._absorbed) > SEEN:
                    del self._absorbed[next(iter(self._absorbed))]
                self._route_only(
                    message_from_data(data),
                    {(g[0], g[1]) for g in groups} if groups else set(),
                    eligible,
                )

        def done() -> None:
            for origin, wid in origins:
                if origin != self.me:
                    self._send(origin, (ACCEPTED, dead, wid))
                else:
                    self._settle(wid, dead)
            writer.send("DEL", stream_key(dead))
            writer.send("DEL", clients_key(dead))
            writer.send("HDEL", DEAD, dead)
            # The messages sent to it and not in its stream were accepted by it before it
            # died: their publishers stop waiting (after the ACCEPTED above, in order).
            writer.send("PUBLISH", ALL, marshal.dumps((RECOVERED, dead)))
            log.info(
                "cluster: node %s taken over: %d of its stream's %d messages delivered to its "
                "sessions",
                dead,
                count,
                len(origins),
            )
            self._end_recovery(dead)

        store = broker.durable_store
        if store is not None and store.pending:
            store.commit(done)
        else:
            done()

    def _end_recovery(self, dead: str) -> None:
        """The take-over of ``dead`` is over (or failed): the claims that waited for it run."""
        for cid in self._recovering.pop(dead, set()):
            if self._recovering_cids.get(cid) == dead:
                del self._recovering_cids[cid]
            marks = self._foreign_marks.get(cid)
            if marks is not None:
                marks.pop(dead, None)
                if not marks:
                    del self._foreign_marks[cid]
            self._run_deferred(cid)
        self._routed_during.pop(dead, None)

    def _when_seq(self, seq: int, done: Callable[[], None]) -> bool:
        """Like :meth:`when_known` for an announcement numbered ``seq``."""
        if not self.nodes or not self.healthy:
            return True
        if seq <= min((self._known.get(n, 0) for n in self.nodes), default=seq):
            return True
        wait = _KnownWait(seq, done)
        wait.handle = asyncio.get_running_loop().call_later(
            KNOWN_TIMEOUT, self._known_timeout, wait
        )
        self._known_waits.append(wait)
        return False

    def fenced(self, client_id: str) -> None:
        """A write of ``client_id``'s session was fenced off: a newer token holds it. While
        this node is a member, that is a claim whose CLAIM is on its way (the session goes
        with the RELEASED answer, from memory). Otherwise (Redis was out of reach: this node
        may have been declared dead and its sessions taken over) its client is let go here
        (taken over, 0x8E): what it was shown is in Redis (TurnWrites.gate), and it finds its
        session where it reconnects."""
        if self.member.is_set() or client_id in self._claiming or client_id not in self.owned:
            return
        broker = self.broker
        assert broker is not None
        del self.owned[client_id]
        self._foreign_marks.pop(client_id, None)
        if self.writer is not None:
            self.writer.send("SREM", clients_key(self.me), client_id)
        session = broker.sessions.get(client_id)
        if session is None:
            return
        conn = session.connection
        if conn is not None:
            transport: Any = conn.transport
            if getattr(transport, "gated", False):
                transport.out = None  # not written to Redis: never shown
        log.warning("cluster: %s is held by another node now: let go here", client_id)
        _let_go(broker, client_id)

    async def _check_wills(self) -> None:
        """Registered again (and no take-over of this node running): the connections whose
        will the node that took this one over published (in this node's wills taken, with
        the serial their will was written with) are let go here without their will (0x8E for
        v5), so that no client stays connected whose will the others have seen. A connection
        of the same client id made since (another serial) stays, as does one that connected
        while this node was cut off (its will was written when Redis came back). A will that
        Redis lost (restarted, or failed over before it was replicated) is written again."""
        from midge.store.redis import wills_key, wills_taken_key

        client = self.client
        broker = self.broker
        store = self.store
        if client is None or broker is None or store is None or self.writer is None:
            self._wills_unchecked = False  # no store: no wills kept
            return
        taken_key = wills_taken_key(self.me)
        # Read through the writer: after the wills written while Redis was away (a will
        # written before this node was taken over may be written again then: the writer
        # repeats what it sent as the connection broke, so the serials tell).
        read: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def got(result: Any) -> None:
            if not read.done():
                read.set_result(result)

        self.writer.send("EVAL", _READ_WILLS, 2, taken_key, wills_key(self.me), then=got)
        try:
            taken_flat, held_raw = await asyncio.wait_for(read, KNOWN_TIMEOUT)
        except TimeoutError:
            # Redis failed the read (logged): checked again at the next heartbeat.
            self._wills_unchecked = True
            return
        self._wills_unchecked = False
        taken: dict[str, bytes] = {
            _str(taken_flat[k]): taken_flat[k + 1] for k in range(0, len(taken_flat) - 1, 2)
        }
        held = {_str(f) for f in held_raw}
        for cid, serial in store.connected_wills().items():
            session = broker.sessions.get(cid)
            conn = session.connection if session is not None else None
            if conn is None:
                continue
            if taken.get(cid) == b"%d" % serial:
                conn.take_will()  # published by the node that took this one over
                store.connection_will_cleared(cid)
                log.warning(
                    "cluster: %s's will was published while this node was away: let go", cid
                )
                _let_go(broker, cid)
            elif cid not in held and conn.will is not None:
                store.connection_will_saved(cid, conn.will, conn.username)
        if taken:
            # What was read, not the whole hash: another take-over of this node since the read
            # (cut off again at once) added records that the next check needs.
            read_back = [x for cid, serial in taken.items() for x in (cid, serial)]
            self.writer.send("EVAL", _FORGET_TAKEN, 1, taken_key, *read_back)

    async def _check_owned(self) -> None:
        """Registered again: after being declared dead, the client ids taken over elsewhere
        are let go; after Redis lost them (restarted empty), this node's are written again
        (and the token counter is moved past them)."""
        client = self.client
        assert client is not None
        cids = [c for c in self.owned if c not in self._claiming]
        if not cids:
            return
        pipe = client.pipeline(transaction=False)
        for cid in cids:
            pipe.eval(_REASSERT, 1, owner_key(cid), self.me, self.owned[cid])
        results = await pipe.execute()
        pipe = client.pipeline(transaction=False)
        pipe.eval(_BUMP, 1, TOKENS, max(self.owned[c] for c in cids))
        for cid, held in zip(cids, results, strict=True):
            if held:
                pipe.sadd(clients_key(self.me), cid)
        await pipe.execute()
        for cid, held in zip(cids, results, strict=True):
            if not held:
                self.fenced(cid)  # (not a member here)

    def _sweep_owned(self) -> None:
        """Client ids whose session ended here (a clean session closed, a session expired or
        deleted): their owner key goes (their tokens are never reused: they come from
        TOKENS), and this node forgets them."""
        broker = self.broker
        writer = self.writer
        if broker is None or writer is None:
            return
        sessions = broker.sessions
        gone = [c for c in self.owned if c not in sessions and c not in self._claiming]
        for cid in gone:
            token = self.owned.pop(cid)
            writer.send("EVAL", _DROP_OWNER, 1, owner_key(cid), token)
            writer.send("SREM", clients_key(self.me), cid)
            self._foreign_marks.pop(cid, None)

    # -- interest ---------------------------------------------------------------------------------

    def interest_added(self, topic_filter: str) -> None:
        count = self.local_interest.get(topic_filter, 0)
        self.local_interest[topic_filter] = count + 1
        if not count and self.writer is not None:
            self._seq += 1
            self._advertised[topic_filter] = self._seq
            self.writer.send("HSET", routes_key(self.me), topic_filter, "1")
            self.writer.send("PUBLISH", ALL, marshal.dumps((SUB, self.me, topic_filter, self._seq)))

    def interest_removed(self, topic_filter: str) -> None:
        count = self.local_interest.get(topic_filter, 0)
        if count <= 1:
            if self.local_interest.pop(topic_filter, None) is not None:
                self._advertised.pop(topic_filter, None)
                if self.writer is not None:
                    self.writer.send("HDEL", routes_key(self.me), topic_filter)
                    self.writer.send("PUBLISH", ALL, marshal.dumps((UNSUB, self.me, topic_filter)))
        else:
            self.local_interest[topic_filter] = count - 1

    def acks_wait(self) -> bool:
        """Never: a retained message's ack waits through :class:`AckGate` (``ack_gate``)."""
        return False

    def after_stored(self, done: Callable[[], None]) -> None:
        done()

    def when_known(self, filters: list[str], done: Callable[[], None]) -> bool:
        """True if every live node already routes ``filters`` here; otherwise False, and
        ``done`` is called once each has acknowledged the announcement (or is gone, or after
        KNOWN_TIMEOUT)."""
        if not self.nodes or not self.healthy:
            # Redis unavailable: the other nodes cannot be told now; they read this node's
            # routes again when it returns (_resync).
            return True
        need = max((self._advertised.get(f, 0) for f in filters), default=0)
        if need <= min((self._known.get(n, 0) for n in self.nodes), default=need):
            return True
        wait = _KnownWait(need, done)
        wait.handle = asyncio.get_running_loop().call_later(
            KNOWN_TIMEOUT, self._known_timeout, wait
        )
        self._known_waits.append(wait)
        return False

    def _known_timeout(self, wait: _KnownWait) -> None:
        wait.handle = None
        if wait.done is not None:
            log.warning("cluster: nodes did not acknowledge a subscription in time")
            wait.fire()
        self._check_known()

    def _check_known(self) -> None:
        if not self._known_waits:
            return
        least = min((self._known.get(n, 0) for n in self.nodes), default=None)
        keep: list[_KnownWait] = []
        for wait in self._known_waits:
            if wait.done is None:
                continue
            if least is None or wait.need <= least:
                wait.fire()
            else:
                keep.append(wait)
        self._known_waits = keep

    # -- client ids -------------------------------------------------------------------------------

    def claim(self, client_id: str, clean_start: bool, done: Callable[[], None]) -> None:
        """Take ``client_id`` with the next fencing token; the node that held it releases it
        (its connection taken over, its session sent here unless ``clean_start``)."""
        writer = self.writer
        assert writer is not None
        key = self._stand_in_of.get(client_id)
        if key is not None:
            # Back here while moving away (a stand-in here): what it queued goes to the node
            # the session moved to now, which then releases it to this claim.
            self._hand_over(key, "its client came back")
        if not self.healthy:
            # Redis unavailable: the client id is taken here without asking the other nodes
            # (the claim is recorded in Redis when it returns).
            def taken(result: Any) -> None:
                if int(result[0]):
                    self.owned[client_id] = int(result[0])

            def numbered(token: Any) -> None:
                writer.send(
                    "EVAL", _CLAIM_OWNER, 1, owner_key(client_id), self.me, int(token), then=taken
                )
                writer.send("SADD", clients_key(self.me), client_id)

            writer.send("INCR", TOKENS, then=numbered)
            done()
            return
        self._next_claim += 1
        cid = self._next_claim
        claim = _Claim(client_id, clean_start, done)
        self.claims[cid] = claim
        self._claiming[client_id] = claim
        self._take_token(cid, claim)

    def _take_token(self, cid: int, claim: _Claim) -> None:
        """The next token (TOKENS), then the client id with it (:data:`_CLAIM_OWNER`)."""
        writer = self.writer
        assert writer is not None
        if claim.handle is not None:
            claim.handle.cancel()
        claim.handle = asyncio.get_running_loop().call_later(
            CLAIM_TIMEOUT, self._claim_timeout, claim
        )

        def numbered(raw: Any) -> None:
            if self.claims.get(cid) is not claim:
                return
            token = int(raw)
            claim.token = token
            assert self.writer is not None
            self.writer.send(
                "EVAL",
                _CLAIM_OWNER,
                1,
                owner_key(claim.client_id),
                self.me,
                token,
                then=lambda result: self._claimed(cid, claim, result),
            )
            self.writer.send("SADD", clients_key(self.me), claim.client_id)

        writer.send("INCR", TOKENS, then=numbered)

    def _reclaim(self, claim: _Claim) -> None:
        """The node the claim asked died and another took its sessions over: take the client
        id again (a newer token), from that node."""
        for cid, c in self.claims.items():
            if c is claim:
                claim.target = None
                claim.reclaim = True
                self._take_token(cid, claim)
                return

    def _claimed(self, cid: int, claim: _Claim, result: Any) -> None:
        if self.claims.get(cid) is not claim:
            return
        token, old_node, _ = result
        if not int(token):
            # A newer token holds the client id already: this connection is taken over as
            # soon as it attaches.
            claim.stale = True
            self._finish(claim)
            return
        claim.token = int(token)
        self.owned[claim.client_id] = claim.token
        old = _str(old_node) if old_node is not None else None
        store = self.store
        if store is not None and claim.clean_start:
            # A clean start: whatever Redis kept of the client's session goes (fenced).
            from midge.store.redis import FENCED_WRITE, session_key

            assert self.writer is not None
            self.writer.send(
                "EVAL",
                FENCED_WRITE,
                2,
                session_key(claim.client_id),
                owner_key(claim.client_id),
                claim.token,
                "",
                0,
            )
        broker = self.broker
        assert broker is not None
        if old is None or old == self.me:
            # Nobody to ask. Held here before and not in memory (this node restarted, or the
            # claim asked again after a take-over that left it alone): it is in Redis.
            claim.load = (
                old is not None and not claim.clean_start and claim.client_id not in broker.sessions
            )
            self._finish(claim)
            return
        if old not in self.nodes:
            if self._downs.get(old) and not claim.reclaim:
                # Taken over: ask the node that took it (a newer token).
                self._reclaim(claim)
                return
            # Gone. If it is being (or about to be) taken over, its DOWN names who holds the
            # session; otherwise the session is in Redis.
            claim.target = old
            assert self.writer is not None
            self.writer.send(
                "EVAL", _DYING, 2, NODES, DEAD, old, then=lambda n: self._dying(claim, old, n)
            )
            return
        claim.target = old
        self._send(old, (CLAIM, self.me, cid, claim.client_id, claim.clean_start, claim.token))
        # Claims from others that came while our token was not known yet.
        self._run_deferred(claim.client_id)

    def _dying(self, claim: _Claim, old: str, dying: Any) -> None:
        if claim.target != old or claim.done is _nothing:
            return
        if not int(dying) or claim.reclaim:
            claim.load = not claim.clean_start
            self._finish(claim)
        elif self._downs.get(old):
            self._reclaim(claim)
        # else: wait for its DOWN, which names the node that took it over (or CLAIM_TIMEOUT)

    def _claim_timeout(self, claim: _Claim) -> None:
        claim.handle = None
        if claim.target is not None:
            claim.load = not claim.clean_start
            log.warning(
                "cluster: node %s did not release %s in time", claim.target, claim.client_id
            )
        self._finish(claim)

    def _on_claim(self, node: str, cid: int, client_id: str, clean_start: bool, token: int) -> None:
        """Another node took ``client_id`` with ``token``: give it up unless ours is newer."""
        if client_id in self._recovering_cids:
            # Taken over from a dead node: released once what its stream holds is delivered.
            self._deferred.setdefault(client_id, []).append(
                (node, cid, client_id, clean_start, token)
            )
            return
        ours = self._claiming.get(client_id)
        if ours is not None and (not ours.token or ours.token < token):
            # Our claim is in flight: the newer one is answered once ours is complete.
            self._deferred.setdefault(client_id, []).append(
                (node, cid, client_id, clean_start, token)
            )
            return
        held = self.owned.get(client_id, 0)
        if (ours is not None and ours.token > token) or held > token:
            self._send(node, (RELEASED, self.me, cid, None, True))  # fenced off: stale
            return
        assert self.broker is not None
        if client_id in self._stand_in_of:
            # Moving away already: the node it moves to answers for it.
            self._send(node, (RELEASED, self.me, cid, None, False))
            return
        self.owned.pop(client_id, None)
        self._foreign_marks.pop(client_id, None)
        if self.writer is not None:
            self.writer.send("SREM", clients_key(self.me), client_id)
        # A stand-in queues what still comes here for the session until the claimant's fence.
        session, stub = self.broker.release(client_id, clean_start, stand_in=True)
        data = state_to_data(session.snapshot()) if session is not None else None
        marks: list[tuple[str, str, int]] = []
        if stub is not None:
            marks = [(o, i, w) for (o, i), w in self._routed.items()]
            marks.append((self.me, self.incarnation, self._next_ack))
            key = (node, cid)
            handle = asyncio.get_running_loop().call_later(
                STAND_IN_TIMEOUT, self._stand_in_timeout, key
            )
            self._stand_ins[key] = _StandIn(stub, handle, self._open_window())
            self._stand_in_of[client_id] = key
        self._send(node, (RELEASED, self.me, cid, data, False, stub is not None, marks))

    def _on_released(
        self,
        node: str,
        cid: int,
        data: Any,
        stale: bool,
        handover: bool = False,
        marks: Any = (),
    ) -> None:
        claim = self.claims.get(cid)
        if claim is None:
            if data is not None:
                log.warning("session %s released after its claim timed out: dropped", data[0])
            return
        assert self.broker is not None
        session: Session | None = None
        if stale:
            claim.stale = True
        elif data is not None:
            session = self.broker.new_session(state_from_data(data))
            self.broker.adopt(session)
            claim.sessions.append(session)
            claim.filters.extend(session.subscriptions)
        claim.target = None
        if handover and session is not None:
            # ``node`` keeps a stand-in for the session: CONNACK waits for its hand-over.
            incoming = _Incoming(
                claim, session, node, self._open_window(), {(o, i): w for o, i, w in marks}
            )
            self._incoming[(node, cid)] = incoming
            claim.incoming = incoming
            if claim.handle is not None:
                claim.handle.cancel()
            claim.handle = asyncio.get_running_loop().call_later(
                HANDOVER_TIMEOUT, self._claim_timeout, claim
            )
            if self.when_known(claim.filters, lambda: self._fence(incoming, cid)):
                self._fence(incoming, cid)
            return
        if not claim.filters or self.when_known(claim.filters, lambda: self._finish(claim)):
            self._finish(claim)

    # -- a session moving between live nodes ------------------------------------------------------

    def _record(self, message: Message, ident: Ident | None) -> None:
        """While a session moves to or from here: which message this object is."""
        self._ids[id(message)] = ident
        self._keep.append(message)

    def _open_window(self) -> int:
        """A session starts moving to or from here: messages are recorded from now on; the
        number of the first one."""
        self._windows += 1
        return self._dropped + len(self._keep)

    def _window_closed(self) -> None:
        """A move ended (its window already left ``_stand_ins`` / ``_incoming``): the
        records no open window needs go."""
        self._windows -= 1
        keep = self._keep
        if not self._windows:
            self._ids.clear()
            self._dropped += len(keep)
            keep.clear()
            return
        oldest = min(
            [w.start for w in self._stand_ins.values()]
            + [w.start for w in self._incoming.values()],
            default=self._dropped + len(keep),
        )
        ids = self._ids
        while self._dropped < oldest and keep:
            ids.pop(id(keep.popleft()), None)
            self._dropped += 1

    def _fence(self, incoming: _Incoming, cid: int) -> None:
        """Every live node routes here for the moved session's filters (each acknowledged
        them: KNOWN). What a node routed to the old node alone was added to its stream before
        that node's KNOWN, so before the fence added now: when the old node reads the fence,
        its stand-in has all of it."""
        if incoming.known or incoming.claim.incoming is not incoming:
            return
        incoming.known = True
        if incoming.rested:
            self._finish(incoming.claim)
        elif incoming.source in self.nodes and self.writer is not None:
            self.writer.send(
                "XADD", stream_key(incoming.source), "*", "f", marshal.dumps((self.me, cid))
            )
        else:
            self._finish(incoming.claim)  # the old node is gone: nothing will come

    def _hand_over(self, key: tuple[str, int], why: str = "") -> None:
        """The session that moved to ``key``'s node is routed there by every node (its fence
        came), or ``why`` not: send that node what the stand-in queued (QoS 1 and 2: a QoS 0
        message has no identity to be told apart by, and could come twice), and end it."""
        stand_in = self._stand_ins.pop(key, None)
        if stand_in is None:
            return
        broker = self.broker
        assert broker is not None
        stand_in.handle.cancel()
        stub = stand_in.stub
        if self._stand_in_of.get(stub.client_id) == key:
            del self._stand_in_of[stub.client_id]
        ids = self._ids
        items = [
            (ids.get(id(d[0])), (message_to_data(d[0]), d[1], d[2], d[3]))
            for d in stub.queue or ()
            if d[1]
        ]
        if why:
            log.warning(
                "cluster: session %s handed over to node %s before its fence (%s): %d messages",
                stub.client_id,
                key[0],
                why,
                len(items),
            )
        if key[0] in self.nodes and self.writer is not None:
            self.writer.send(
                "XADD", stream_key(key[0]), "*", "h", marshal.dumps((self.me, key[1], items))
            )
        broker.end_stand_in(stub)
        self._window_closed()

    def _stand_in_timeout(self, key: tuple[str, int]) -> None:
        if key in self._stand_ins:
            self._hand_over(key, f"no fence in {STAND_IN_TIMEOUT:g} s")

    def _on_rest(self, old: str, cid: int, items: list[Any]) -> None:
        """What the stand-in on ``old`` queued for the session moved here with our claim
        ``cid``: added before what the session got here since it arrived, except the messages
        it got here too (by identity); the session's snapshot in Redis then has them."""
        incoming = self._incoming.pop((old, cid), None)
        if incoming is None:
            if items:
                log.warning(
                    "cluster: %d messages handed over by node %s after their claim ended: dropped",
                    len(items),
                    old,
                )
            return
        broker = self.broker
        assert broker is not None
        session = incoming.session
        client_id = session.client_id
        if items and broker.sessions.get(client_id) is session:
            direct = incoming.direct
            added: list[Any] = []
            idents: list[Ident] = []
            for raw, d in items:
                if raw is not None:
                    ident: Ident = (raw[0], raw[1], raw[2])
                    if ident in direct:
                        continue
                    idents.append(ident)
                added.append((message_from_data(d[0]), d[1], d[2], tuple(d[3])))
            if added and session.connection is None:
                ids = self._ids
                queue = list(session.queue or ())
                first = next((k for k, d in enumerate(queue) if id(d[0]) in ids), len(queue))
                session.queue = deque(queue[:first] + added + queue[first:])
                size = sum(len(d[0].payload) for d in added)
                session.queued_bytes += size
                broker.stats.held_bytes += size
                if session.store is not None:
                    for d in added:
                        session.store.delivery_added(client_id, d, 0)
            else:
                for d in added:
                    session.deliver(d[0], d[1], d[2], d[3])
            if added:
                log.info(
                    "cluster: session %s moved from node %s: %d messages handed over",
                    client_id,
                    old,
                    len(added),
                )
            for ident in idents:
                self._handed.setdefault(ident, set()).add(client_id)
            if idents:
                asyncio.get_running_loop().call_later(ACK_TIMEOUT, self._unhand, idents, client_id)
        incoming.rested = True
        self._window_closed()
        if incoming.known and incoming.claim.incoming is incoming:
            self._finish(incoming.claim)

    def _unhand(self, idents: list[Ident], client_id: str) -> None:
        """Long enough after a hand-over: a copy of its messages routed here too came."""
        handed = self._handed
        for ident in idents:
            cids = handed.get(ident)
            if cids is not None:
                cids.discard(client_id)
                if not cids:
                    del handed[ident]

    def _finish(self, claim: _Claim) -> None:
        """The claim is complete: the connection attaches (CONNACK); sessions moved here that
        no connection took start to expire; a fenced-off claim is taken over at once."""
        incoming, claim.incoming = claim.incoming, None
        if incoming is not None and not incoming.rested:
            # Given up (timed out, or the old node is gone): without its stand-in's messages.
            for key, value in list(self._incoming.items()):
                if value is incoming:
                    del self._incoming[key]
                    self._window_closed()
                    log.warning(
                        "cluster: session %s moved from node %s without its hand-over",
                        claim.client_id,
                        incoming.source,
                    )
        if claim.load:
            claim.load = False
            if self.store is not None and self.writer is not None:
                from midge.store.redis import session_key

                if claim.handle is not None:
                    claim.handle.cancel()
                    claim.handle = None
                claim.target = None
                self.writer.send(
                    "GET",
                    session_key(claim.client_id),
                    then=lambda data: self._loaded(claim, data),
                )
                return
        for cid, c in list(self.claims.items()):
            if c is claim:
                del self.claims[cid]
        if self._claiming.get(claim.client_id) is claim:
            del self._claiming[claim.client_id]
        if claim.handle is not None:
            claim.handle.cancel()
            claim.handle = None
        claim.target = None
        done, claim.done = claim.done, _nothing
        if not claim.stale and self.writer is not None:
            self.writer.send("EVAL", _SETTLE_OWNER, 1, owner_key(claim.client_id), self.me)
        done()
        broker = self.broker
        assert broker is not None
        for session in claim.sessions:
            broker.adopted(session)
        claim.sessions = []
        if claim.stale:
            # A newer claim holds the client id: this connection is taken over (0x8E).
            log.info("cluster: %s was claimed with a newer token elsewhere", claim.client_id)
            broker.release(claim.client_id, False)
            self.owned.pop(claim.client_id, None)
            if self.writer is not None:
                self.writer.send("SREM", clients_key(self.me), claim.client_id)
        self._run_deferred(claim.client_id)

    def _loaded(self, claim: _Claim, data: Any) -> None:
        """The session of a client whose node is gone, as Redis kept it (None: none)."""
        broker = self.broker
        assert broker is not None
        if data is not None and claim.done is not _nothing:
            from midge.store.redis import decode_session

            # Its pending will is not published: the client is back (MQTT-3.1.3-9 v5).
            session = broker.new_session(state_from_data(decode_session(data)[0]))
            broker.adopt(session)
            claim.sessions.append(session)
            claim.filters.extend(session.subscriptions)
            log.info("cluster: session %s read from Redis", claim.client_id)
        if not claim.filters or self.when_known(claim.filters, lambda: self._finish(claim)):
            self._finish(claim)

    def _run_deferred(self, client_id: str) -> None:
        waiting = self._deferred.pop(client_id, None)
        for args in waiting or ():
            self._on_claim(*args)


def _nothing() -> None:
    pass
