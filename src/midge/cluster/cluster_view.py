"""The whole cluster's figures on every node: ``$SYS/cluster/...``, ``midge_cluster_...`` on
``/metrics``, ``GET /api/cluster`` and ``GET /api/clients?scope=cluster`` (docs/cluster.md).

Every :data:`INTERVAL` seconds each node writes a snapshot of what it counts to Redis,
``{midge:ID}:stats`` with a TTL of :data:`~midge.cluster.redis_router.NODE_TTL` (so a dead
node's figures go with its heartbeat), and reads the other live nodes' snapshots. The snapshot
is the one ``--workers`` sends worker 0 (:func:`midge.cluster.totals.snapshot`: the counters of
:class:`~midge.broker.session.Stats` and the gauges), and the sums are made the same way
(:func:`~midge.cluster.totals.add_stats`, :func:`~midge.cluster.totals.sum_gauges`). So any
node shows the cluster's totals and each node's figures, the others' at most :data:`INTERVAL`
seconds (plus a Redis round trip) old. ``$SYS/broker/...`` stays this node's own, as
Mosquitto's.

:data:`FIGURES` is the one table the three views read: a figure's ``$SYS`` topic (under
``$SYS/cluster/`` for the totals and ``$SYS/cluster/node/ID/`` for each node), its metric name
(``midge_cluster_NAME`` for the total, ``midge_cluster_node_NAME{node="ID"}`` per node) and its
key in the API's JSON.

Client lists are not copied to Redis: a node asks the others over their channels
(``midge:to:ID``, frames :data:`ASK` and :data:`ANSWER`), and each answers with the admin API's
own :func:`midge.observe.http.answer` (the one ``--workers`` uses between workers).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import marshal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from midge import __version__
from midge.broker.model import Message
from midge.broker.session import Stats
from midge.broker.systree import COUNTERS, SYS_QOS
from midge.cluster.redis_router import NODE_TTL, channel
from midge.cluster.totals import INTERVAL, add_stats, snapshot, sum_gauges

if TYPE_CHECKING:
    from midge.cluster.redis_router import RedisRouter

log = logging.getLogger("midge.cluster")

#: Frame kinds on ``midge:to:ID`` (beside the router's own, which are below 100): a question
#: to another node's admin side, and its answer.
ASK = 100
ANSWER = 101
#: How long an API request waits for the other nodes' answers.
ASK_TIMEOUT = 2.0
#: The snapshot's TTL in Redis, and the age past which a snapshot read earlier is not shown.
STALE = NODE_TTL

SYS_PREFIX = "$SYS/cluster/"


def stats_key(node: str) -> str:
    """Node ``node``'s latest snapshot (in its own slot of a Redis Cluster)."""
    return f"{{midge:{node}}}:stats"


Getter = Callable[[Stats, dict[str, Any]], int]


class Figure(NamedTuple):
    """One figure of a node (and of the cluster, summed)."""

    #: Its key in ``GET /api/cluster``.
    key: str
    #: Its topic under ``$SYS/cluster/`` (and ``$SYS/cluster/node/ID/``); None: not in $SYS.
    topic: str | None
    #: ``midge_cluster_NAME`` (the total) and ``midge_cluster_node_NAME`` (per node).
    metric: str
    help: str
    counter: bool
    get: Getter


def _counter(topic: str) -> Getter:
    """The getter of one of ``$SYS/broker``'s counters (midge.broker.systree.COUNTERS)."""
    for name, get in COUNTERS:
        if name == topic:
            return lambda s, g: get(s)
    raise KeyError(topic)


