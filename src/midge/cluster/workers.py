"""``midge broker --workers N``: N broker processes on the same ports, routing to each other.

Shape (after rumqttd's router-as-owner model, with one owner per process):

- The parent reserves any port 0 listener (so every worker binds the same port), creates a Unix
  socketpair to each worker (control) and one per pair of workers (the mesh), and forks the workers.
  Each worker runs a whole single-process broker (:class:`~midge.server.Server`) whose listeners
  use SO_REUSEPORT, so the kernel spreads new connections among them, and whose
  :class:`~midge.broker.broker.Broker` holds a :class:`WorkerRouter`.
- The parent prints the listener lines once every worker listens, restarts a worker that dies
  (passing each live worker its end of a new mesh link over a ``SOCK_SEQPACKET`` channel made for
  this, with ``SCM_RIGHTS``), and on SIGTERM/SIGINT stops them in two steps: every worker
  publishes its wills (while every client is still connected, so wills cross workers), then each
  disconnects its clients and exits.
- With persistence each worker has a database of its own (:func:`worker_db_name`); connection
  limits are counted in memory the workers share (:mod:`midge.cluster.limits`); worker 0's
  ``$SYS``, ``/metrics`` and admin API add the others' numbers (:mod:`midge.cluster.totals`,
  ``STATS``, ``ASK``). docs/workers.md tells the whole design and its limits.

Mesh protocol: frames of a 4-byte length and a :mod:`marshal`-encoded tuple (plain data only; the
peers are our own processes on socketpairs the parent made, never the network):

``(PUB, message, groups, seq)``
    a message published on the sender, to be delivered here only, never forwarded again; ``groups``
    are the shared subscription groups (name, filter) this worker serves for it. A retained
    message (sent to every worker) has a ``seq`` numbered with the SUB frames, and is answered
    with ``KNOWN`` once stored: the publisher's PUBACK/PUBREC waits for it. Others have 0.
``(SUB, filter, seq)`` / ``(UNSUB, filter)``
    the sender gained its first / lost its last local subscription to ``filter`` (``$share/...``
    included): each worker keeps the others' interest in a :class:`TopicTree` keyed by worker id.
    ``seq`` numbers the sender's SUB frames (1, 2, ...).
``(KNOWN, seq)``
    the answer to every SUB and retained PUB: the sender has applied the receiver's SUB frames
    and stored its retained messages up to ``seq`` (links are ordered), so from now on it
    forwards what they match. A SUBACK, and the ack of a retained PUBLISH, wait for it.
``(LOCK, id, client_id, clean_start, time)`` / ``(UNLOCK, client_id, id)``
    to the client id's home worker (:meth:`WorkerRouter.home`): a CONNECT for ``client_id`` on
    the sender wants its lock / has finished. The home sends the claim that holds the lock to
    every worker, one claim of a client id at a time.
``(CLAIM, id, client_id, clean_start, time, origin)`` / ``(RELEASED, id, session, handover)``
    a CONNECT for ``client_id`` on worker ``origin`` (sent by its home, or by ``origin`` itself):
    take the client over here and send its session to ``origin``. ``time`` is the origin's
    Lamport clock: without the lock (its home down), (time, origin) orders the claims of one
    client id, and a claim waits here while one of this worker with a smaller key is
    unfinished.
``(FENCE, id, old)`` / ``(FENCED, new, id)`` / ``(REST, id, deliveries)``
    a session moved (``handover``): the worker it left, ``old``, keeps a stand-in that queues
    what is published for it. The new worker sends FENCE to every worker after the SUB frames
    of the moved subscriptions; each answers FENCED to ``old`` (``old`` itself takes the FENCE
    as the new worker's). Once ``old`` has every live worker's, it sends the stand-in's queue
    (REST) to the new worker, which adds what it did not get itself (messages are told apart
    by (worker, number): ``PUB`` frames carry the publishing worker's number).
``(STORED, id, taken)``
    with persistence, the old worker keeps a moved session in its database until the new one
    has committed it (adoption and REST): then the new one sends STORED and the old one
    deletes its copy; if the new one dies first, the old one takes the session back.
``(RETAINED, messages)`` / ``(SYNCED,)``
    to a worker restarted after it died: the whole retained set (from one live worker), and,
    after the SUB frames of the sender's interest, that the sender's state has been sent.
``(HOLDS, client_ids)`` / ``(HELD, client_ids)``
    a restarted worker names the sessions it restored from its database (after advertising
    their subscriptions: the receiver forgets the interest it had before it died and did not
    advertise again); the answer names those the receiver holds (their clients came back
    while the worker was down and did not wait for it): the restarted worker drops its older
    copies.

While a worker is down (died, being restarted), the others keep its interest, hold the PUB
frames for it (and those it had not confirmed storing) and send them first when it is back;
claims wait for its answer (sent to it when it is back), so its restored sessions win.
``(STATS, snapshot)``
    to worker 0, every second: what the sender counts (midge.cluster.totals), which worker 0's
    ``$SYS`` and ``/metrics`` add to its own.
``(ASK, id, op, arg)`` / ``(ANSWER, id, result)``
    worker 0's admin API asks the others (list their sessions, show, disconnect or delete
    one, clear a retained message: :func:`midge.observe.http.answer`; reload, as SIGHUP).
``(MARK,)``
    during shutdown: everything the sender published before it (its wills) has been sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import logging
import marshal
import os
import signal
import socket
import sys
import zlib
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from midge import __version__
from midge.broker.model import Message, SessionState, SubOptions, will_delay
from midge.broker.session import Session
from midge.broker.topictree import TopicTree
from midge.cluster.targets import peer_targets
from midge.config import DEFAULT_DB_NAME, Config, ConfigError
from midge.gctune import GcTuner
from midge.transport.pacer import Pacer

if TYPE_CHECKING:
    from midge.broker.broker import Broker
    from midge.cluster.limits import SharedLimits

log = logging.getLogger("midge.workers")

PUB, SUB, UNSUB, CLAIM, RELEASED, MARK, KNOWN = range(7)
FENCE, FENCED, REST, RETAINED, SYNCED, HOLDS, HELD, STATS, ASK, ANSWER = range(7, 17)
LOCK, UNLOCK, STORED, WILL, UNWILL = range(17, 22)

#: How long a CONNECT waits for the other workers to release its client id.
CLAIM_TIMEOUT = 5.0
#: How long a SUBACK (or a CONNACK with a moved session) waits for the other workers to
#: acknowledge the interest (a stuck worker); then it goes without them.
KNOWN_TIMEOUT = 5.0
#: How long the parent waits for: all workers listening; their wills; their exit.
STARTUP_TIMEOUT = 30.0
DRAIN_TIMEOUT = 3.0
EXIT_TIMEOUT = 8.0

#: Messages (and their bytes) held for a worker that is down, until it is back (beyond
#: either: dropped, logged once).
HELD_LIMIT = 100_000
HELD_BYTES = 64 * 1024 * 1024

#: Options of a remote worker's interest (only the filter matters).
_INTEREST = SubOptions()


def encode_frame(obj: Any) -> bytes:
    body = marshal.dumps(obj)
    return len(body).to_bytes(4, "big") + body


class FrameProtocol(asyncio.Protocol):
    """Length-prefixed marshal frames on a socketpair end; writes coalesced per loop turn."""

    def __init__(
        self,
        on_frame: Callable[[Any], None],
        on_lost: Callable[[], None],
        pacer: Pacer | None = None,
    ) -> None:
        self.on_frame = on_frame
        self.on_lost = on_lost
        #: The worker's batch window (midge.transport.pacer): told of each turn that writes, and
        #: it writes out this link's frames before it rests.
        self.pacer = pacer
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.closed = False
        #: A mesh link's frames read before it joined its router (see _link); None after.
        self.early: list[Any] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.pacer is not None:
            self.pacer.watch(self.flush)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        size = len(buf)
        while size - pos >= 4:
            end = pos + 4 + int.from_bytes(buf[pos : pos + 4], "big")
            if end > size:
                break
            frame = marshal.loads(bytes(buf[pos + 4 : end]))
            pos = end
            try:
                self.on_frame(frame)
            except Exception:
                # A bug of ours must cost this one frame, never the mesh.
                log.exception("internal error handling a frame %r", frame[:1])
        if pos:
            del buf[:pos]

    def send(self, obj: Any) -> None:
        self.write(encode_frame(obj))

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)
            if self.pacer is not None:
                self.pacer.arm()

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self.transport is not None and not self.closed:
            out = self._out
            self._out = []
            self.transport.writelines(out)

    def close(self) -> None:
        self.flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.pacer is not None:
            self.pacer.unwatch(self.flush)
        self.on_lost()


# -- messages and sessions as plain data --------------------------------------------------------


def _props(props: dict[Any, Any]) -> dict[int, Any]:
    # Prop members are IntEnums, which marshal refuses: plain ints on the wire.
    return {int(k): v for k, v in props.items()} if props else {}


def message_to_data(m: Message) -> tuple[Any, ...]:
    return (
        m.topic,
        m.payload,
        m.qos,
        m.retain,
        _props(m.properties),
        m.expires_at,
        m.origin,
        m.raw,
        m.raw_v5,
        m.source,
    )


def message_from_data(d: Any) -> Message:
    m = Message(*d[:-1])
    source = d[-1]
    if source is not None:
        m.source = (source[0], source[1])  # check_retain_source: who published it
    return m


def state_to_data(state: SessionState) -> tuple[Any, ...]:
    """A session's snapshot (:meth:`midge.broker.session.Session.snapshot`) as plain data, for
    the worker the client moved to."""
    subs = [
        (f, o.qos, o.no_local, o.retain_as_published, o.retain_handling, o.subscription_id)
        for f, o in state.subscriptions.items()
    ]
    inflight = [
        (pid, message_to_data(d[0]), d[1], d[2], d[3], released)
        for pid, d, released in state.inflight
    ]
    queue = [(message_to_data(d[0]), d[1], d[2], d[3]) for d in state.queue]
    return (
        state.client_id,
        state.expiry_interval,
        state.next_pid,
        state.dropped,
        subs,
        inflight,
        queue,
        state.awaiting_rel,
        state.username,
        state.version,
    )


def state_from_data(d: Any) -> SessionState:
    client_id, expiry, next_pid, dropped, subs, inflight, queue, awaiting, username, version = d
    state = SessionState(client_id, version, expiry, None, username)
    state.next_pid = next_pid
    state.dropped = dropped
    for f, qos, nl, rap, rh, sid in subs:
        state.subscriptions[f] = SubOptions(qos, nl, rap, rh, sid)
    state.inflight = [
        (pid, (message_from_data(m), qos, retain, tuple(sids)), released)
        for pid, m, qos, retain, sids, released in inflight
    ]
    state.queue = [
        (message_from_data(m), qos, retain, tuple(sids)) for m, qos, retain, sids in queue
    ]
    state.awaiting_rel = list(awaiting)
    return state


# -- the router -----------------------------------------------------------------------------------


class _Claim:
    __slots__ = (
        "cid",
        "clean_start",
        "client_id",
        "done",
        "filters",
        "gated",
        "handle",
        "kept",
        "key",
        "replied",
        "sessions",
        "waiting",
        "windowed",
    )

    def __init__(
        self,
        cid: int,
        client_id: str,
        clean_start: bool,
        key: tuple[int, int],
        waiting: set[int],
        done: Callable[[], None],
        handle: Any,
    ) -> None:
        self.cid = cid
        self.client_id = client_id
        self.clean_start = clean_start
        #: (Lamport time, worker id): orders the claims of one client id on every worker.
        self.key = key
        self.waiting = waiting
        self.done = done
        self.handle = handle
        #: The sessions adopted for this claim, and their subscriptions: CONNACK waits until
        #: every other worker knows them.
        self.sessions: list[Session] = []
        self.filters: list[str] = []
        #: Waiting for a moved session's hand-over (REST): messages are being recorded.
        self.windowed = False
        #: Holds the client id's lock on its home worker (released when finished, UNLOCK).
        self.gated = False
        #: The workers that answered (RELEASED): a claim sent twice (forwarded by a home
        #: that died, then directly) is answered once.
        self.replied: set[int] = set()
        #: The workers that keep the session moved here in their database until told that
        #: it is recorded here (STORED).
        self.kept: list[int] = []


class _Moved:
    """A persistent session released to another worker, still in this worker's database
    until that worker has recorded it in its own (STORED): if that worker dies first, the
    session comes back here. ``extra``: what its stand-in queued (recorded here too)."""

    __slots__ = ("extra", "session")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.extra: list[Any] = []

    def messages(self) -> list[Message]:
        return self.session.stored_messages() + [d[0] for d in self.extra]


class _AckWait:
    """A PUBACK/PUBREC waiting until peers store messages: (peer, frame number) each."""

    __slots__ = ("done", "handle", "targets")

    def __init__(self, targets: list[tuple[int, int]], done: Callable[[], None]) -> None:
        self.targets = targets
        self.done = done
        self.handle: Any = None


class _StandIn:
    """The stand-in a moving session leaves on its old worker, and which workers confirmed
    that they route to the session's new worker (FENCE/FENCED)."""

    __slots__ = ("fenced", "handle", "stub")

    def __init__(self, stub: Session, handle: Any) -> None:
        self.stub = stub
        self.handle = handle
        self.fenced: set[int] = set()