FIGURES: tuple[Figure, ...] = (
    Figure(
        "clients_connected",
        "clients/connected",
        "clients_connected",
        "Clients connected now.",
        False,
        lambda s, g: int(g["connected"]),
    ),
    Figure(
        "sessions",
        "clients/total",
        "sessions",
        "Sessions held (connected and not).",
        False,
        lambda s, g: int(g["sessions"]),
    ),
    Figure(
        "clients_disconnected",
        "clients/disconnected",
        "clients_disconnected",
        "Sessions held with no client connected.",
        False,
        lambda s, g: int(g["sessions"] - g["connected"]),
    ),
    Figure(
        "sessions_expired",
        "clients/expired",
        "sessions_expired_total",
        "Sessions ended by their expiry.",
        True,
        lambda s, g: s.clients_expired,
    ),
    Figure(
        "connects",
        None,
        "connects_total",
        "CONNECT packets handled.",
        True,
        lambda s, g: s.connects,
    ),
    Figure(
        "subscriptions",
        "subscriptions/count",
        "subscriptions",
        "Subscriptions (not shared).",
        False,
        lambda s, g: int(g["subscriptions"]),
    ),
    Figure(
        "shared_subscriptions",
        "shared_subscriptions/count",
        "shared_subscriptions",
        "Shared subscriptions.",
        False,
        lambda s, g: int(g["shared_subscriptions"]),
    ),
    Figure(
        "queued",
        None,
        "queued_messages",
        "Messages queued for sessions.",
        False,
        lambda s, g: int(g["queued"]),
    ),
    Figure(
        "inflight",
        None,
        "inflight_messages",
        "Outgoing QoS 1/2 messages not yet acknowledged.",
        False,
        lambda s, g: int(g["inflight"]),
    ),
    Figure(
        "messages_routed",
        None,
        "messages_routed_total",
        "Messages routed: PUBLISH accepted from clients, wills, $SYS updates.",
        True,
        lambda s, g: s.messages_received,
    ),
    Figure(
        "publish_received",
        "publish/messages/received",
        "publish_received_total",
        "PUBLISH packets read from clients.",
        True,
        _counter("publish/messages/received"),
    ),
    Figure(
        "publish_sent",
        "publish/messages/sent",
        "publish_sent_total",
        "PUBLISH packets sent to clients.",
        True,
        _counter("publish/messages/sent"),
    ),
    Figure(
        "publish_dropped",
        "publish/messages/dropped",
        "publish_dropped_total",
        "PUBLISH messages dropped ($SYS/broker/publish/messages/dropped).",
        True,
        _counter("publish/messages/dropped"),
    ),
    Figure(
        "packets_received",
        "messages/received",
        "packets_received_total",
        "MQTT packets read.",
        True,
        _counter("messages/received"),
    ),
    Figure(
        "packets_sent",
        "messages/sent",
        "packets_sent_total",
        "MQTT packets sent.",
        True,
        _counter("messages/sent"),
    ),
    Figure(
        "bytes_received",
        "bytes/received",
        "received_bytes_total",
        "Bytes of MQTT packets read.",
        True,
        _counter("bytes/received"),
    ),
    Figure(
        "bytes_sent",
        "bytes/sent",
        "sent_bytes_total",
        "Bytes of MQTT packets sent.",
        True,
        _counter("bytes/sent"),
    ),
    Figure(
        "publish_bytes_received",
        "publish/bytes/received",
        "publish_received_bytes_total",
        "Payload bytes of the PUBLISH packets read.",
        True,
        _counter("publish/bytes/received"),
    ),
    Figure(
        "publish_bytes_sent",
        "publish/bytes/sent",
        "publish_sent_bytes_total",
        "Payload bytes of the PUBLISH packets sent.",
        True,
        _counter("publish/bytes/sent"),
    ),
    Figure(
        "memory",
        "heap/current",
        "resident_memory_bytes",
        "The node processes' resident memory.",
        False,
        lambda s, g: int(g["memory"]),
    ),
)


def figures(snapshots: list[dict[str, Any]]) -> dict[str, int]:
    """Every figure of ``snapshots`` summed (one snapshot: that node's)."""
    stats = add_stats(Stats(), snapshots)
    gauges = sum_gauges(snapshots)
    return {f.key: f.get(stats, gauges) for f in FIGURES}


def _topic_part(node: str) -> str:
    """A node id as one topic level (``+``, ``#`` and ``/`` cannot be in one)."""
    return node.replace("/", "_").replace("+", "_").replace("#", "_") or "_"


class ClusterView:
    """This node's share of the cluster-wide view, and its view of the others (see module).

    ``answer(broker, op, arg)`` answers the other nodes' questions: the admin API's
    :func:`midge.observe.http.answer`, given by the server (so that this module imports nothing
    of the admin side, nor the admin side anything of it: it reaches the view through
    ``Server.cluster_view``)."""

    #: The figures (:data:`FIGURES`), for /metrics.
    table = FIGURES

    def __init__(
        self,
        router: RedisRouter,
        memory: Callable[[], tuple[int, int]] | None,
        sys_interval: Callable[[], float],
        answer: Callable[[Any, str, Any], Any],
    ) -> None:
        self.router = router
        self.memory = memory
        self.answer = answer
        #: ``sys_interval`` now (a SIGHUP may change it; 0: no $SYS/cluster).
        self.sys_interval = sys_interval
        self.started = time.time()
        #: The other nodes' latest snapshots, with the loop time each was read.
        self.snapshots: dict[str, tuple[float, dict[str, Any]]] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._next_ask = 0
        self._asks: dict[int, tuple[dict[str, Any], set[str], asyncio.Future[None]]] = {}
        #: $SYS/cluster: the value last published per topic, and when the last update went.
        self._sent: dict[str, str] = {}
        self._sys_at = 0.0

    # -- life --------------------------------------------------------------------------------

    def start(self) -> None:
        self.router.handlers[ASK] = self._on_ask
        self.router.handlers[ANSWER] = self._on_answer
        self._tick()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        writer = self.router.writer
        if writer is not None and self.router.healthy:
            writer.send("DEL", stats_key(self.router.me))
        for _, _, done in self._asks.values():
            if not done.done():
                done.set_result(None)

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(INTERVAL, self._tick)
        try:
            self.exchange()
            self.publish_sys()
        except Exception:
            log.exception("cluster: internal error in the cluster view")

    def exchange(self) -> None:
        """Write this node's snapshot to Redis; ask for the other live nodes'."""
        router = self.router
        writer = router.writer
        for node in [n for n in self.snapshots if n not in router.nodes]:
            del self.snapshots[node]
        if writer is None or not router.healthy:
            return  # nothing queued for later: the next tick writes a newer one
        data = marshal.dumps(self.own())
        writer.send("SET", stats_key(router.me), data, "PX", int(STALE * 1000))
        for node in sorted(router.nodes):
            writer.send("GET", stats_key(node), then=functools.partial(self._read, node))

    def _read(self, node: str, raw: Any) -> None:
        if raw is None or node not in self.router.nodes:
            self.snapshots.pop(node, None)
            return
        self.snapshots[node] = (asyncio.get_running_loop().time(), marshal.loads(raw))

    def own(self) -> dict[str, Any]:
        """This node's snapshot: what ``--workers`` sends (midge.cluster.totals) and its id,
        version and start time."""
        broker = self.router.broker
        assert broker is not None
        mine = snapshot(broker, self.memory)
        mine.update(node=self.router.me, version=__version__, started=self.started)
        return mine

    def nodes(self) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """The latest snapshot of each node shown (this one's taken now), by node id; and the
        live nodes without a recent one (just joined, or their Redis writes late)."""
        now = asyncio.get_running_loop().time()
        shown = {self.router.me: self.own()}
        missing: list[str] = []
        for node in sorted(self.router.nodes):
            got = self.snapshots.get(node)
            if got is None or now - got[0] > STALE:
                missing.append(node)
            else:
                shown[node] = got[1]
        return shown, missing

    def summary(self) -> tuple[dict[str, int], dict[str, dict[str, int]], list[str]]:
        """The figures summed over the nodes shown, each node's (sorted by id), and the live
        nodes left out (:meth:`nodes`)."""
        shown, missing = self.nodes()
        per_node = {node: figures([snap]) for node, snap in sorted(shown.items())}
        return figures(list(shown.values())), per_node, missing

    def view(self) -> dict[str, Any]:
        """``GET /api/cluster``'s figures: the totals over the nodes shown, and each node's."""
        shown, missing = self.nodes()
        wall = time.time()
        by_node: dict[str, Any] = {}
        for node, snap in sorted(shown.items()):
            figs: dict[str, Any] = {"uptime": int(wall - snap.get("started", wall))}
            figs["version"] = snap.get("version")
            figs.update(figures([snap]))
            by_node[node] = figs
        return {
            "totals": figures(list(shown.values())),
            "by_node": by_node,
            "missing": missing,
        }

    # -- $SYS/cluster ------------------------------------------------------------------------

    def publish_sys(self) -> None:
        """Every ``sys_interval``: ``$SYS/cluster/nodes`` (how many nodes are shown), the
        totals under ``$SYS/cluster/`` and each node's figures under ``$SYS/cluster/node/ID/``,
        retained, each only when it changed (as ``$SYS/broker``); a node that left has its
        topics cleared."""
        interval = self.sys_interval()
        broker = self.router.broker
        if interval <= 0 or broker is None or broker.shutting_down:
            return
        now = asyncio.get_running_loop().time()
        if now - self._sys_at < interval - 0.01:
            return
        self._sys_at = now
        shown, missing = self.nodes()
        values: dict[str, str] = {"nodes": str(len(shown))}
        total = figures(list(shown.values()))
        wall = time.time()
        for figure in FIGURES:
            if figure.topic is not None:
                values[figure.topic] = str(total[figure.key])
        for node, snap in shown.items():
            part = f"node/{_topic_part(node)}/"
            values[part + "uptime"] = f"{int(wall - snap.get('started', wall))} seconds"
            mine = figures([snap])
            for figure in FIGURES:
                if figure.topic is not None:
                    values[part + figure.topic] = str(mine[figure.key])
        # A live node whose snapshot is late keeps its values; one that left has them cleared.
        late = tuple(f"node/{_topic_part(node)}/" for node in missing)
        for topic in [t for t in self._sent if t not in values and not t.startswith(late)]:
            del self._sent[topic]
            broker.publish(Message(SYS_PREFIX + topic, b"", SYS_QOS, True))
        for topic, value in values.items():
            if self._sent.get(topic) != value:
                self._sent[topic] = value
                broker.publish(Message(SYS_PREFIX + topic, value.encode(), SYS_QOS, True))

    # -- questions to the other nodes' admin side --------------------------------------------

    async def ask(self, op: str, arg: Any) -> tuple[dict[str, Any], list[str]]:
        """Ask every other live node ``op`` (:func:`midge.observe.http.answer`); their answers
        by node, and the nodes that did not answer within :data:`ASK_TIMEOUT`."""
        router = self.router
        writer = router.writer
        targets = set(router.nodes)
        if not targets or writer is None or not router.healthy:
            return {}, sorted(targets)
        self._next_ask += 1
        rid = self._next_ask
        answers: dict[str, Any] = {}
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._asks[rid] = (answers, targets, done)
        frame = marshal.dumps((ASK, rid, router.me, op, arg))
        for node in sorted(targets):
            writer.send("PUBLISH", channel(node), frame)
        try:
            await asyncio.wait_for(asyncio.shield(done), ASK_TIMEOUT)
        except TimeoutError:
            pass
        finally:
            self._asks.pop(rid, None)
        return answers, sorted(targets - set(answers))

    def _on_ask(self, frame: Any) -> None:
        _, rid, origin, op, arg = frame
        broker = self.router.broker
        try:
            result = self.answer(broker, op, arg) if broker is not None else None
        except Exception:
            log.exception("cluster: internal error answering %s from %s", op, origin)
            result = None
        writer = self.router.writer
        if writer is not None:
            writer.send(
                "PUBLISH", channel(origin), marshal.dumps((ANSWER, rid, self.router.me, result))
            )

    def _on_answer(self, frame: Any) -> None:
        _, rid, node, result = frame
        ask = self._asks.get(rid)
        if ask is None:
            return  # too late
        answers, targets, done = ask
        answers[node] = result
        if targets <= set(answers) and not done.done():
            done.set_result(None)