class _Wait:
    """A SUBACK (or CONNACK) waiting until every live peer has acknowledged some SUB frame."""

    __slots__ = ("done", "handle")

    def __init__(self, done: Callable[[], None]) -> None:
        self.done: Callable[[], None] | None = done
        self.handle: Any = None

    def fire(self) -> None:
        done, self.done = self.done, None
        if done is not None:
            if self.handle is not None:
                self.handle.cancel()
            done()

    def timeout(self) -> None:
        if self.done is not None:
            self.handle = None
            log.warning("workers did not acknowledge a subscription or retained message in time")
            self.fire()


class WorkerRouter:
    """One worker's view of the others: their interest, and the mesh links to them."""

    def __init__(self, wid: int, workers: int = 0) -> None:
        self.wid = wid
        self.me = str(wid)
        #: How many workers the broker runs: a client id's home is one of them (:meth:`home`).
        self.workers = workers
        self.broker: Broker | None = None
        self.peers: dict[int, FrameProtocol] = {}
        #: The other workers' interest: "client id" = worker id (as a string).
        self.remote = TopicTree()
        self.remote_filters: dict[int, dict[str, None]] = {}
        #: Local subscriptions per filter (advertised on 0 -> 1, withdrawn on 1 -> 0).
        self.local_interest: dict[str, int] = {}
        #: Number of SUB frames sent; the one that advertised each local filter; per peer the
        #: last one it acknowledged (KNOWN); SUBACKs waiting, as a heap of (seq needed, n, wait).
        self._seq = 0
        self._advertised: dict[str, int] = {}
        self._known: dict[int, int] = {}
        #: Per peer the number of the last PUB frame it must store before the publisher's ack;
        #: how many peers have not acknowledged theirs; the acks waiting, in order.
        self._need: dict[int, int] = {}
        self._behind = 0
        self._acks: deque[_AckWait] = deque()
        #: Whether this worker has a durable store (so have the others: the same options).
        self._durable = False
        self._waits: list[tuple[int, int, _Wait]] = []
        self._next_wait = 0
        #: Round-robin position per shared group (name, filter), over the workers serving it.
        self.turn: dict[tuple[str, str], int] = {}
        self.claims: dict[int, _Claim] = {}
        self._next_claim = 0
        #: A Lamport clock for claims; per client id the keys of this worker's unfinished
        #: claims, and the claims of other workers held back until those finish.
        self._clock = 0
        self._claiming: dict[str, list[tuple[int, int]]] = {}
        self._deferred: dict[str, list[tuple[tuple[int, int], int, int, bool]]] = {}
        #: Per client id, the claims of this worker waiting for a session's hand-over.
        self._handing: dict[str, int] = {}
        #: On a client id's home worker: the claims of it, the first one holding its lock and
        #: sent to every worker, the others waiting: (worker, claim id, clean start, time).
        self._locks: dict[str, deque[tuple[int, int, bool, int]]] = {}
        #: Persistent sessions released to (worker, claim id), kept in the database until
        #: that worker has recorded them (STORED).
        self._moving: dict[tuple[int, int], _Moved] = {}
        #: Workers that died and are being restarted: their interest stays, the messages
        #: for them are held (sent when they are back), claims wait for their answer.
        self._down: set[int] = set()
        self._held: dict[int, list[bytes]] = {}
        self._held_bytes: dict[int, int] = {}
        #: Per peer, the PUB frames it must store before the publisher's ack and has not yet
        #: confirmed (KNOWN): if it dies, they are held for it with the others.
        self._unconfirmed: dict[int, deque[tuple[int, bytes]]] = {}
        #: A restarted worker's interest from before it died, until it has advertised its
        #: restored sessions' (HOLDS): what it did not advertise again goes then.
        self._stale: dict[int, dict[str, None]] = {}
        self._stopping = False
        #: Sessions moving away: stand-ins by (new worker, its claim id), and by client id.
        self._stand_ins: dict[tuple[int, int], _StandIn] = {}
        self._stand_in_of: dict[str, tuple[int, int]] = {}
        #: Messages routed here are numbered; while a session moves to or from here
        #: (``_windows`` > 0), each routed message's (worker, number) by object id.
        self._pubno = 0
        self._windows = 0
        self._ids: dict[int, tuple[int, int]] = {}
        self._keep: list[Message] = []
        self.marks: set[int] = set()
        self._drained: Callable[[], None] | None = None
        #: Frames that came before :meth:`bind` (a restarted worker's peers talk at once).
        self._early: list[tuple[int, Any]] = []
        #: A restarted worker: the peers whose state (SYNCED) it still waits for.
        self._restarted = False
        self._syncing: set[int] = set()
        self._holding: set[int] = set()
        self._synced = asyncio.Event()
        #: On worker 0: each live peer's latest numbers (STATS).
        self._stats: dict[int, dict[str, Any]] = {}
        #: The admin API's questions waiting for answers: id -> (answers, peers, future).
        self._asks: dict[int, tuple[dict[int, Any], set[int], asyncio.Future[None]]] = {}
        self._next_ask = 0
        #: This worker's reload (Server.reload): the admin API's POST /api/reload asks for it.
        self.reload: Callable[[], bool] | None = None
        #: The wills of this worker's connected clients, by client id: (message data, username,
        #: session expiry), each also kept by the next worker (WILL), which publishes them if
        #: this one dies (:meth:`connection_will`); the wills it keeps so, per worker; and the
        #: wills of a dead worker's persistent sessions, due after their delay unless their
        #: client comes back first.
        self._wills: dict[str, tuple[Any, str | None, int]] = {}
        self._kept: dict[int, dict[str, tuple[Any, str | None, int]]] = {}
        self._due: dict[str, Any] = {}

    def awaiting(self) -> bool:
        """Whether something here waits for another worker's answer: a CONNECT's claim, a
        SUBACK's or an ack's KNOWN, the admin API's question. The batch window does not rest
        then (midge.transport.pacer), so the answer is read as soon as it comes."""
        return bool(self.claims or self._waits or self._acks or self._asks)

    def bind(self, broker: Broker) -> None:
        self.broker = broker
        self._durable = broker.durable_store is not None
        # The subscriptions of the sessions restored from the database: the other workers
        # route to them from now on, as to subscriptions made here (before HOLDS: a peer
        # forgets, at HOLDS, the interest this worker had before it died and did not
        # advertise again).
        for session in broker.sessions.values():
            for topic_filter in session.subscriptions:
                self.interest_added(topic_filter)
        if self._restarted and self.peers:
            # Which of the sessions restored here did the others take while it was down?
            self._holding = set(self.peers)
            self._synced.clear()
            self._broadcast((HOLDS, list(broker.sessions)))
        early, self._early = self._early, []
        for wid, frame in early:
            self.on_frame(wid, frame)

    def add_peer(self, wid: int, link: FrameProtocol) -> None:
        old = self.peers.get(wid)
        if old is not None:  # a worker restarted before its old link's end was read
            self.peer_lost(wid, old)
        self.peers[wid] = link
        self._known[wid] = self._seq
        if wid not in self._down:
            self.remote_filters[wid] = {}
            return
        # Back after it died: its interest from before stays until it has advertised its
        # restored sessions' (HOLDS); what was held for it goes first; the claims that
        # wait for its answer are sent to it.
        self._down.discard(wid)
        stale = self._stale.setdefault(wid, {})
        stale.update(self.remote_filters.get(wid, {}))
        self.remote_filters[wid] = {}
        held = self._held.pop(wid, [])
        self._held_bytes.pop(wid, None)
        if held:
            log.info("%d messages held for worker %d while it was down: sent", len(held), wid)
            for frame in held:
                link.write(frame)
        for cid, claim in self.claims.items():
            if wid in claim.waiting and wid not in claim.replied:
                link.send((CLAIM, cid, claim.client_id, claim.clean_start, claim.key[0], self.wid))

    def welcome(self, wid: int, sync: bool) -> None:
        """``wid`` is a worker restarted after it died: tell it this worker's interest (and,
        from one live worker, ``sync``, the retained set), then SYNCED."""
        assert self.broker is not None
        link = self.peers.get(wid)
        if link is None:
            return
        for topic_filter in self.local_interest:
            self._seq += 1
            link.send((SUB, topic_filter, self._seq))
        if sync:
            link.send((RETAINED, [message_to_data(m) for m in self.broker.retained.all()]))
        if wid == self.keeper():
            for client_id, entry in self._wills.items():
                link.send((WILL, client_id, *entry))
        link.send((SYNCED,))

    # -- wills of connections a dead worker held

    def keeper(self) -> int:
        """The worker that keeps this one's connections' wills: the next one."""
        return (self.wid + 1) % self.workers if self.workers > 1 else self.wid

    def connection_will(
        self, client_id: str, will: Message, username: str | None, expiry: int
    ) -> None:
        """A client connected here with ``will``: the next worker keeps it too, and publishes
        it if this worker dies with the connection open (:meth:`_publish_kept`), as this worker
        would have when the connection ended."""
        keeper = self.keeper()
        if keeper == self.wid:
            return
        entry = (message_to_data(will), username, expiry)
        self._wills[client_id] = entry
        link = self.peers.get(keeper)
        if link is not None:
            link.send((WILL, client_id, *entry))

    def connection_ended(self, client_id: str) -> None:
        if self._wills.pop(client_id, None) is None:
            return
        link = self.peers.get(self.keeper())
        if link is not None:
            link.send((UNWILL, client_id))

    def _publish_kept(self, wid: int) -> None:
        """Worker ``wid`` died: the wills of its connections are due. A session that ends with
        its connection (expiry 0), or any session without persistence (its worker comes back
        without it), ended with the worker: its will is published now. A persistent session
        comes back with the restarted worker: its will is published after its Will Delay
        (at most the session's expiry), unless its client connects again first (a claim for
        its client id reaches every worker, this one too: :meth:`_cancel_due`)."""
        kept = self._kept.pop(wid, None)
        broker = self.broker
        if not kept or broker is None:
            return
        for client_id, (data, username, expiry) in kept.items():
            message = message_from_data(data)
            delay = will_delay(message, expiry) if self._durable else 0
            if not delay:
                broker.publish_will(message, username)
                continue
            session = broker.sessions.get(client_id)
            if client_id in self._claiming or (session is not None and session.connection):
                continue  # its client is back already (here): not due
            self._cancel_due(client_id)
            self._due[client_id] = broker.scheduler.call_later(
                delay, self._will_due, client_id, message, username
            )
        log.warning(
            "worker %d died: the will%s of its %d connection%s due",
            wid,
            "" if len(kept) == 1 else "s",
            len(kept),
            " is" if len(kept) == 1 else "s are",
        )

    def _will_due(self, client_id: str, message: Message, username: str | None) -> None:
        if self._due.pop(client_id, None) is not None and self.broker is not None:
            self.broker.publish_will(message, username)

    def _cancel_due(self, client_id: str) -> None:
        handle = self._due.pop(client_id, None)
        if handle is not None:
            handle.cancel()

    async def ask(self, op: str, arg: Any) -> list[Any]:
        """Worker 0's admin API: every other live worker's answer to ``op`` (those that answer
        within KNOWN_TIMEOUT)."""
        if not self.peers:
            return []
        self._next_ask += 1
        rid = self._next_ask
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        answers: dict[int, Any] = {}
        self._asks[rid] = (answers, set(self.peers), done)
        self._broadcast((ASK, rid, op, arg))
        try:
            await asyncio.wait_for(done, KNOWN_TIMEOUT)
        except TimeoutError:
            log.warning("workers did not answer the admin API in time")
        finally:
            self._asks.pop(rid, None)
        return list(answers.values())

    def _asked(self, ask: tuple[dict[int, Any], set[int], asyncio.Future[None]], wid: int) -> None:
        ask[1].discard(wid)
        if not ask[1] and not ask[2].done():
            ask[2].set_result(None)

    def _on_ask(self, wid: int, rid: int, op: str, arg: Any) -> None:
        from midge.observe.http import answer

        result: Any  # not narrowed to the first branch's type (mypyc checks it at run time)
        try:
            if op == "reload":
                # POST /api/reload on worker 0: every worker reloads, as on SIGHUP.
                result = self.reload() if self.reload is not None else False
            else:
                result = answer(self.broker, op, arg)
        except Exception:
            log.exception("admin API operation %s failed", op)
            result = None
        link = self.peers.get(wid)
        if link is not None:
            link.send((ANSWER, rid, result))

    def peer_snapshots(self) -> list[dict[str, Any]]:
        """On worker 0: the other live workers' latest numbers (midge.cluster.totals)."""
        return list(self._stats.values())

    def send_stats(self, memory: Callable[[], tuple[int, int]], pacer: Pacer | None = None) -> None:
        """Send worker 0 this worker's numbers (every INTERVAL, from _worker_main), its batch
        window's among them (``pacer``)."""
        from midge.cluster.totals import snapshot

        link = self.peers.get(0)
        if link is not None and self.broker is not None:
            numbers = snapshot(self.broker, memory)
            if pacer is not None:
                numbers["pacer"] = (self.wid, pacer.window, pacer.rests, pacer.slept)
            link.send((STATS, numbers))

    def expect_sync(self) -> None:
        """This worker was restarted: wait (:meth:`wait_synced`) for every peer's state."""
        self._restarted = True
        self._syncing = set(self.peers)
        if not self._syncing:
            self._synced.set()

    async def wait_synced(self) -> None:
        """Before a restarted worker serves: every live peer has sent its interest, and one the
        retained set, and said which of the sessions restored here it holds (or is gone, or
        KNOWN_TIMEOUT passed)."""
        if self._syncing or self._holding:
            try:
                await asyncio.wait_for(self._synced.wait(), KNOWN_TIMEOUT)
            except TimeoutError:
                log.warning("workers %s did not send their state in time", sorted(self._syncing))

    def _sync_done(self, wid: int, held: bool = False) -> None:
        waiting = self._holding if held else self._syncing
        if wid in waiting:
            waiting.discard(wid)
            if not self._syncing and not self._holding:
                self._synced.set()

    def _on_held(self, wid: int, client_ids: list[str]) -> None:
        """Sessions restored here that ``wid`` holds: their clients came back while this worker
        was down, so those are newer; the copies restored here go (their delayed wills too,
        as a reconnect cancels them)."""
        assert self.broker is not None
        for client_id in client_ids:
            if self.broker.delete_session(client_id):
                log.info("session %s restored here is held by worker %d: dropped", client_id, wid)
        self._sync_done(wid, held=True)

    def _on_retained(self, data: Any) -> None:
        """A live worker's retained set replaces this (restarted) worker's, which its database
        gave and which may be stale (changed while it was down)."""
        broker = self.broker
        assert broker is not None
        copy = {}
        for d in data:
            m = message_from_data(d)
            copy[m.topic] = m
        for m in list(broker.retained.all()):
            if m.topic not in copy:
                broker.delete_retained(m.topic)
        for m in copy.values():
            broker.retained.set(m)
            if not m.topic.startswith("$SYS"):
                broker.store.retained_changed(m)

    # -- publishing

    def publish(self, message: Message) -> bool:
        """Route locally and forward one copy to each worker that has a matching subscriber,
        or that serves a shared group picked for this message, or (retained) to all."""
        broker = self.broker
        assert broker is not None
        topic = message.topic
        targets, interested, local_groups = peer_targets(
            broker.tree, self.me, self.remote, self.turn, topic
        )
        self._pubno += 1
        if self._windows:
            self._record(message, self.wid, self._pubno)
        if message.retain:
            # Every worker keeps the whole retained set, clears included (MQTT-3.3.1-5..-7).
            for wid in self.peers:
                targets.setdefault(str(wid), [])
        if targets:
            seq = 0
            if message.retain or (message.qos and self._durable):
                # Stored there before the publisher's ack (a retained message, or any QoS 1/2
                # one with persistence): numbered like SUB frames, answered with KNOWN once
                # stored (after its commit), and awaited by after_stored.
                self._seq += 1
                seq = self._seq
            data = message_to_data(message)
            plain: bytes | None = None
            for w, groups in targets.items():
                wid = int(w)
                link = self.peers.get(wid)
                if link is None:
                    if wid in self._down:
                        self._hold(wid, encode_frame((PUB, data, groups or None, 0, self._pubno)))
                    continue
                if groups:
                    frame = encode_frame((PUB, data, groups, seq, self._pubno))
                else:
                    if plain is None:
                        plain = encode_frame((PUB, data, None, seq, self._pubno))
                    frame = plain
                link.write(frame)
                if seq:
                    self._awaits(wid, seq)
                    # Kept until stored there (KNOWN): held for it again if it dies first.
                    self._unconfirmed.setdefault(wid, deque()).append((seq, frame))
        return broker.route(message, local_groups) or interested

    def _hold(self, wid: int, frame: bytes) -> None:
        """A message for worker ``wid``, which is down: sent to it once it is back. Only with
        persistence (without, the restarted worker has no session to give it to)."""
        if not self._durable:
            return
        held = self._held.setdefault(wid, [])
        size = self._held_bytes.get(wid, 0)
        if 0 <= size < HELD_BYTES and len(held) < HELD_LIMIT:
            held.append(frame)
            self._held_bytes[wid] = size + len(frame)
        elif size >= 0:
            self._held_bytes[wid] = -1  # full: logged once
            log.warning(
                "worker %d is down and %d messages (%d bytes) are held for it: dropping more",
                wid,
                len(held),
                size,
            )

    def _on_pub(self, wid: int, data: Any, groups: Any, number: int) -> None:
        assert self.broker is not None
        message = message_from_data(data)
        if self._windows:
            self._record(message, wid, number)
        self.broker.publish_from_peer(message, {(g[0], g[1]) for g in groups} if groups else None)

    # -- interest

    def interest_added(self, topic_filter: str) -> None:
        count = self.local_interest.get(topic_filter, 0)
        self.local_interest[topic_filter] = count + 1
        if not count and self.peers:
            self._seq += 1
            self._advertised[topic_filter] = self._seq
            self._broadcast((SUB, topic_filter, self._seq))

    def interest_removed(self, topic_filter: str) -> None:
        count = self.local_interest.get(topic_filter, 0)
        if count <= 1:
            if self.local_interest.pop(topic_filter, None) is not None:
                self._advertised.pop(topic_filter, None)
                self._broadcast((UNSUB, topic_filter))
        else:
            self.local_interest[topic_filter] = count - 1

    def when_known(self, filters: list[str], done: Callable[[], None]) -> bool:
        """True if every live peer already knows this worker's interest in ``filters`` (each
        has a local subscription): then ``done`` is not called. Otherwise False, and ``done`` is
        called once every live peer has acknowledged the SUB frames that advertised them (or is
        gone, or after KNOWN_TIMEOUT): from then on a message published on any worker reaches
        them, which is what a SUBACK promises."""
        if not self.peers:
            return True
        advertised = self._advertised
        need = 0
        for topic_filter in filters:
            seq = advertised.get(topic_filter, 0)
            if seq > need:
                need = seq
        if need <= min(self._known.values()):
            return True
        wait = _Wait(done)
        wait.handle = asyncio.get_running_loop().call_later(KNOWN_TIMEOUT, wait.timeout)
        self._next_wait += 1
        heapq.heappush(self._waits, (need, self._next_wait, wait))
        return False

    def _awaits(self, wid: int, seq: int) -> None:
        """PUB frame ``seq`` to ``wid`` must be stored there before the publisher's ack."""
        if self._need.get(wid, 0) <= self._known.get(wid, 0):
            self._behind += 1
        self._need[wid] = seq

    def acks_wait(self) -> bool:
        """Whether some live peer has not yet stored a message it must store before an ack."""
        return self._behind > 0

    def after_stored(self, done: Callable[[], None]) -> None:
        """Call ``done`` once every live peer has stored (answered KNOWN for) every message
        published here so far that it had to store (retained ones; with persistence, QoS 1/2
        ones), or is gone, or after KNOWN_TIMEOUT. Calls are answered in order."""
        if not self._behind:
            done()
            return
        known = self._known
        targets = [(w, n) for w, n in self._need.items() if n > known.get(w, n)]
        wait = _AckWait(targets, done)
        wait.handle = asyncio.get_running_loop().call_later(KNOWN_TIMEOUT, self._acks_late, wait)
        self._acks.append(wait)

    def _check_acks(self) -> None:
        acks = self._acks
        known = self._known
        while acks:
            wait = acks[0]
            for w, n in wait.targets:
                k = known.get(w)
                if k is not None and k < n:
                    return
            acks.popleft()
            wait.handle.cancel()
            wait.done()

    def _acks_late(self, late: _AckWait) -> None:
        log.warning("workers did not store a message in time: acknowledged without them")
        acks = self._acks
        while acks:
            wait = acks.popleft()
            wait.handle.cancel()
            wait.done()
            if wait is late:
                break
        self._check_acks()

    def _reply_known(self, wid: int, seq: int) -> None:
        """Answer frame ``seq`` of ``wid``: once what it changed is durable here (in order)."""
        assert self.broker is not None
        store = self.broker.durable_store
        if store is None:
            self._send_known(wid, seq)
        else:
            store.commit(lambda: self._send_known(wid, seq))

    def _send_known(self, wid: int, seq: int) -> None:
        link = self.peers.get(wid)
        if link is not None:
            link.send((KNOWN, seq))

    def _check_known(self) -> None:
        if self._acks:
            self._check_acks()
        waits = self._waits
        if not waits:
            return
        known = min(self._known.values()) if self._known else self._seq
        while waits and waits[0][0] <= known:
            heapq.heappop(waits)[2].fire()

    def _broadcast(self, obj: Any) -> None:
        if not self.peers:
            return
        data = encode_frame(obj)
        for link in self.peers.values():
            link.write(data)

    # -- client ids

    def home(self, client_id: str) -> int:
        """The worker that orders the claims of ``client_id`` (its lock, LOCK/UNLOCK)."""
        n = self.workers
        return zlib.crc32(client_id.encode()) % n if n > 1 else self.wid

    def claim(self, client_id: str, clean_start: bool, done: Callable[[], None]) -> None:
        """A CONNECT for ``client_id`` here (after authentication): ``done`` is called once
        every other worker has released the client id (or after CLAIM_TIMEOUT).

        The claims of one client id go one at a time: each takes the client id's lock on its
        home worker (:meth:`home`), which sends it to every worker once the claim before it
        has finished (its client attached, its session's hand-over complete). So a session
        moves once per claim, from where the previous claim left it, however many workers
        claim it at once (docs/workers.md). If the home worker is down, the claim goes
        without the lock, ordered against the others by its (Lamport time, worker) key."""
        self._cancel_due(client_id)  # its client is back (see _publish_kept)
        if not self.peers and not self._down:
            done()
            return
        self._next_claim += 1
        cid = self._next_claim
        self._clock += 1
        key = (self._clock, self.wid)
        handle = asyncio.get_running_loop().call_later(CLAIM_TIMEOUT, self._claim_timeout, cid)
        # A worker that is down is waited for too (it is being restarted with the sessions
        # it held, and answers once back), up to CLAIM_TIMEOUT.
        claim = _Claim(cid, client_id, clean_start, key, set(self.peers) | self._down, done, handle)
        self.claims[cid] = claim
        home = self.home(client_id)
        if home == self.wid:
            claim.gated = True
            self._lock(self.wid, cid, client_id, clean_start, key[0])
        elif home in self.peers:
            claim.gated = True
            self.peers[home].send((LOCK, cid, client_id, clean_start, key[0]))
        else:
            self._ungated(cid, claim)

    def _ungated(self, cid: int, claim: _Claim) -> None:
        """Send a claim to every worker that has not answered it, without the lock (its home
        is down): ordered by its key against the claims of this client id it meets."""
        claim.gated = False
        self._claiming.setdefault(claim.client_id, []).append(claim.key)
        frame = encode_frame(
            (CLAIM, cid, claim.client_id, claim.clean_start, claim.key[0], self.wid)
        )
        for wid in claim.waiting:
            link = self.peers.get(wid)
            if link is not None:
                link.write(frame)

    def _lock(self, wid: int, cid: int, client_id: str, clean_start: bool, at: int) -> None:
        """On the home worker of ``client_id``: the claim ``cid`` of worker ``wid`` takes the
        lock, or waits behind the claims that hold it or wait for it."""
        if at > self._clock:
            self._clock = at
        queue = self._locks.get(client_id)
        if queue is None:
            queue = self._locks[client_id] = deque()
        queue.append((wid, cid, clean_start, at))
        if len(queue) == 1:
            self._grant(client_id, queue[0])

    def _grant(self, client_id: str, entry: tuple[int, int, bool, int]) -> None:
        """The claim ``entry`` holds the lock: send it to every worker (its own sends it)."""
        origin, cid, clean_start, at = entry
        frame = encode_frame((CLAIM, cid, client_id, clean_start, at, origin))
        for wid, link in self.peers.items():
            if wid != origin:
                link.write(frame)
        if origin != self.wid:
            self._on_claim(origin, cid, client_id, clean_start, at)

    def _unlock(self, wid: int, cid: int, client_id: str) -> None:
        """On the home worker: the claim ``cid`` of ``wid`` finished (or its worker is gone):
        the next one takes the lock."""
        queue = self._locks.get(client_id)
        if queue is None:
            return
        for k, entry in enumerate(queue):
            if entry[0] == wid and entry[1] == cid:
                del queue[k]
                if not queue:
                    del self._locks[client_id]
                elif k == 0:
                    self._grant(client_id, queue[0])
                return

    def _unlock_all(self, wid: int) -> None:
        """Worker ``wid`` is gone: its claims leave the locks this worker keeps."""
        for client_id, queue in list(self._locks.items()):
            for entry in [e for e in queue if e[0] == wid]:
                self._unlock(wid, entry[1], client_id)

    def _claim_timeout(self, cid: int) -> None:
        claim = self.claims.pop(cid, None)
        if claim is not None:
            log.warning(
                "workers %s did not answer a client id claim in time", sorted(claim.waiting)
            )
            self._finish(claim)

    def _handover_done(self, claim: _Claim) -> None:
        """The hand-over of the session this claim moved here is complete (or given up): the
        claims of other workers held back meanwhile go on."""
        if not claim.windowed:
            return
        claim.windowed = False
        self._window_closed()
        client_id = claim.client_id
        left = self._handing.get(client_id, 0) - 1
        if left > 0:
            self._handing[client_id] = left
            return
        self._handing.pop(client_id, None)
        deferred = self._deferred.pop(client_id, None)
        for key, wid, cid, clean_start in sorted(deferred or ()):
            self._on_claim(wid, cid, client_id, clean_start, key[0])

    def _finish(self, claim: _Claim) -> None:
        """The claim is complete: the connection attaches (CONNACK) or, gone, leaves the
        sessions moved here to expire."""
        # The client attaches first: the claims held back go on only after (one of them may
        # take it over at once).
        claim.done()
        for wid in claim.kept:
            # Given up waiting for the hand-over (or for a worker): the session moved here
            # is recorded here, without what the stand-in held.
            self._stored(wid, claim.cid)
        claim.kept.clear()
        self._handover_done(claim)
        broker = self.broker
        assert broker is not None
        for session in claim.sessions:
            broker.adopted(session)
        client_id = claim.client_id
        keys = self._claiming.get(client_id)
        if keys is not None and claim.key in keys:
            keys.remove(claim.key)
            if not keys:
                del self._claiming[client_id]
        deferred = self._deferred.pop(client_id, None)
        if deferred:
            for key, wid, cid, clean_start in sorted(deferred):
                self._on_claim(wid, cid, client_id, clean_start, key[0])
        if claim.gated:
            claim.gated = False
            home = self.home(client_id)
            if home == self.wid:
                self._unlock(self.wid, claim.cid, client_id)
            else:
                link = self.peers.get(home)
                if link is not None:
                    link.send((UNLOCK, client_id, claim.cid))

    def _on_claim(self, wid: int, cid: int, client_id: str, clean_start: bool, at: int) -> None:
        """Another worker claims ``client_id``. Claims of one client id are ordered by their
        (Lamport time, worker id) key: while a claim of this worker with a smaller key is
        unfinished, the other one waits until it is (its client attached here), and then takes
        it over. So two CONNECTs at the same moment on two workers end with one owner, the
        later claim's, and a proper takeover of the other (docs/workers.md)."""
        assert self.broker is not None
        if at > self._clock:
            self._clock = at
        # Its client is back: a will due since its worker died is not published (MQTT-3.1.3-9).
        self._cancel_due(client_id)
        key = (at, wid)
        mine = self._claiming.get(client_id)
        if mine is not None and (min(mine) < key or client_id in self._handing):
            # Held back: behind an earlier claim of this worker, or while a session moved here
            # for this client id waits for its hand-over (REST), which would miss it otherwise.
            self._deferred.setdefault(client_id, []).append((key, wid, cid, clean_start))
            return
        link = self.peers.get(wid)
        if link is None:
            return  # the claiming worker is gone: the session stays here
        if client_id in self._stand_in_of:
            # Moving away already (a stand-in here): the worker it moves to answers for it.
            link.send((RELEASED, cid, None, False))
            return
        held = self.broker.sessions.get(client_id)
        # With persistence the session stays in this worker's database until the claiming
        # worker has recorded it in its own (STORED), so it is always in one of them.
        keep = held is not None and held.store is not None and not clean_start
        session, stub = self.broker.release(client_id, clean_start, stand_in=True, keep=keep)
        data = state_to_data(session.snapshot()) if session is not None else None
        if keep and session is not None:
            self._moving[(wid, cid)] = _Moved(session)
        if stub is not None:
            key = (wid, cid)
            handle = asyncio.get_running_loop().call_later(
                KNOWN_TIMEOUT, self._stand_in_timeout, key
            )
            self._stand_ins[key] = _StandIn(stub, handle)
            self._stand_in_of[client_id] = key
            self._windows += 1
        link.send((RELEASED, cid, data, stub is not None, keep and session is not None))

    def _on_released(
        self, wid: int, cid: int, data: Any, handover: bool, kept: bool = False
    ) -> None:
        assert self.broker is not None
        claim = self.claims.get(cid)
        if claim is None:
            if data is not None and kept:
                # The worker that released it keeps it: not taken here.
                link = self.peers.get(wid)
                if link is not None:
                    link.send((STORED, cid, False))
            elif data is not None:
                log.warning("session %s released after its claim timed out: dropped", data[0])
            return
        if wid in claim.replied:
            return  # sent twice (its home died after forwarding it): answered already
        claim.replied.add(wid)
        if data is not None:
            session = self.broker.new_session(state_from_data(data))
            self._moved_back(session.client_id)
            self.broker.adopt(session)
            claim.sessions.append(session)
            claim.filters.extend(session.subscriptions)
            if kept:
                if handover:
                    claim.kept.append(wid)  # recorded here once what its stand-in has is
                else:
                    self._stored(wid, cid)
        if handover:
            # The old worker queues for the session until every worker routes to it here:
            # wait for that queue (REST); from now on, note which message is which.
            claim.windowed = True
            self._windows += 1
            self._handing[claim.client_id] = self._handing.get(claim.client_id, 0) + 1
            self._broadcast((FENCE, cid, wid))
            return
        self._answered(cid, claim, wid)

    # -- a session moving: the old worker's stand-in and the hand-over

    def _record(self, message: Message, wid: int, number: int) -> None:
        """While a session moves to or from here: which message (publishing worker, number)
        this object is, so the stand-in's queue and the new session's are told apart."""
        self._ids[id(message)] = (wid, number)
        self._keep.append(message)  # ids stay unique while recorded

    def _window_closed(self) -> None:
        self._windows -= 1
        if not self._windows:
            self._ids.clear()
            self._keep.clear()

    def _on_fence(self, wid: int, cid: int, old: int) -> None:
        """The worker ``wid`` adopted a session that left ``old`` and advertised its
        subscriptions before this frame: from now on this worker routes to it there. Tell
        ``old`` so (on the ordered link after every message sent it before)."""
        if old == self.wid:
            self._fenced((wid, cid), wid)
        else:
            link = self.peers.get(old)
            if link is not None:
                link.send((FENCED, wid, cid))

    def _fenced(self, key: tuple[int, int], wid: int) -> None:
        stand_in = self._stand_ins.get(key)
        if stand_in is not None:
            stand_in.fenced.add(wid)
            self._check_stand_in(key, stand_in)

    def _check_stand_in(self, key: tuple[int, int], stand_in: _StandIn) -> None:
        if stand_in.fenced >= set(self.peers) or key[0] not in self.peers:
            self._hand_over(key)

    def _stand_in_timeout(self, key: tuple[int, int]) -> None:
        if key in self._stand_ins:
            log.warning("workers did not confirm a session hand-over in time")
            self._hand_over(key)

    def _hand_over(self, key: tuple[int, int], send: bool = True) -> None:
        """Every worker routes to the moved session on its new worker: send what the stand-in
        queued meanwhile there, and end it."""
        assert self.broker is not None
        stand_in = self._stand_ins.pop(key)
        stand_in.handle.cancel()
        stub = stand_in.stub
        if self._stand_in_of.get(stub.client_id) == key:
            del self._stand_in_of[stub.client_id]
        link = self.peers.get(key[0]) if send else None
        if link is not None:
            ids = self._ids
            rest = [
                (ids.get(id(d[0])), (message_to_data(d[0]), d[1], d[2], d[3]))
                for d in stub.queue or ()
            ]
            link.send((REST, key[1], rest))
        moved = self._moving.get(key)
        if moved is not None:
            moved.extra = list(stub.queue or ())  # recorded here with the session
        self.broker.end_stand_in(stub)
        self._window_closed()

    def _on_rest(self, wid: int, cid: int, rest: Any) -> None:
        """What the old worker's stand-in queued for the moved session: added before what the
        session got here since it arrived, except the messages it got here too."""
        assert self.broker is not None
        claim = self.claims.get(cid)
        if claim is None:
            if rest:
                log.warning("%d messages handed over after a claim timed out: dropped", len(rest))
            return
        session = claim.sessions[-1] if claim.sessions else None
        if rest and session is not None and self.broker.sessions.get(session.client_id) is session:
            ids = self._ids
            queue = list(session.queue or ())
            first = len(queue)
            for k, d in enumerate(queue):
                if id(d[0]) in ids:
                    first = k
                    break
            seen = {ids[id(d[0])] for d in queue[first:] if id(d[0]) in ids}
            added = [
                (message_from_data(d[0]), d[1], d[2], tuple(d[3]))
                for number, d in rest
                if number is None or tuple(number) not in seen
            ]
            if added:
                session.queue = deque(queue[:first] + added + queue[first:])
                size = sum(len(d[0].payload) for d in added)
                session.queued_bytes += size
                self.broker.stats.held_bytes += size
                if session.store is not None:
                    for d in added:
                        session.store.delivery_added(session.client_id, d, 0)
        if wid in claim.kept:
            claim.kept.remove(wid)
            self._stored(wid, cid)
        self._answered(cid, claim, wid)
        self._handover_done(claim)

    def _stored(self, wid: int, cid: int) -> None:
        """Tell ``wid``, which keeps the session it released for claim ``cid`` in its
        database, once the session is recorded in this worker's (its adoption and the
        hand-over committed): it deletes its copy then. The frame is flushed at once, before
        any ack that a later commit releases can reach a client."""
        store = self.broker.durable_store if self.broker is not None else None

        def send() -> None:
            link = self.peers.get(wid)
            if link is not None:
                link.send((STORED, cid))
                link.flush()

        if store is None:
            send()
        else:
            store.commit(send)

    def _on_stored(self, wid: int, cid: int, taken: bool = True) -> None:
        """The session released to ``wid`` for its claim ``cid`` is recorded there: it
        leaves this worker's database. Not ``taken`` (the claim had timed out there): it
        stays here."""
        if (wid, cid) not in self._moving:
            return
        if not taken:
            self._take_back((wid, cid))
            return
        moved = self._moving.pop((wid, cid))
        store = self.broker.durable_store if self.broker is not None else None
        if store is not None:
            store.session_deleted(moved.session.client_id, moved.messages())

    def _moved_back(self, client_id: str) -> None:
        """``client_id``'s session comes back here while the copy it left here waits for
        STORED: that copy leaves the database now, before the session is recorded again."""
        store = self.broker.durable_store if self.broker is not None else None
        for key in [k for k, m in self._moving.items() if m.session.client_id == client_id]:
            moved = self._moving.pop(key)
            if store is not None:
                store.session_deleted(client_id, moved.messages())

    def _take_back(self, key: tuple[int, int]) -> None:
        """The worker a persistent session was released to died before recording it: the
        session, with what its stand-in queued, is this worker's again (it never left its
        database), detached."""
        broker = self.broker
        assert broker is not None
        moved = self._moving.pop(key)
        if key in self._stand_ins:
            self._hand_over(key, send=False)
        session = moved.session
        client_id = session.client_id
        store = broker.durable_store
        if client_id in broker.sessions or store is None:
            return
        if moved.extra:
            queue = session.queue if session.queue is not None else deque()
            queue.extend(moved.extra)
            session.queue = queue
            session.queued_bytes += sum(len(d[0].payload) for d in moved.extra)
        session.detached()
        session.store = store  # recorded here already: adopt does not record it again
        broker.adopt(session)
        store.session_detached(client_id, session.expiry_interval, broker.scheduler.wall())
        broker.adopted(session)
        log.warning(
            "session %s moved to worker %d is not recorded there: kept here", client_id, key[0]
        )

    def _answered(self, cid: int, claim: _Claim, wid: int) -> None:
        claim.waiting.discard(wid)
        if not claim.waiting:
            del self.claims[cid]
            claim.handle.cancel()
            # The moved session's subscriptions must be known everywhere before CONNACK, as
            # after a SUBACK (the client may rely on them as soon as it is connected).
            if not claim.filters or self.when_known(claim.filters, lambda: self._finish(claim)):
                self._finish(claim)

    # -- the mesh

    def on_frame(self, wid: int, frame: Any) -> None:
        if self.broker is None:
            self._early.append((wid, frame))
            return
        kind = frame[0]
        if kind == PUB:
            self._on_pub(wid, frame[1], frame[2], frame[4])
            if frame[3]:  # to be stored here before the publisher's ack
                self._reply_known(wid, frame[3])
        elif kind == SUB:
            self.remote.subscribe(str(wid), frame[1], _INTEREST)
            self.remote_filters[wid][frame[1]] = None
            stale = self._stale.get(wid)
            if stale:
                stale.pop(frame[1], None)
            self._reply_known(wid, frame[2])
        elif kind == KNOWN:
            old = self._known.get(wid)
            seq = frame[1]
            unconfirmed = self._unconfirmed.get(wid)
            while unconfirmed and unconfirmed[0][0] <= seq:
                unconfirmed.popleft()
            if old is not None and seq > old:
                self._known[wid] = seq
                if old < self._need.get(wid, 0) <= seq:
                    self._behind -= 1
                self._check_known()
        elif kind == UNSUB:
            self.remote.unsubscribe(str(wid), frame[1])
            self.remote_filters[wid].pop(frame[1], None)
        elif kind == CLAIM:
            # From the claiming worker, or from the client id's home on its behalf.
            self._on_claim(frame[5], frame[1], frame[2], frame[3], frame[4])
        elif kind == LOCK:
            self._lock(wid, frame[1], frame[2], frame[3], frame[4])
        elif kind == UNLOCK:
            self._unlock(wid, frame[2], frame[1])
        elif kind == RELEASED:
            self._on_released(wid, frame[1], frame[2], frame[3], frame[4])
        elif kind == STORED:
            self._on_stored(wid, frame[1], frame[2] if len(frame) > 2 else True)
        elif kind == FENCE:
            self._on_fence(wid, frame[1], frame[2])
        elif kind == FENCED:
            self._fenced((frame[1], frame[2]), wid)
        elif kind == REST:
            self._on_rest(wid, frame[1], frame[2])
        elif kind == MARK:
            self.marks.add(wid)
            self._check_drained()
        elif kind == RETAINED:
            self._on_retained(frame[1])
        elif kind == SYNCED:
            self._sync_done(wid)
        elif kind == HOLDS:
            # A restarted worker has advertised its restored sessions' interest: what it had
            # before it died and did not advertise again goes.
            for topic_filter in self._stale.pop(wid, {}):
                if topic_filter not in self.remote_filters[wid]:
                    self.remote.unsubscribe(str(wid), topic_filter)
            link = self.peers.get(wid)
            if link is not None:
                sessions = self.broker.sessions
                link.send((HELD, [c for c in frame[1] if c in sessions]))
        elif kind == HELD:
            self._on_held(wid, frame[1])
        elif kind == STATS:
            self._stats[wid] = frame[1]
        elif kind == WILL:
            self._kept.setdefault(wid, {})[frame[1]] = (frame[2], frame[3], frame[4])
        elif kind == UNWILL:
            kept = self._kept.get(wid)
            if kept is not None:
                kept.pop(frame[1], None)
        elif kind == ASK:
            self._on_ask(wid, frame[1], frame[2], frame[3])
        elif kind == ANSWER:
            ask = self._asks.get(frame[1])
            if ask is not None:
                ask[0][wid] = frame[2]
                self._asked(ask, wid)

    def peer_lost(self, wid: int, link: FrameProtocol | None = None) -> None:
        """A worker's link closed (it stopped or died): forget its interest, stop waiting for it.
        ``link``: that link (a restarted worker's new link stays)."""
        current = self.peers.get(wid)
        if current is None or (link is not None and current is not link):
            return
        del self.peers[wid]
        # Unless this worker is stopping, the parent restarts a worker that died: until it is
        # back, its interest stays, the messages for it are held, and claims wait for it.
        down = not self._stopping
        unconfirmed = self._unconfirmed.pop(wid, None)
        if down:
            self._down.add(wid)
            # What it had not confirmed storing is sent again when it is back (it may have
            # it already: a duplicate, as QoS 1 allows; the publisher's ack goes now).
            if unconfirmed:
                again = [f for _, f in unconfirmed]
                self._held[wid] = again + self._held.get(wid, [])
                self._held_bytes[wid] = self._held_bytes.get(wid, 0) + sum(map(len, again))
        self._stats.pop(wid, None)
        if down:
            self._publish_kept(wid)
        else:
            self._kept.pop(wid, None)  # stopping: its wills were published (drain)
        for ask in list(self._asks.values()):
            self._asked(ask, wid)
        self._sync_done(wid)
        self._sync_done(wid, held=True)
        if not down:
            for topic_filter in self.remote_filters.pop(wid, {}):
                self.remote.unsubscribe(str(wid), topic_filter)
            for topic_filter in self._stale.pop(wid, {}):
                self.remote.unsubscribe(str(wid), topic_filter)
        if self._need.pop(wid, 0) > self._known.get(wid, 0):
            self._behind -= 1
        self._known.pop(wid, None)
        self._unlock_all(wid)
        for cid, claim in list(self.claims.items()):
            if claim.gated and self.home(claim.client_id) == wid:
                # Its home is gone, and the lock with it: the claim goes without (sent again
                # to those that have not answered; one that answered twice is heard once).
                self._ungated(cid, claim)
            # A claim waits for a worker that is down and has not answered (sent again when
            # it is back); not for the hand-over of a session it released (REST).
            if wid in claim.waiting and (not down or wid in claim.replied):
                self._answered(cid, claim, wid)
        for key, stand_in in list(self._stand_ins.items()):
            self._check_stand_in(key, stand_in)
        for key in [k for k in self._moving if k[0] == wid]:
            # Released to it, not yet recorded there: the session is still here.
            self._take_back(key)
        self._check_known()
        self._check_drained()

    def drain(self, drained: Callable[[], None]) -> None:
        """Shutdown, first step: publish every will here, then tell every peer so; ``drained``
        is called once every peer said so too (their wills have all been delivered here)."""
        assert self.broker is not None
        self._stopping = True
        self._down.clear()
        self._held.clear()
        self._held_bytes.clear()
        self.broker.publish_all_wills()
        self._drained = drained
        self._broadcast((MARK,))
        self._check_drained()

    def _check_drained(self) -> None:
        if self._drained is not None and self.marks >= set(self.peers):
            drained, self._drained = self._drained, None
            drained()

    def close(self) -> None:
        for link in list(self.peers.values()):
            link.close()


# -- processes ------------------------------------------------------------------------------------


def _reserve_ports(config: Config) -> tuple[Config, list[socket.socket]]:
    """Give each port 0 listener a concrete free port, held (bound, SO_REUSEPORT, not listening)
    until every worker listens on it."""
    held: list[socket.socket] = []
    listeners = []
    for listener in config.listeners:
        if listener.port == 0:
            family = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}.get(
                listener.socket_domain or "", socket.AF_UNSPEC
            )
            infos = socket.getaddrinfo(
                listener.host or None, 0, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
            )
            fam, kind, proto, _, addr = infos[0]
            sock = socket.socket(fam, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(addr)
            held.append(sock)
            listener = dataclasses.replace(listener, port=sock.getsockname()[1])
        listeners.append(listener)
    return dataclasses.replace(config, listeners=listeners), held


def worker_db_name(name: str, wid: int) -> str:
    """The database of worker ``wid`` (``persistence_file`` ``name``): worker 0 keeps the one a
    single process uses (so going from one process to several keeps its state), the others
    have their own next to it: ``midge.db``, ``midge-w1.db``, ``midge-w2.db``..."""
    if not wid:
        return name
    stem, ext = os.path.splitext(name)
    return f"{stem}-w{wid}{ext}"


def run(config: Config, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None) -> int:
    """Run ``config.workers`` worker processes and supervise them; the exit status."""
    n = config.workers
    try:
        config, held = _reserve_ports(config)
    except OSError as exc:
        print(f"midge: error: cannot open listener: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if config.data_dir and config.durability != "none":
        name = config.persistence_file or DEFAULT_DB_NAME
        k = n
        while os.path.exists(path := os.path.join(config.data_dir, worker_db_name(name, k))):
            log.warning(
                "%s belongs to worker %d, which is not started with %d workers: "
                "the sessions it holds are not loaded (start %d workers or more to get them)",
                path,
                k,
                n,
                k + 1,
            )
            k += 1
    limits: SharedLimits | None = None
    if (
        config.global_max_connections >= 0
        or config.max_connection_rate
        or any(lst.max_connections >= 0 for lst in config.listeners)
    ):
        # Connection limits hold for the whole broker, not per worker (midge.cluster.limits).
        from midge.cluster.limits import SharedLimits

        limits = SharedLimits(
            config.global_max_connections, config.max_connection_rate, len(config.listeners), n
        )
    control = [socket.socketpair() for _ in range(n)]
    # Per worker a channel for the parent to pass it the mesh link of a restarted worker.
    passes = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(n)]
    mesh: dict[tuple[int, int], socket.socket] = {}
    for i in range(n):
        for j in range(i + 1, n):
            mesh[(i, j)], mesh[(j, i)] = socket.socketpair()
    spawner = _Spawner(config, loop_factory, limits)
    spawner.parent_fds = {p.fileno() for p, _ in control} | {p.fileno() for p, _ in passes}
    pids: dict[int, int] = {}
    for wid in range(n):
        close = [s for k, (_, s) in enumerate(control) if k != wid]
        close += [s for k, (_, s) in enumerate(passes) if k != wid]
        close += [sock for (a, _), sock in mesh.items() if a != wid]
        close += held
        peers = {b: sock for (a, b), sock in mesh.items() if a == wid}
        pid = spawner.spawn(wid, control[wid][1], passes[wid][1], peers, close, False)
        pids[pid] = wid
    for sock in mesh.values():
        sock.close()
    for _, worker_end in control:
        worker_end.close()
    for _, worker_end in passes:
        worker_end.close()
    try:
        return asyncio.run(
            _supervise(
                config,
                pids,
                [p for p, _ in control],
                [p for p, _ in passes],
                held,
                limits,
                spawner,
            )
        )
    finally:
        for sock in held:
            sock.close()


class _Spawner:
    """Forks a worker: at start, and again when one died (``restarted``)."""

    def __init__(
        self,
        config: Config,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
        limits: SharedLimits | None,
    ) -> None:
        self.config = config
        self.loop_factory = loop_factory
        self.limits = limits
        #: The parent's ends of the control and pass channels: a child closes them.
        self.parent_fds: set[int] = set()

    def spawn(
        self,
        wid: int,
        control: socket.socket,
        passes: socket.socket,
        peers: dict[int, socket.socket],
        close: list[socket.socket],
        restarted: bool,
    ) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            return pid
        code = 1  # pragma: no cover - runs in the worker (covered by tests/test_workers.py)
        try:
            if restarted:
                # Forked from the supervisor's running loop: none of it is this process's.
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                asyncio.events._set_running_loop(None)
            for fd in self.parent_fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            for sock in close:
                sock.close()
            if self.limits is not None:
                self.limits.for_worker(wid)
            code = _worker(
                self.config,
                wid,
                control,
                peers,
                self.loop_factory,
                self.limits,
                passes,
                restarted,
            )
        except BaseException:
            log.exception("worker %d failed", wid)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


def _worker(
    config: Config,
    wid: int,
    control: socket.socket,
    peers: dict[int, socket.socket],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
    limits: SharedLimits | None = None,
    passes: socket.socket | None = None,
    restarted: bool = False,
) -> int:
    # Ctrl-C in a terminal reaches every process of the group: the parent orchestrates the stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_worker_main(config, wid, control, peers, limits, passes, restarted))


def _link(router: WorkerRouter, peer: int, pacer: Pacer | None = None) -> FrameProtocol:
    """The protocol of a mesh link to ``peer``; frames of a link replaced since (the peer
    was restarted) are ignored."""

    def on_frame(frame: Any) -> None:
        if link.early is not None:
            link.early.append(frame)  # read before add_peer: kept for _joined
        elif router.peers.get(peer) is link:
            router.on_frame(peer, frame)

    link = FrameProtocol(on_frame, lambda: router.peer_lost(peer, link), pacer)
    link.early = []
    return link


def _joined(router: WorkerRouter, peer: int, link: FrameProtocol) -> None:
    """``link`` was added to ``router``: handle the frames it read before."""
    early, link.early = link.early, None
    for frame in early or ():
        router.on_frame(peer, frame)


async def _worker_main(
    config: Config,
    wid: int,
    control_sock: socket.socket,
    peer_socks: dict[int, socket.socket],
    limits: SharedLimits | None = None,
    passes: socket.socket | None = None,
    restarted: bool = False,
) -> int:
    from midge.server import Server
    from midge.store.base import StoreError

    loop = asyncio.get_running_loop()
    if config.data_dir and config.durability != "none":
        # A database per worker: each keeps the sessions it holds and the whole retained set.
        config = dataclasses.replace(
            config,
            persistence_file=worker_db_name(config.persistence_file or DEFAULT_DB_NAME, wid),
        )
    router = WorkerRouter(wid, config.workers)
    # The batch window (``batch_window``): shared by the worker's clients and its mesh links.
    pacer = Pacer(loop, config.batch_window)
    pacer.hold = router.awaiting
    for peer, sock in peer_socks.items():
        _, link = await loop.create_unix_connection(
            lambda peer=peer: _link(router, peer, pacer),  # type: ignore[misc]
            sock=sock,
        )
        router.add_peer(peer, link)
        _joined(router, peer, link)
    if restarted:
        router.expect_sync()

    async def new_peer(peer: int, sock: socket.socket, sync: bool) -> None:
        _, link = await loop.create_unix_connection(lambda: _link(router, peer, pacer), sock=sock)
        router.add_peer(peer, link)
        _joined(router, peer, link)
        router.welcome(peer, sync)

    def on_pass() -> None:
        """The parent passes the mesh link of a worker restarted after it died."""
        assert passes is not None
        try:
            msg, fds, _, _ = socket.recv_fds(passes, 4096, 4)
        except BlockingIOError:
            return
        except OSError:
            msg, fds = b"", []
        if not msg:
            loop.remove_reader(passes.fileno())
            return
        peer, sync = marshal.loads(msg)
        for fd in fds:
            task = loop.create_task(new_peer(peer, socket.socket(fileno=fd), sync))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    tasks: set[asyncio.Task[None]] = set()
    if passes is not None:
        passes.setblocking(False)
        loop.add_reader(passes.fileno(), on_pass)
    stop = asyncio.Event()
    control: FrameProtocol | None = None

    def on_control(frame: Any) -> None:
        if frame[0] == "wills":
            router.drain(lambda: control.send(("drained",)) if control is not None else None)
        elif frame[0] == "stop":
            stop.set()

    _, control = await loop.create_unix_connection(
        lambda: FrameProtocol(on_control, stop.set), sock=control_sock
    )
    assert control is not None
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # $SYS: worker 0 alone publishes, its own numbers (docs/workers.md); its retained values
    # reach every worker like any retained message.
    server = Server(
        config,
        router=router,
        publish_sys=wid == 0,
        limits=limits,
        before_serving=router.wait_synced if restarted else None,
        pacer=pacer,
    )
    loop.add_signal_handler(signal.SIGHUP, server.reload)
    router.reload = server.reload
    try:
        await server.start()
    except (OSError, ConfigError, StoreError) as exc:
        if isinstance(exc, (ConfigError, StoreError)):
            control.send(("error", str(exc)))
        else:
            control.send(("error", f"cannot open listener: {exc.strerror or exc}"))
        control.close()
        await asyncio.sleep(0)
        return 1
    addresses = zip(server.addresses, server.protocols, strict=True)
    control.send(("ready", [[str(a[0]), int(a[1]), kind] for a, kind in addresses]))
    ticks: list[Any] = []
    if wid:
        # $SYS and /metrics (worker 0) show the whole broker: this worker's numbers go there.
        from midge.cluster.totals import INTERVAL
        from midge.server import process_memory

        def stats_tick() -> None:
            ticks[:] = [loop.call_later(INTERVAL, stats_tick)]
            try:
                router.send_stats(process_memory, pacer)
            except Exception:  # a bug of ours must not stop the ticks
                log.exception("cannot send this worker's numbers to worker 0")

        ticks.append(loop.call_soon(stats_tick))
    gc_tuner = GcTuner(loop)
    gc_tuner.start()
    await stop.wait()
    for tick in ticks:
        tick.cancel()
    gc_tuner.stop()
    await server.stop()
    router.close()
    control.close()
    await asyncio.sleep(0)
    return 0


async def _supervise(
    config: Config,
    pids: dict[int, int],
    controls: list[socket.socket],
    passes: list[socket.socket],
    held: list[socket.socket],
    limits: SharedLimits | None,
    spawner: _Spawner,
) -> int:
    loop = asyncio.get_running_loop()
    n = len(controls)
    alive = dict(pids)  # pid -> worker id
    ready: dict[int, list[Any]] = {}
    drained: set[int] = set()
    errors: list[str] = []
    changed = asyncio.Event()
    stopping = False
    stop_requested = asyncio.Event()
    links: dict[int, FrameProtocol] = {}
    running = False  # every worker started: a worker that dies from now on is restarted
    tasks: set[asyncio.Task[None]] = set()
    started_at = dict.fromkeys(range(n), loop.time())

    def on_control(wid: int, frame: Any) -> None:
        if frame[0] == "ready":
            ready[wid] = frame[1]
        elif frame[0] == "drained":
            drained.add(wid)
        elif frame[0] == "error":
            errors.append(frame[1])
        changed.set()

    for wid, sock in enumerate(controls):
        _, links[wid] = await loop.create_unix_connection(
            lambda wid=wid: FrameProtocol(  # type: ignore[misc]
                lambda frame: on_control(wid, frame), changed.set
            ),
            sock=sock,
        )

    def reap() -> None:
        while alive:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            wid = alive.pop(pid, None)
            if limits is not None and wid is not None:
                limits.worker_gone(wid)
            code = os.waitstatus_to_exitcode(status)
            if not stopping or code:
                log.error("worker %s (pid %d) exited with status %d", wid, pid, code)
            if wid is not None and running and not stopping and alive:
                # Restarted at once, or after a second if it had not lived 5 s (a crash loop).
                delay = 0.0 if loop.time() - started_at[wid] > 5 else 1.0
                loop.call_later(delay, restart, wid)
        changed.set()

    async def attach(wid: int, sock: socket.socket) -> None:
        _, links[wid] = await loop.create_unix_connection(
            lambda: FrameProtocol(lambda frame: on_control(wid, frame), changed.set), sock=sock
        )

    def restart(wid: int) -> None:
        """Start worker ``wid`` again: a mesh link to each live worker (passed to it on its
        pass channel; the first one also sends it the retained set), then as at start."""
        if stopping or not alive or wid in alive.values():
            return
        live = sorted(set(alive.values()))
        control_parent, control_child = socket.socketpair()
        pass_parent, pass_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        peers: dict[int, socket.socket] = {}
        for k, other in enumerate(live):
            mine, theirs = socket.socketpair()
            peers[other] = mine
            try:
                socket.send_fds(passes[other], [marshal.dumps((wid, k == 0))], [theirs.fileno()])
            except OSError as exc:
                log.error("cannot pass worker %d's link to worker %d: %s", wid, other, exc)
            theirs.close()
        spawner.parent_fds = {s.fileno() for s in (*controls, *passes) if s.fileno() >= 0}
        pid = spawner.spawn(
            wid, control_child, pass_child, peers, [control_parent, pass_parent], True
        )
        control_child.close()
        pass_child.close()
        for sock in peers.values():
            sock.close()
        alive[pid] = wid
        started_at[wid] = loop.time()
        passes[wid].close()
        passes[wid] = pass_parent
        controls[wid] = control_parent
        ready.pop(wid, None)
        task = loop.create_task(attach(wid, control_parent))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        log.warning("worker %d restarted (pid %d)", wid, pid)

    def stop_signal() -> None:
        stop_requested.set()
        changed.set()

    loop.add_signal_handler(signal.SIGCHLD, reap)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_signal)

    def hangup() -> None:
        # Each worker re-reads the password and ACL files itself.
        for pid in list(alive):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    loop.add_signal_handler(signal.SIGHUP, hangup)
    reap()

    async def wait_until(cond: Callable[[], bool], timeout: float) -> bool:
        deadline = loop.time() + timeout
        while not cond():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining if remaining < 1e9 else None)
        return True

    started = await wait_until(
        lambda: len(ready) == n or bool(errors) or len(alive) < n or stop_requested.is_set(),
        STARTUP_TIMEOUT,
    )
    if not started or len(ready) < n:
        # A worker that failed said why on its control link before exiting: read it to its end
        # (its exit may be noticed first).
        gone = set(range(n)) - set(alive.values())
        await wait_until(lambda: bool(errors) or all(links[w].closed for w in gone), 1.0)
        if errors:
            print(f"midge: error: {errors[0]}", file=sys.stderr)
        elif not stop_requested.is_set():
            print("midge: error: a worker did not start", file=sys.stderr)
        stopping = True
        await _end_workers(alive, links, wait_until)
        return 0 if stop_requested.is_set() and not errors else 1
    for sock in held:
        sock.close()
    if config.pid_file:
        try:
            with open(config.pid_file, "w", encoding="ascii") as f:
                f.write(f"{os.getpid()}\n")
        except OSError as exc:
            print(f"midge: error: cannot write pid_file {config.pid_file}: {exc}", file=sys.stderr)
            stopping = True
            await _end_workers(alive, links, wait_until)
            return 1
    for host, port, kind in ready[0]:
        shown = f"[{host}]" if ":" in host else host
        print(f"midge: listening on {shown}:{port} ({kind})", flush=True)
    log.info("midge %s running with %d workers", __version__, n)
    running = True
    await wait_until(lambda: stop_requested.is_set() or not alive, float("inf"))
    stopping = True
    if not alive:
        log.error("every worker has exited")
        return 1
    log.info("shutting down")
    live = set(alive.values())
    for wid in live:
        links[wid].send(("wills",))
    if not await wait_until(lambda: drained >= set(alive.values()), DRAIN_TIMEOUT):
        log.warning("workers did not publish their wills in time")
    await _end_workers(alive, links, wait_until)
    if config.pid_file:
        with contextlib.suppress(OSError):
            os.unlink(config.pid_file)
    return 0


async def _end_workers(
    alive: dict[int, int],
    links: dict[int, FrameProtocol],
    wait_until: Callable[[Callable[[], bool], float], Any],
) -> None:
    """Ask every live worker to stop (disconnect its clients, exit); kill those that do not."""
    for wid in set(alive.values()):
        links[wid].send(("stop",))
    if not await wait_until(lambda: not alive, EXIT_TIMEOUT):
        for pid in list(alive):
            log.error("worker %d (pid %d) did not stop: killed", alive[pid], pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: not alive, 2.0)
    for link in links.values():
        link.close()
